"""Unit tests of ``service.signatures``: known answers, accepted encodings, every refusal.

The known-answer digests below were computed with OpenSSL 3.0 (never with this code or with
Python's ``hmac``) and pasted as literals:

    body='{"job_id":"video_12345","status":"finished"}'
    printf '%s' "$body" | openssl dgst -sha256 -hmac 'my-webhook-secret'   # SIMPLE_HEX
    printf '%s' "$body" | openssl dgst -sha256 -hmac 'my-webhook-secret' -binary \
        | base64                                                             # SIMPLE_BASE64
    printf '%s' "$body" | openssl dgst -sha256 -hmac 'old-secret-2023'     # OLD_HEX
    printf '%s' "$body" | openssl dgst -sha256 -hmac 'new-secret-2024'     # NEW_HEX

    secret='clé-secrète-ü-🔑'
    printf '{"job_id":"video_\xc3\xa9t\xc3\xa9","full_text":"Gr\xc3\xbc\xc3\x9fe ' > u.bin
    printf '\xe2\x82\xac \xf0\x9f\x8e\xac"}' >> u.bin
    openssl dgst -sha256 -hmac "$secret" u.bin                # UTF8_HEX (-binary|base64: _BASE64)

    printf '\x00\xff\xfe\x80binary\r\n' > bin.bin
    openssl dgst -sha256 -hmac 'my-webhook-secret' bin.bin    # BINARY_HEX

    std='{"test": 2432232314}'
    printf '%s' "$std" \
        | openssl dgst -sha256 -hmac 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'  # WHSEC_UTF8_KEY_HEX
    key=$(printf '%s' MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw | base64 -d | xxd -p -c 100)
    printf '%s' "$std" \
        | openssl dgst -sha256 -mac HMAC -macopt hexkey:$key              # WHSEC_DECODED_KEY_HEX
    printf '%s' "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.$std" \
        | openssl dgst -sha256 -hmac 'plain-standard-secret' -binary | base64  # PLAIN_STANDARD_SIG
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from service.signatures import SignatureError, SignatureVerifier, sign, sign_standard

TOLERANCE = 300

SIMPLE_SECRET = "my-webhook-secret"
SIMPLE_BODY = b'{"job_id":"video_12345","status":"finished"}'
SIMPLE_HEX = "6029a6a9db90fea707aa5663ddaf573a0d562b387ba456b0cdf2985c016f8045"
SIMPLE_BASE64 = "YCmmqduQ/qcHqlZj3a9XOg1WKzh7pFawzfKYXAFvgEU="

UTF8_SECRET = "clé-secrète-ü-🔑"
UTF8_BODY = (
    b'{"job_id":"video_\xc3\xa9t\xc3\xa9","full_text":"Gr\xc3\xbc\xc3\x9fe \xe2\x82\xac '
    b'\xf0\x9f\x8e\xac"}'
)
UTF8_HEX = "dd681f0148da040a5b65860182808482a71495d224f301e9574f872f24a1fba6"
UTF8_BASE64 = "3WgfAUjaBApbZYYBgoCEgqcUldIk8wHpV0+HLySh+6Y="

BINARY_BODY = b"\x00\xff\xfe\x80binary\r\n"
BINARY_HEX = "37f0d8f37a52cd3b90645b89f698b5e4e270fcb1806873e57e6d104602e0a233"

OLD_SECRET = "old-secret-2023"
NEW_SECRET = "new-secret-2024"
OLD_HEX = "0b429b19a54a138fd34d8ecf917371a6c497f210ac6d960b862de9634b57684c"
NEW_HEX = "8d48b526d0cbffd0e28144c1072871bb7ccd9ce0f4cff74de98f21d12e4f9173"

# The Standard Webhooks specification's published test vector.
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TIMESTAMP = 1614265330
STD_BODY = b'{"test": 2432232314}'
STD_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
WHSEC_UTF8_KEY_HEX = "80ec8a89ce3cd22133a1066caecb4d04fea7467657c8514d717ec42c38a5c94c"
WHSEC_DECODED_KEY_HEX = "e2cb4f5251572539d458bfb8a7adb533b08801e6a794467e06f771debbb0818b"
PLAIN_STANDARD_SECRET = "plain-standard-secret"
PLAIN_STANDARD_SIG = "v1,+hxHxAjXDQ8i6O6AkmZ22wXMORGUJxZZK4dhqfTChs0="

# A valid digest of something else: right shape, wrong value.
WRONG_HEX = "00" * 32


def verifier(*secrets: str, allow_unsigned: bool = False) -> SignatureVerifier:
    return SignatureVerifier(list(secrets), allow_unsigned=allow_unsigned,
                             tolerance_seconds=TOLERANCE)


def hmac_headers(value: str) -> dict[str, str]:
    return {"x-webhook-signature": value}


def standard_headers(*, message_id: str = STD_ID, timestamp: str = str(STD_TIMESTAMP),
                     signature: str = STD_SIGNATURE) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": timestamp,
            "webhook-signature": signature}


def verify_simple(header: str, *secrets: str) -> str:
    return verifier(*(secrets or (SIMPLE_SECRET,))).verify(
        hmac_headers(header), SIMPLE_BODY, now=STD_TIMESTAMP)


def refusal(verify: SignatureVerifier, headers: dict[str, str], body: bytes,
            now: float = STD_TIMESTAMP) -> str:
    with pytest.raises(SignatureError) as caught:
        verify.verify(headers, body, now=now)
    return caught.value.reason


# --- known answers computed with openssl ---------------------------------------------------


def test_sign_matches_hmac_hex_computed_by_openssl() -> None:
    assert sign(SIMPLE_SECRET, SIMPLE_BODY) == SIMPLE_HEX


def test_hmac_hex_signature_computed_by_openssl_verifies() -> None:
    assert verify_simple(SIMPLE_HEX) == "hmac-sha256"


def test_sign_with_non_ascii_secret_and_body_matches_openssl() -> None:
    assert sign(UTF8_SECRET, UTF8_BODY) == UTF8_HEX


def test_openssl_signature_with_non_ascii_secret_and_body_verifies() -> None:
    result = verifier(UTF8_SECRET).verify(hmac_headers(UTF8_HEX), UTF8_BODY, now=0)
    assert result == "hmac-sha256"


def test_openssl_base64_signature_with_non_ascii_secret_and_body_verifies() -> None:
    result = verifier(UTF8_SECRET).verify(hmac_headers(UTF8_BASE64), UTF8_BODY, now=0)
    assert result == "hmac-sha256"


def test_sign_over_non_utf8_binary_body_matches_openssl() -> None:
    assert sign(SIMPLE_SECRET, BINARY_BODY) == BINARY_HEX
    result = verifier(SIMPLE_SECRET).verify(hmac_headers(BINARY_HEX), BINARY_BODY, now=0)
    assert result == "hmac-sha256"


def test_sign_standard_reproduces_the_published_standard_webhooks_vector() -> None:
    assert sign_standard(STD_SECRET, STD_ID, STD_TIMESTAMP, STD_BODY) == STD_SIGNATURE


def test_published_standard_webhooks_vector_verifies_at_its_timestamp() -> None:
    result = verifier(STD_SECRET).verify(standard_headers(), STD_BODY, now=STD_TIMESTAMP)
    assert result == "standard-webhooks"


@pytest.mark.parametrize("offset", [-TOLERANCE, TOLERANCE])
def test_published_standard_webhooks_vector_verifies_at_the_edge_of_the_tolerance(
        offset: int) -> None:
    result = verifier(STD_SECRET).verify(standard_headers(), STD_BODY,
                                         now=STD_TIMESTAMP + offset)
    assert result == "standard-webhooks"


@pytest.mark.parametrize("offset", [-(TOLERANCE + 1), TOLERANCE + 1])
def test_published_standard_webhooks_vector_is_refused_just_outside_the_tolerance(
        offset: int) -> None:
    reason = refusal(verifier(STD_SECRET), standard_headers(), STD_BODY,
                     now=STD_TIMESTAMP + offset)
    assert reason == "timestamp"


# --- accepted encodings of X-Webhook-Signature ----------------------------------------------


def test_lowercase_hex_signature_verifies() -> None:
    assert verify_simple(SIMPLE_HEX.lower()) == "hmac-sha256"


def test_uppercase_hex_signature_verifies() -> None:
    assert verify_simple(SIMPLE_HEX.upper()) == "hmac-sha256"


def test_sha256_prefixed_hex_signature_verifies() -> None:
    assert verify_simple("sha256=" + SIMPLE_HEX) == "hmac-sha256"


def test_uppercase_sha256_prefixed_hex_signature_verifies() -> None:
    assert verify_simple("SHA256=" + SIMPLE_HEX) == "hmac-sha256"


def test_padded_standard_base64_signature_verifies() -> None:
    assert SIMPLE_BASE64.endswith("=")
    assert verify_simple(SIMPLE_BASE64) == "hmac-sha256"


def test_unpadded_standard_base64_signature_verifies() -> None:
    assert verify_simple(SIMPLE_BASE64.rstrip("=")) == "hmac-sha256"


def test_sha256_prefixed_base64_signature_verifies() -> None:
    assert verify_simple("sha256=" + SIMPLE_BASE64) == "hmac-sha256"


def test_surrounding_whitespace_around_the_signature_is_ignored() -> None:
    assert verify_simple(f"  {SIMPLE_HEX}\t ") == "hmac-sha256"


def test_comma_separated_candidates_verify_when_the_last_one_is_right() -> None:
    assert verify_simple(f"{WRONG_HEX},{OLD_HEX},{SIMPLE_HEX}") == "hmac-sha256"


def test_space_separated_candidates_verify_when_the_last_one_is_right() -> None:
    assert verify_simple(f"{WRONG_HEX} {OLD_HEX} {SIMPLE_HEX}") == "hmac-sha256"


def test_comma_space_separated_candidates_verify_when_the_last_one_is_right() -> None:
    assert verify_simple(f"{WRONG_HEX}, {OLD_HEX}, {SIMPLE_HEX}") == "hmac-sha256"


def test_undecodable_candidates_are_skipped_when_another_candidate_is_right() -> None:
    assert verify_simple(f"garbage!, t=12345, {SIMPLE_HEX}") == "hmac-sha256"


def test_sixteen_candidates_are_accepted_when_the_last_one_is_right() -> None:
    header = ",".join([WRONG_HEX] * 15 + [SIMPLE_HEX])
    assert verify_simple(header) == "hmac-sha256"


def test_delivery_signed_with_the_old_secret_verifies_during_rotation() -> None:
    assert verify_simple(OLD_HEX, OLD_SECRET, NEW_SECRET) == "hmac-sha256"


def test_delivery_signed_with_the_new_secret_verifies_during_rotation() -> None:
    assert verify_simple(NEW_HEX, OLD_SECRET, NEW_SECRET) == "hmac-sha256"


def test_delivery_signed_with_a_retired_secret_is_refused_after_rotation() -> None:
    reason = refusal(verifier(NEW_SECRET), hmac_headers(OLD_HEX), SIMPLE_BODY)
    assert reason == "mismatch"


def test_whsec_secret_with_x_webhook_signature_uses_the_secrets_utf8_bytes_as_key() -> None:
    result = verifier(STD_SECRET).verify(hmac_headers(WHSEC_UTF8_KEY_HEX), STD_BODY, now=0)
    assert result == "hmac-sha256"


def test_whsec_secret_with_x_webhook_signature_does_not_use_the_decoded_key() -> None:
    reason = refusal(verifier(STD_SECRET), hmac_headers(WHSEC_DECODED_KEY_HEX), STD_BODY)
    assert reason == "mismatch"


def test_whsec_secret_with_standard_webhooks_uses_the_base64_decoded_key() -> None:
    # The published vector is signed with the decoded key; the secret's UTF-8 bytes would not
    # reproduce it.
    result = verifier(STD_SECRET).verify(standard_headers(), STD_BODY, now=STD_TIMESTAMP)
    assert result == "standard-webhooks"


def test_plain_secret_with_standard_webhooks_uses_the_secrets_utf8_bytes() -> None:
    assert sign_standard(PLAIN_STANDARD_SECRET, STD_ID, STD_TIMESTAMP, STD_BODY) == (
        PLAIN_STANDARD_SIG)
    result = verifier(PLAIN_STANDARD_SECRET).verify(
        standard_headers(signature=PLAIN_STANDARD_SIG), STD_BODY, now=STD_TIMESTAMP)
    assert result == "standard-webhooks"


def test_standard_webhooks_space_separated_signatures_verify_when_the_last_one_is_right() -> None:
    wrong = "v1," + base64.b64encode(bytes(32)).decode()
    header = f"v1a,{STD_SIGNATURE[3:]} {wrong} {STD_SIGNATURE}"
    result = verifier(STD_SECRET).verify(standard_headers(signature=header), STD_BODY,
                                         now=STD_TIMESTAMP)
    assert result == "standard-webhooks"


def test_standard_webhooks_delivery_verifies_with_either_rotated_secret() -> None:
    other = "whsec_" + base64.b64encode(b"another key of some length!!").decode()
    result = verifier(other, STD_SECRET).verify(standard_headers(), STD_BODY,
                                                now=STD_TIMESTAMP)
    assert result == "standard-webhooks"


def test_verifier_reads_headers_case_insensitively_from_starlette_headers() -> None:
    headers = Headers(headers={"X-Webhook-Signature": SIMPLE_HEX})
    assert verifier(SIMPLE_SECRET).verify(headers, SIMPLE_BODY, now=0) == "hmac-sha256"


# --- every way verification fails ----------------------------------------------------------


def test_missing_signature_header_is_refused_as_missing() -> None:
    assert refusal(verifier(SIMPLE_SECRET), {}, SIMPLE_BODY) == "missing"


def test_missing_signature_header_is_refused_when_no_secret_is_configured() -> None:
    assert refusal(verifier(), {"content-type": "application/json"}, SIMPLE_BODY) == "missing"


def test_missing_signature_header_is_accepted_as_unsigned_when_allowed() -> None:
    result = verifier(SIMPLE_SECRET, allow_unsigned=True).verify({}, SIMPLE_BODY, now=0)
    assert result == "unsigned"


def test_present_wrong_signature_is_refused_even_when_unsigned_is_allowed() -> None:
    reason = refusal(verifier(SIMPLE_SECRET, allow_unsigned=True), hmac_headers(WRONG_HEX),
                     SIMPLE_BODY)
    assert reason == "mismatch"


def test_present_malformed_signature_is_refused_even_when_unsigned_is_allowed() -> None:
    reason = refusal(verifier(SIMPLE_SECRET, allow_unsigned=True), hmac_headers(""),
                     SIMPLE_BODY)
    assert reason == "malformed"


def test_signature_made_with_another_secret_is_refused_as_mismatch() -> None:
    reason = refusal(verifier("a-different-secret"), hmac_headers(SIMPLE_HEX), SIMPLE_BODY)
    assert reason == "mismatch"


def test_body_changed_by_one_byte_is_refused_as_mismatch() -> None:
    tampered = SIMPLE_BODY[:-2] + b"X" + SIMPLE_BODY[-1:]
    assert len(tampered) == len(SIMPLE_BODY)
    reason = refusal(verifier(SIMPLE_SECRET), hmac_headers(SIMPLE_HEX), tampered)
    assert reason == "mismatch"


def test_signature_of_a_different_body_is_refused_as_mismatch() -> None:
    other = sign(SIMPLE_SECRET, b'{"job_id":"video_99999","status":"finished"}')
    reason = refusal(verifier(SIMPLE_SECRET), hmac_headers(other), SIMPLE_BODY)
    assert reason == "mismatch"


def test_signature_differing_only_in_the_first_byte_is_refused_as_mismatch() -> None:
    # Behavioural check of the constant-time comparison (cryptography's bytes_eq): a digest
    # that differs at either end is refused the same way.
    first = f"{int(SIMPLE_HEX[:2], 16) ^ 0x01:02x}" + SIMPLE_HEX[2:]
    assert first != SIMPLE_HEX
    assert len(first) == 64
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(first), SIMPLE_BODY) == "mismatch"


def test_signature_differing_only_in_the_last_byte_is_refused_as_mismatch() -> None:
    last = SIMPLE_HEX[:-2] + f"{int(SIMPLE_HEX[-2:], 16) ^ 0x01:02x}"
    assert last != SIMPLE_HEX
    assert len(last) == 64
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(last), SIMPLE_BODY) == "mismatch"


def test_truncated_hex_signature_is_refused_as_malformed() -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(SIMPLE_HEX[:63]),
                   SIMPLE_BODY) == "malformed"


def test_overlong_hex_signature_is_refused_as_malformed() -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(SIMPLE_HEX + "0"),
                   SIMPLE_BODY) == "malformed"


@pytest.mark.parametrize("garbage", ["not-a-signature!", "sha256=", "sha256=zz", "%%%%", "t=1"])
def test_garbage_that_is_neither_hex_nor_base64_is_refused_as_malformed(garbage: str) -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(garbage), SIMPLE_BODY) == "malformed"


def test_empty_signature_header_is_refused_as_malformed() -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(""), SIMPLE_BODY) == "malformed"


@pytest.mark.parametrize("blank", [" ", "   ", "\t", " , ,, "])
def test_whitespace_only_signature_header_is_refused_as_malformed(blank: str) -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(blank), SIMPLE_BODY) == "malformed"


def test_signature_header_longer_than_4096_characters_is_refused_as_malformed() -> None:
    header = SIMPLE_HEX + " " * (4097 - len(SIMPLE_HEX))
    assert len(header) == 4097
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(header), SIMPLE_BODY) == "malformed"


def test_more_than_16_candidates_are_refused_as_malformed_even_with_a_right_one() -> None:
    header = ",".join([WRONG_HEX] * 16 + [SIMPLE_HEX])
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(header), SIMPLE_BODY) == "malformed"


@pytest.mark.parametrize("length", [31, 33])
def test_base64_of_a_value_that_is_not_32_bytes_is_refused_as_malformed(length: int) -> None:
    digest = bytes.fromhex(SIMPLE_HEX)
    value = (digest + b"\x00")[:length]
    header = base64.b64encode(value).decode()
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(header), SIMPLE_BODY) == "malformed"


def test_urlsafe_base64_of_the_right_digest_is_refused_as_malformed() -> None:
    urlsafe = SIMPLE_BASE64.replace("/", "_")
    assert urlsafe != SIMPLE_BASE64
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(urlsafe), SIMPLE_BODY) == "malformed"


@pytest.mark.parametrize("header", [
    "é" * 64,
    "６０２９" * 16,  # noqa: RUF001 (fullwidth digits on purpose)
    "sha256=" + "ü" * 64,
    SIMPLE_HEX[:-1] + "é",
    "🔑",
    "\x00" * 64,
    "\u200b" + "a" * 63,
])
def test_non_ascii_or_control_characters_in_the_header_are_refused_as_malformed(
        header: str) -> None:
    assert refusal(verifier(SIMPLE_SECRET), hmac_headers(header), SIMPLE_BODY) == "malformed"


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_webhooks_with_one_header_missing_is_refused_as_malformed(
        missing: str) -> None:
    headers = standard_headers()
    del headers[missing]
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


@pytest.mark.parametrize("timestamp", [
    "", "abc", "1614265330.0", "1614265330s", " 1614265330", "1e9", "+1614265330",
    "１６１４２６５３３０",  # noqa: RUF001 (fullwidth digits: str.isdigit() says yes)
])
def test_standard_webhooks_non_numeric_timestamp_is_refused_as_malformed(
        timestamp: str) -> None:
    headers = standard_headers(timestamp=timestamp)
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


def test_standard_webhooks_negative_timestamp_is_refused_as_malformed() -> None:
    headers = standard_headers(timestamp="-1614265330")
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


@pytest.mark.parametrize("timestamp", ["1" * 13, "1614265330000", "9" * 400])
def test_standard_webhooks_huge_timestamp_is_refused_as_malformed(timestamp: str) -> None:
    headers = standard_headers(timestamp=timestamp)
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


def test_standard_webhooks_stale_timestamp_is_refused_as_timestamp() -> None:
    stale = STD_TIMESTAMP - TOLERANCE - 60
    headers = standard_headers(timestamp=str(stale),
                               signature=sign_standard(STD_SECRET, STD_ID, stale, STD_BODY))
    assert refusal(verifier(STD_SECRET), headers, STD_BODY, now=STD_TIMESTAMP) == "timestamp"


def test_standard_webhooks_future_timestamp_is_refused_as_timestamp() -> None:
    future = STD_TIMESTAMP + TOLERANCE + 60
    headers = standard_headers(timestamp=str(future),
                               signature=sign_standard(STD_SECRET, STD_ID, future, STD_BODY))
    assert refusal(verifier(STD_SECRET), headers, STD_BODY, now=STD_TIMESTAMP) == "timestamp"


def test_standard_webhooks_with_only_a_v2_signature_is_refused_as_malformed() -> None:
    headers = standard_headers(signature="v2," + STD_SIGNATURE[3:])
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


def test_standard_webhooks_v1_signature_with_the_wrong_secret_is_refused_as_mismatch() -> None:
    other = "whsec_" + base64.b64encode(b"a completely different key!!").decode()
    headers = standard_headers(
        signature=sign_standard(other, STD_ID, STD_TIMESTAMP, STD_BODY))
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "mismatch"


def test_standard_webhooks_signature_over_a_changed_body_is_refused_as_mismatch() -> None:
    assert refusal(verifier(STD_SECRET), standard_headers(), b'{"test": 2432232315}') == (
        "mismatch")


def test_standard_webhooks_v1_entry_without_base64_is_refused_as_malformed() -> None:
    headers = standard_headers(signature="v1,not*base64")
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


@pytest.mark.parametrize("message_id", [
    "msg with spaces", "msg\x00id", "msg\tid", "msg\nid", "msg\x7fid", "", "méssage", "x" * 257,
])
def test_standard_webhooks_id_with_spaces_or_control_chars_is_refused_as_malformed(
        message_id: str) -> None:
    headers = standard_headers(message_id=message_id)
    assert refusal(verifier(STD_SECRET), headers, STD_BODY) == "malformed"


# --- never anything but SignatureError -----------------------------------------------------


def outcome(check: SignatureVerifier, headers: dict[str, str], body: bytes, now: float) -> str:
    """The scheme, or ``refused: <reason>``; any other exception propagates and fails."""
    try:
        return check.verify(headers, body, now=now)
    except SignatureError as exc:
        return f"refused: {exc.reason}"


_PIECES = st.one_of(
    st.text(),
    st.sampled_from([SIMPLE_HEX, SIMPLE_HEX.upper(), SIMPLE_BASE64, SIMPLE_BASE64.rstrip("="),
                     "sha256=", "SHA256=", "v1,", "=", "==", ",", " ", "\t", "\x00"]),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=60, max_size=68),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=",
            min_size=40, max_size=48),
)
_HEADER_VALUES = st.one_of(st.text(), st.lists(_PIECES, max_size=20).map("".join))
_FUZZ = settings(max_examples=300, database=None, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(header=_HEADER_VALUES, body=st.binary(), allow_unsigned=st.booleans())
def test_arbitrary_x_webhook_signature_header_verifies_or_raises_signature_error(
        header: str, body: bytes, allow_unsigned: bool) -> None:
    check = verifier(SIMPLE_SECRET, STD_SECRET, allow_unsigned=allow_unsigned)
    assert outcome(check, hmac_headers(header), body, STD_TIMESTAMP) in (
        "hmac-sha256", "refused: malformed", "refused: mismatch")


@_FUZZ
@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
        st.one_of(_HEADER_VALUES, st.integers().map(str),
                  st.just(str(STD_TIMESTAMP)), st.just(STD_ID), st.just(STD_SIGNATURE)),
    ),
    body=st.binary(),
    now=st.integers(min_value=-(2**40), max_value=2**40),
)
def test_arbitrary_standard_webhooks_headers_verify_or_raise_signature_error(
        headers: dict[str, str], body: bytes, now: int) -> None:
    assert outcome(verifier(STD_SECRET, SIMPLE_SECRET), headers, body, now) in (
        "standard-webhooks", "refused: missing", "refused: malformed", "refused: mismatch",
        "refused: timestamp")
