"""Properties of core/oauth2: parsers give a value or our DataError on any input; the
form encoding round-trips; polling only ever slows down; redaction leaves no secret."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from dma.core.errors import DataError, DmaError
from dma.core.oauth2 import (
    CachedToken,
    DeviceAuthorization,
    Granted,
    Polling,
    Refused,
    form_encode,
    next_poll,
    parse_cache,
    parse_device_authorization,
    parse_token_response,
    redact,
    render_cache,
)

KEYS = ("access_token", "token_type", "expires_in", "refresh_token", "error",
        "error_description", "device_code", "user_code", "verification_uri",
        "verification_url", "verification_uri_complete", "interval", "version", "expires_at",
        "token_url", "client_id", "scope")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["Bearer", "3600", "https://x.test/d", "a.b-c"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=4,
)
answers = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=6)
statuses = st.sampled_from([200, 400, 401, 500, 302, 0, 999])
tokens = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                 min_size=1, max_size=50)


@given(statuses, st.binary(max_size=300), st.floats(allow_nan=False, allow_infinity=False))
def test_token_response_any_octets(status: int, body: bytes, now: float) -> None:
    """Any octets give Granted, Refused or our DataError, nothing else."""
    try:
        result = parse_token_response(status, body, now)
    except DataError:
        return
    assert isinstance(result, Granted | Refused)


@given(statuses, answers, st.floats(min_value=0, max_value=4e9))
def test_token_response_any_json_object(status: int, answer: dict[str, Any], now: float) -> None:
    """Any JSON object built of the keys servers send gives a value or DataError; a grant's
    tokens are visible ASCII and its expiry is not before now."""
    try:
        result = parse_token_response(status, json.dumps(answer).encode(), now)
    except DataError:
        return
    if isinstance(result, Granted):
        assert result.expires_at >= now
        for token in (result.access_token, result.refresh_token or "x"):
            assert all(0x21 <= ord(c) <= 0x7E for c in token)
    else:
        assert result.error and all(0x20 <= ord(c) <= 0x7E for c in result.description)


@given(statuses, st.one_of(st.binary(max_size=300),
                           answers.map(lambda a: json.dumps(a).encode())))
def test_device_authorization_any_input(status: int, body: bytes) -> None:
    """Any answer of the device endpoint gives a DeviceAuthorization whose shown parts are
    printable and whose address is https, Refused, or DataError."""
    try:
        result = parse_device_authorization(status, body)
    except DataError:
        return
    if isinstance(result, DeviceAuthorization):
        assert result.verification_uri.lower().startswith("https://")
        assert result.user_code.isprintable() and result.interval >= 1
    else:
        assert isinstance(result, Refused)


@given(st.one_of(st.binary(max_size=300), answers.map(lambda a: json.dumps(a).encode())))
def test_cache_any_octets(data: bytes) -> None:
    """Any cache file contents give a CachedToken or DataError (a cache miss)."""
    try:
        assert isinstance(parse_cache(data), CachedToken)
    except DataError:
        pass


@given(tokens, st.floats(min_value=0, max_value=4e9), st.text(max_size=30),
       st.none() | st.text(max_size=30))
def test_cache_round_trip(token: str, expires_at: float, client_id: str, scope: str | None) -> None:
    """What render_cache writes, parse_cache reads back the same."""
    cached = CachedToken(token, expires_at, "https://idp.test/token", client_id, scope)
    assert parse_cache(render_cache(cached)) == cached


text_without_surrogates = st.text(alphabet=st.characters(exclude_categories=("Cs",)),
                                  max_size=30)


@given(st.lists(st.tuples(text_without_surrogates, text_without_surrogates), max_size=5))
def test_form_encoding_round_trip(pairs: list[tuple[str, str]]) -> None:
    """The form body decodes with the standard library to the very pairs given (names that
    are empty are dropped by parse_qsl, so they are not generated)."""
    pairs = [(name, value) for name, value in pairs if name]
    assert parse_qsl(form_encode(pairs).decode("ascii"), keep_blank_values=True) == pairs


@given(st.integers(min_value=1, max_value=300), st.floats(min_value=0, max_value=1e6),
       st.floats(min_value=0, max_value=1e6),
       st.sampled_from(["authorization_pending", "slow_down", "expired_token", "access_denied",
                        "authorization_declined", "invalid_grant", "bad_verification_code",
                        "x"]))
def test_polling_only_slows_down(interval: int, deadline: float, now: float, error: str) -> None:
    """After any refusal, polling goes on no faster than before (5 s slower after slow_down)
    and never past its deadline, or stops with our error."""
    polling = Polling("dc", interval, deadline)
    try:
        step = next_poll("o", polling, Refused(error), now)
    except DmaError:
        return
    assert isinstance(step, Polling)
    assert step.interval == interval + (5 if error == "slow_down" else 0)
    assert now + step.interval <= deadline


@given(st.text(max_size=200), st.lists(st.text(alphabet="0123456789", min_size=6, max_size=12),
                                       max_size=4))
def test_redact_leaves_no_secret(text: str, secrets: list[str]) -> None:
    """After redaction none of the secrets occurs in the text."""
    mixed = text + "".join(secrets) + text
    cleaned = redact(mixed, secrets)
    assert not any(secret in cleaned for secret in secrets)
