"""Fuzzing the webhook of a real ``results-receiver serve`` process, on SQLite and PostgreSQL.

Hypothesis draws whole HTTP requests: random bytes, arbitrary JSON, and above all the
reference examples (``service/examples``) mutated field by field (deleted, duplicated as a
repeated key, retyped, numbers swapped for strings, booleans, null or extremes such as 1e308,
1e-320, 10**30 and literals no double holds, 100 KB strings, NUL and lone-surrogate escapes,
nesting a hundred thousand levels deep, unknown fields) and byte by byte (truncated, flipped,
invalid UTF-8, a BOM). Each body is sent signed in one of the accepted ways or unsigned /
wrongly signed in one of many ways, with random ``X-Webhook-Signature``, ``webhook-*``,
``Content-Type`` and ``X-Request-ID`` values, with a ``Content-Length`` or chunked.

The contract under fuzzing:

* an authenticated body is answered 200, 400 ``invalid_json``, 413 or 422 ``invalid_payload``;
* an unauthenticated one only 401 ``invalid_signature`` (or 413: the size is checked before the
  signature), and it leaves ``jobs``, ``deliveries``, ``delivery_bodies`` and every other
  table exactly as they were (counted before and after each such request);
* never a 5xx, never a dropped connection; afterwards ``/healthz`` answers 200 and a normal
  signed delivery is stored.

``RECEIVER_RELIABILITY_SCALE=fast`` (the default) runs 200 derandomized examples per database;
``long`` runs 5,000 random ones per database. Each run appends its numbers to
``$RECEIVER_RELIABILITY_RESULTS`` (see ``results.py``) before asserting.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import json
import sqlite3
import string
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.config import database_dialect
from tests.reliability.results import record
from tests.reliability.scale import SCALE
from tests.support.db import ALL_TABLES
from tests.support.keys import TEST_KEY_LINE
from tests.support.server import serve
from tests.support.signing import EXAMPLES, SECRET, encode, example, signature

EXAMPLES_PER_DATABASE = {"fast": 200, "long": 5_000}[SCALE.name]
# Small enough that stacked 100 KB strings cross it (the 413 path, chunked bodies included).
MAX_BODY_BYTES = 256 * 1024

pytestmark = [pytest.mark.reliability, pytest.mark.slow,
              pytest.mark.timeout(SCALE.timeout_seconds)]

WEBHOOK = "/webhooks/analysis"
SIGNED_STATUSES = {200: None, 400: "invalid_json", 413: "payload_too_large",
                   422: "invalid_payload"}
UNAUTHENTICATED_STATUSES = {401: "invalid_signature", 413: "payload_too_large"}
OUTCOMES = {"stored", "duplicate", "updated", "ignored"}

REFERENCE_EXAMPLES = tuple(json.loads((EXAMPLES / path.name).read_text(encoding="utf-8"))
                           for path in sorted(EXAMPLES.glob("*.json")))


# --- JSON text with what json.dumps cannot express ---------------------------------------------

class Raw(str):
    """JSON text emitted verbatim: literals no Python value encodes to (1e999, NaN, -0, a lone
    surrogate escape, nesting deeper than any recursive encoder can go)."""


class Obj(dict[str, Any]):
    """A JSON object whose text may repeat some keys after the normal ones (a duplicated
    field, which a dict alone cannot hold)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.repeated: list[tuple[str, Any]] = []


def objects(value: Any) -> Any:
    """A parsed document with every dict turned into an :class:`Obj`."""
    if isinstance(value, dict):
        return Obj({key: objects(item) for key, item in value.items()})
    if isinstance(value, list):
        return [objects(item) for item in value]
    return value


def emit(value: Any, out: list[str]) -> None:
    if isinstance(value, Raw):
        out.append(str(value))
    elif value is None or isinstance(value, bool | int | float | str):
        # ensure_ascii: NUL becomes \u0000 and a lone surrogate \ud800, as escapes.
        out.append(json.dumps(value))
    elif isinstance(value, dict):
        out.append("{")
        pairs = [*value.items(), *getattr(value, "repeated", [])]
        for index, (key, item) in enumerate(pairs):
            if index:
                out.append(",")
            out.append(json.dumps(key))
            out.append(":")
            emit(item, out)
        out.append("}")
    else:
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            emit(item, out)
        out.append("]")


def to_json(value: Any) -> bytes:
    out: list[str] = []
    emit(value, out)
    return "".join(out).encode("utf-8", "surrogatepass")


# --- values a mutation puts in place of a field ------------------------------------------------

EXTREME_NUMBERS = [1e308, -1e308, 1e-320, 5e-324, -0.0, 10**30, -(10**30), 2**63, -(2**63) - 1,
                   2**64, 10**400, 0, -1, 1.7976931348623157e308]
NUMBER_LITERALS = ["1e999", "-1e999", "1e-400", "1E+308", "-0", "0e0", "NaN", "Infinity",
                   "-Infinity", "01", "1.", ".5", "+1", "0x10", "1_000", "9" * 400,
                   "1e99999999999999999999"]
STRING_ESCAPES = ['"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"x\\udfffy"', '"\\ud800\\u0041"',
                  '"\\ud83d\\ude00"', '"\\uDBFF\\uDFFF"', '"\\u"', '"\\x41"', '"tab\\there"',
                  '"\\/\\b\\f\\n\\r"']
SPECIAL_STRINGS = ["", " ", "\x00", "a\x00b", "\u202e", "\ufeff", "😀", "東京タワー", "\ud800",
                   "null", "true", "1e308", "NaN", "finished", "failed", "video_12345", "'",
                   "\\", "${jndi:x}", "%s%n", "<script>"]


def nested(depth: int, kind: str) -> Raw:
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


# About 100 KB: one character repeated (ASCII, accented, CJK, astral, NUL, a lone surrogate).
long_strings = st.builds(
    lambda char, size: (char * size)[:size],
    st.sampled_from(["x", "é", "東", "😀", "ab\u0000", "\\\"", "\ud800"]),
    st.sampled_from([100_000, 100_001, 60_000]),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=12,
)
# What a mutation puts in place of a field. floats() draws NaN and infinities too: json.dumps
# writes them as NaN / Infinity, which is not JSON.
replacements = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from(EXTREME_NUMBERS),
    st.sampled_from(NUMBER_LITERALS).map(Raw),
    st.sampled_from(STRING_ESCAPES).map(Raw),
    st.sampled_from(SPECIAL_STRINGS),
    long_strings,
    st.builds(nested, st.sampled_from([2, 64, 1_000, 100_000]),
              st.sampled_from(["list", "object"])),
    json_values,
)
plain_numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 5))


# --- mutations of a reference example ---------------------------------------------------------

def locations(document: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in the tree, containers included, Raw leaves excluded."""
    found: list[tuple[Any, Any]] = []
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            keys: Any = list(node)
        elif isinstance(node, list):
            keys = range(len(node))
        else:
            continue
        for key in keys:
            found.append((node, key))
            stack.append(node[key])
    return found


MUTATIONS = st.sampled_from(["delete", "duplicate", "replace", "replace", "replace", "null",
                             "other_number", "unknown_field", "wrap_in_list", "number_as_string"])


def mutate(draw: st.DrawFn, document: Any) -> None:
    spots = locations(document)
    if not spots:
        return
    container, key = draw(st.sampled_from(spots))
    action = draw(MUTATIONS)
    if action == "delete":
        del container[key]
    elif action == "duplicate":
        if isinstance(container, list):
            container.insert(key, copy.deepcopy(container[key]))
        elif isinstance(container, Obj):
            # Only the text repeats the key: the same value again or another one.
            again = container[key] if draw(st.booleans()) else draw(replacements)
            container.repeated.append((key, again))
    elif action == "replace":
        container[key] = draw(replacements)
    elif action == "null":
        container[key] = None
    elif action == "other_number":
        container[key] = draw(plain_numbers)
    elif action == "unknown_field":
        target = container[key] if isinstance(container[key], dict) else container
        if isinstance(target, dict):
            target[draw(st.text(min_size=1, max_size=12))] = draw(replacements)
    elif action == "wrap_in_list":
        container[key] = [container[key]]
    elif isinstance(container[key], int | float) and not isinstance(container[key], bool):
        container[key] = str(container[key])


BYTE_MUTATIONS = st.sampled_from(["none"] * 9 + ["truncate", "flip", "insert", "bom",
                                             "whitespace", "invalid_utf8", "trailing_garbage"])


def byte_mutation(draw: st.DrawFn, body: bytes) -> bytes:
    action = draw(BYTE_MUTATIONS)
    if action == "none" or not body:
        return body
    at = draw(st.integers(0, len(body) - 1))
    if action == "truncate":
        return body[:at]
    if action == "flip":
        return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1:]
    if action == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    if action == "bom":
        return b"\xef\xbb\xbf" + body
    if action == "whitespace":
        return b" \n\t" + body + b"\r\n "
    if action == "invalid_utf8":
        return body[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80",
                                                 b"\xf4\x90\x80\x80", b"\xc0\xaf"])) + body[at:]
    return body + draw(st.sampled_from([b"x", b"{}", b",", b"\x00", b"]"]))


MUTATION_COUNTS = st.sampled_from([0, 0, 1, 1, 1, 2, 3, 4])


@st.composite
def mutated_examples(draw: st.DrawFn) -> bytes:
    document = objects(draw(st.sampled_from(REFERENCE_EXAMPLES)))
    if draw(st.booleans()):
        # A job of its own (else one of the three examples' jobs: duplicates and updates).
        document["job_id"] = f"{document['job_id']}_{draw(st.integers(0, 10**6))}"
    for _ in range(draw(MUTATION_COUNTS)):
        mutate(draw, document)
    if draw(st.integers(0, 19)) == 0:
        # Over the body limit: 413, whether signed or not.
        document["padding"] = "p" * (MAX_BODY_BYTES + draw(st.integers(-200, 50_000)))
    return byte_mutation(draw, to_json(document))


bodies = st.one_of(
    mutated_examples(), mutated_examples(), mutated_examples(), mutated_examples(),
    st.binary(max_size=2_048),
    json_values.map(to_json),
    st.sampled_from([b"", b"null", b"[]", b"{}", b'"x"', b"0", b"NaN", b"[" * 100_000]),
)


# --- requests: a body, how it is signed, the other headers, how it travels --------------------

HEADER_TEXT = string.ascii_letters + string.digits + string.punctuation
header_values = st.one_of(
    st.text(HEADER_TEXT + " ", max_size=80).map(str.strip),
    st.binary(max_size=40).map(
        lambda raw: bytes(b for b in raw if b >= 0x21 and b != 0x7f)),  # obs-text included
    st.sampled_from(["", "sha256=", "v1,", "v1", ",", "0" * 64, "sha256=" + "g" * 64,
                     "=" * 44, "A" * 5000, "v1," + "A" * 43 + "=", "x" * 4097]),
)


@dataclass
class Case:
    body: bytes
    headers: list[tuple[str, str | bytes]]
    authenticated: bool
    how: str
    chunks: list[int] | None  # chunk sizes; None: one body with a Content-Length

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        shown = self.body if len(self.body) <= 300 else self.body[:300] + b"..."
        headers = [(k, v if len(v) <= 120 else v[:120]) for k, v in self.headers]
        return (f"Case(how={self.how!r}, authenticated={self.authenticated}, "
                f"size={len(self.body)}, chunks={self.chunks}, headers={headers!r}, "
                f"body={shown!r})")

    def content(self) -> bytes | Iterator[bytes]:
        if self.chunks is None:
            return self.body
        return iter(self.pieces())

    def pieces(self) -> list[bytes]:
        assert self.chunks is not None
        out, at = [], 0
        for size in self.chunks:
            if at >= len(self.body):
                break
            out.append(self.body[at:at + size])
            at += size
        if at < len(self.body):
            out.append(self.body[at:])
        return out


def digest(body: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def standard_headers(message_id: str, timestamp: int, body: bytes,
                     secret: str = SECRET) -> list[tuple[str, str | bytes]]:
    signed = digest(f"{message_id}.{timestamp}.".encode() + body, secret)
    return [("webhook-id", message_id), ("webhook-timestamp", str(timestamp)),
            ("webhook-signature", "v1," + base64.b64encode(signed).decode())]


junk_candidates = st.lists(st.sampled_from(["0" * 64, "sha256=" + "1" * 64, "zz", "A" * 44,
                                            "not-a-signature"]), max_size=5)
SIGNED_WAYS = st.sampled_from(["hex", "HEX", "sha256=", "SHA256=", "base64", "base64_unpadded",
                               "candidates", "repeated_header", "standard"])
UNAUTHENTICATED_WAYS = st.sampled_from([
    "none", "random_value", "other_secret", "other_body", "first_char_changed",
    "middle_char_changed", "last_char_changed", "truncated", "too_many_candidates",
    "header_too_long", "standard_random", "standard_stale", "standard_other_id",
    "standard_missing_header", "empty"])
STANDARD_NAMES = st.sets(st.sampled_from(["webhook-id", "webhook-timestamp",
                                          "webhook-signature"]))
message_ids = st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=40)


@st.composite
def signed(draw: st.DrawFn, body: bytes) -> tuple[str, list[tuple[str, str | bytes]]]:
    right = digest(body)
    how = draw(SIGNED_WAYS)
    headers: list[tuple[str, str | bytes]]
    if how == "standard":
        skew = draw(st.integers(-200, 200))
        headers = standard_headers(draw(message_ids), int(time.time()) + skew, body)
        return how, headers
    value = {"hex": right.hex(), "HEX": right.hex().upper(), "sha256=": "sha256=" + right.hex(),
             "SHA256=": "SHA256=" + right.hex(), "base64": base64.b64encode(right).decode(),
             "base64_unpadded": base64.b64encode(right).decode().rstrip("="),
             }.get(how, right.hex())
    if how == "candidates":
        junk = draw(junk_candidates)
        position = draw(st.integers(0, len(junk)))
        value = draw(st.sampled_from([", ", ",", " "])).join(
            [*junk[:position], value, *junk[position:]])
    headers = [("X-Webhook-Signature", value)]
    if how == "repeated_header":
        headers.insert(draw(st.integers(0, 1)), ("X-Webhook-Signature", "0" * 64))
    if draw(st.booleans()):
        # Standard Webhooks headers next to X-Webhook-Signature are ignored.
        headers += [(name, draw(header_values)) for name in
                    draw(STANDARD_NAMES)]
    return how, headers


@st.composite
def unauthenticated(draw: st.DrawFn, body: bytes) -> tuple[str, list[tuple[str, str | bytes]]]:
    right = digest(body).hex()
    how = draw(UNAUTHENTICATED_WAYS)
    flip = {"0": "1"}
    headers: list[tuple[str, str | bytes]] = []
    if how == "random_value":
        headers = [("X-Webhook-Signature", draw(header_values))]
    elif how == "other_secret":
        headers = [("X-Webhook-Signature", signature(body, SECRET + "x"))]
    elif how == "other_body":
        headers = [("X-Webhook-Signature", signature(body + b" "))]
    elif how.endswith("_char_changed"):
        at = {"first": 0, "middle": 32, "last": 63}[how.split("_")[0]]
        changed = flip.get(right[at], "0")
        headers = [("X-Webhook-Signature", right[:at] + changed + right[at + 1:])]
    elif how == "truncated":
        headers = [("X-Webhook-Signature", right[:draw(st.integers(0, 63))] or "0")]
    elif how == "too_many_candidates":
        headers = [("X-Webhook-Signature", ",".join(["0" * 64] * 16 + [right]))]
    elif how == "header_too_long":
        headers = [("X-Webhook-Signature", right + " " * 4033 + right)]
    elif how == "standard_random":
        headers = [(name, draw(header_values)) for name in
                   ("webhook-id", "webhook-timestamp", "webhook-signature")]
    elif how == "standard_stale":
        headers = standard_headers(draw(message_ids), int(time.time())
                                   - draw(st.integers(400, 10**9)), body)
    elif how == "standard_other_id":
        good = standard_headers("msg_1", int(time.time()), body)
        headers = [("webhook-id", "msg_2"), *good[1:]]
    elif how == "standard_missing_header":
        good = standard_headers("msg_1", int(time.time()), body)
        del good[draw(st.integers(0, 2))]
        headers = good
    elif how == "empty":
        headers = [("X-Webhook-Signature", "")]
    return how, headers


CONTENT_TYPES = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "application/json; charset=latin-1", None]),
    header_values)
CHUNK_SIZES = st.lists(st.integers(1, 70_000), min_size=1, max_size=6)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    body = draw(bodies)
    authenticated = draw(st.integers(0, 2)) > 0  # two signed for one unauthenticated
    how, headers = draw(signed(body) if authenticated else unauthenticated(body))
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if draw(st.booleans()):
        headers.append(("X-Request-ID", draw(header_values)))
    chunks = None
    if draw(st.integers(0, 3)) == 0:
        chunks = draw(CHUNK_SIZES)
    return Case(body=body, headers=headers, authenticated=authenticated, how=how, chunks=chunks)


# --- what the database holds --------------------------------------------------------------------

# Table names from the models, never from input.
COUNTS = [f"(SELECT count(*) FROM {name})" for name in ALL_TABLES]  # noqa: S608
COUNT_QUERY = "SELECT " + ", ".join(COUNTS)


class TableCounter:
    """Row counts of every table, read straight from the database with one query."""

    def __init__(self, database_url: str) -> None:
        self.dialect = database_dialect(database_url)
        self._sqlite: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pg: asyncpg.Connection | None = None
        if self.dialect == "sqlite":
            self._sqlite = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        else:
            self._loop = asyncio.new_event_loop()
            self._pg = self._loop.run_until_complete(asyncpg.connect(database_url))

    def counts(self) -> dict[str, int]:
        if self._sqlite is not None:
            row = self._sqlite.execute(COUNT_QUERY).fetchone()
        else:
            assert self._loop is not None
            assert self._pg is not None
            row = self._loop.run_until_complete(self._pg.fetchrow(COUNT_QUERY))
        return dict(zip(ALL_TABLES, row, strict=True))

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._loop is not None:
            assert self._pg is not None
            self._loop.run_until_complete(self._pg.close())
            self._loop.close()


# --- the run ----------------------------------------------------------------------------------

@dataclass
class Tally:
    cases: int = 0
    signed: int = 0
    unauthenticated: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    by_how: Counter[str] = field(default_factory=Counter)
    five_hundreds: int = 0
    stored_unauthenticated: int = 0
    transport_errors: int = 0
    unexpected: list[str] = field(default_factory=list)


def send(client: httpx.Client, case: Case, counter: TableCounter, tally: Tally) -> None:
    before = None if case.authenticated else counter.counts()
    tally.cases += 1
    if case.authenticated:
        tally.signed += 1
    else:
        tally.unauthenticated += 1
    try:
        response = client.post(WEBHOOK, content=case.content(), headers=case.headers)
    except httpx.TransportError as exc:
        tally.transport_errors += 1
        tally.statuses[type(exc).__name__] += 1
        tally.unexpected.append(f"{type(exc).__name__}: {case!r}")
        raise AssertionError(
            f"the connection failed ({type(exc).__name__}: {str(exc)[:200]})") from None
    status = response.status_code
    tally.statuses[str(status)] += 1
    tally.by_how[f"{case.how}:{status}"] += 1
    if status >= 500:
        tally.five_hundreds += 1
    allowed = SIGNED_STATUSES if case.authenticated else UNAUTHENTICATED_STATUSES
    problem = None
    if status not in allowed:
        problem = f"status {status} not in {sorted(allowed)}: {response.text[:300]}"
    elif allowed[status] is not None and response.json().get("code") != allowed[status]:
        problem = f"status {status} with code {response.json().get('code')!r}"
    elif status == 200 and response.json().get("outcome") not in OUTCOMES:
        problem = f"200 without a known outcome: {response.text[:300]}"
    if before is not None:
        after = counter.counts()
        if after != before:
            tally.stored_unauthenticated += 1
            changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
            problem = f"an unauthenticated request changed the tables: {changed}"
    if problem is not None:
        tally.unexpected.append(f"{problem}; {case!r}")
        raise AssertionError(problem)


def fuzz(client: httpx.Client, counter: TableCounter, tally: Tally) -> None:
    @settings(max_examples=EXAMPLES_PER_DATABASE, deadline=None, database=None,
              derandomize=SCALE.name == "fast", suppress_health_check=list(HealthCheck),
              print_blob=True)
    @given(case=cases())
    def one_request(case: Case) -> None:
        send(client, case, counter, tally)

    one_request()


def test_fuzzed_deliveries_get_only_documented_answers_and_unauthenticated_ones_store_nothing(
        database_url: str, tmp_path: Path) -> None:
    database = database_dialect(database_url)
    env = {"RECEIVER_DATABASE_URL": database_url, "RECEIVER_WEBHOOK_SECRETS": SECRET,
           "RECEIVER_ENCRYPTION_KEYS": TEST_KEY_LINE,
           "RECEIVER_MAX_BODY_BYTES": str(MAX_BODY_BYTES), "RECEIVER_LOG_LEVEL": "error"}
    tally = Tally()
    failure: str | None = None
    healthy = after_delivery = None
    started = time.monotonic()
    counter = TableCounter(database_url)
    try:
        with serve(cwd=tmp_path, env=env) as server, httpx.Client(
                base_url=server.url, timeout=60) as client:
            try:
                fuzz(client, counter, tally)
            except Exception as exc:  # recorded below, then raised again
                failure = f"{type(exc).__name__}: {str(exc)[:2000]}"
            healthy = httpx.get(server.url + "/healthz", timeout=10).status_code
            document = example("video_finished.json")
            document["job_id"] = "video_after_fuzzing"
            body = encode(document)
            answer = httpx.post(server.url + WEBHOOK, content=body, timeout=30, headers={
                "Content-Type": "application/json", "X-Webhook-Signature": signature(body)})
            after_delivery = (answer.status_code, answer.json().get("outcome"))
            alive = server.process.poll() is None
            internal_errors = sum("internal_error" in line for line in server.log_lines())
    finally:
        counter.close()
    runtime = round(time.monotonic() - started, 1)

    record(
        scenario="fuzz", database=database, scale=SCALE.name,
        parameters={"examples": EXAMPLES_PER_DATABASE, "derandomized": SCALE.name == "fast",
                    "max_body_bytes": MAX_BODY_BYTES,
                    "server": "results-receiver serve (uvicorn)"},
        outcomes={"deliveries_attempted": tally.cases, "errors_500": tally.five_hundreds,
                  "runtime_s": runtime},
        notes={"cases": tally.cases, "signed_cases": tally.signed,
               "unauthenticated_cases": tally.unauthenticated,
               "statuses": dict(sorted(tally.statuses.items())),
               "five_hundreds": tally.five_hundreds,
               "stored_unauthenticated": tally.stored_unauthenticated,
               "transport_errors": tally.transport_errors,
               "runtime_seconds": runtime,
               "healthz_after": healthy, "delivery_after": after_delivery,
               "internal_errors_logged": internal_errors,
               "by_signing": dict(sorted(tally.by_how.items())),
               "failure": failure, "unexpected": tally.unexpected[:10]},
    )

    assert failure is None, failure
    assert tally.cases >= EXAMPLES_PER_DATABASE
    assert tally.five_hundreds == 0
    assert tally.stored_unauthenticated == 0
    assert alive, "the server process died"
    assert healthy == 200
    assert after_delivery == (200, "stored")
    assert internal_errors == 0
