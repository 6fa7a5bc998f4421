"""Biometric fields taken out of a raw body: every person's (a ``drop`` policy) or some
persons' (an erasure). The result is JSON-equal to the original less those fields, with unknown
fields kept; what was taken out is described by a small JSON document (``withheld``)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Any

import msgspec

PersonKey = tuple[int, int]
"""(item_index, person_index): a person of a video counts across its scenes."""

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


def _persons(document: Any) -> Iterator[tuple[PersonKey, dict[str, Any]]]:
    """Every person object of a result document, with its address."""
    if not isinstance(document, dict):
        return
    result = document.get("result")
    if isinstance(result, dict):
        index = 0
        for scene in _list(result.get("person_constellation_scenes")):
            for person in _list(scene.get("person_ids") if isinstance(scene, dict) else None):
                if isinstance(person, dict):
                    yield (0, index), person
                index += 1
    for item_index, item in enumerate(_list(document.get("items"))):
        item_result = item.get("result") if isinstance(item, dict) else None
        if isinstance(item_result, dict):
            for index, person in enumerate(_list(item_result.get("person_ids"))):
                if isinstance(person, dict):
                    yield (item_index, index), person


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def redact_body(body: bytes, *, fields: Sequence[str],
                persons: Collection[PersonKey] | None = None,
                withheld: str | None = None) -> tuple[bytes, str] | None:
    """``body`` without ``fields`` of every person (``persons`` None) or of the given ones,
    and the updated ``withheld`` description; None when the body is not a JSON document
    (kept as it is: it holds no structured biometric field)."""
    try:
        document = _decode(body)
    except msgspec.DecodeError:
        return None
    for key, person in _persons(document):
        if persons is None or key in persons:
            for field in fields:
                person.pop(field, None)
    return _encode(document), describe(withheld, fields=fields, persons=persons)


def describe(previous: str | None, *, fields: Sequence[str],
             persons: Collection[PersonKey] | None) -> str:
    """The ``withheld`` document after removing ``fields`` (of everyone, or of ``persons``)."""
    state: dict[str, Any] = _decode(previous) if previous else {}
    if persons is None:
        state["fields"] = sorted(set(state.get("fields", ())) | set(fields))
    else:
        erased = {tuple(p) for p in state.get("erased_persons", ())} | set(persons)
        state["erased_persons"] = [list(p) for p in sorted(erased)]
    return _encode(state).decode("ascii")


def erased_persons(withheld: str | None) -> set[PersonKey]:
    """The persons a ``withheld`` document says were erased."""
    if not withheld:
        return set()
    return {(item, person) for item, person in _decode(withheld).get("erased_persons", ())}


def summary(withheld: str | None) -> str | None:
    """A one-line header value saying what a stored body or a rebuilt payload lacks."""
    if not withheld:
        return None
    state = _decode(withheld)
    parts = []
    if state.get("fields"):
        parts.append("fields=" + ",".join(state["fields"]))
    if state.get("erased_persons"):
        parts.append("erased_persons=" + ",".join(f"{i}/{p}" for i, p in
                                                   state["erased_persons"]))
    return "; ".join(parts) or None
