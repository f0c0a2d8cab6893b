"""OAuth2 access tokens: core decisions, and the adapter and login against a fake HTTPS server.

The server (``tests/oauth2_server.py``) runs on loopback with a trustme certificate.
Every test that handles a token captures what the code printed, logged and raised,
and every file it wrote other than the token files, and searches all of it for
every token, refresh token, device code and the client secret.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from oauth2_server import CLIENT_ID, CLIENT_SECRET, USER_CODE, FakeOAuth2Server, closed_port
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.adapters.log import LightLogger
from dma.adapters.oauth2 import AccessTokens, run_token_command, write_secret_file
from dma.core.errors import ConfigError, DataError, DmaError, TempFailure, UnavailableError
from dma.core.oauth2 import (
    CACHE_MARGIN,
    DEVICE_GRANT,
    CachedToken,
    DeviceAuthorization,
    Granted,
    OAuth2Settings,
    Polling,
    Refused,
    cache_entry,
    device_refusal,
    device_request,
    device_token_request,
    endpoints,
    form_encode,
    next_poll,
    parse_cache,
    parse_device_authorization,
    parse_token_response,
    refresh_request,
    refusal_error,
    render_cache,
    settings_for,
    usable,
)
from dma.shell.oauth2_login import login
from dma.shell.oauth2_login import main as oauth2_main

SCOPE = "https://outlook.office.com/SMTP.Send offline_access"
NOBODY = 65534


# --- helpers ----------------------------------------------------------------------------------


class Clock:
    """A clock the test moves; ``sleep`` moves it and records how long was asked."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Lines:
    """A log sink that keeps each rendered line (behind the real LightLogger processors)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __getattr__(self, method: str) -> Any:
        return lambda line: self.lines.append(f"{method}: {line}")


def logger() -> tuple[Any, Lines]:
    sink = Lines()
    return LightLogger(sink), sink  # type: ignore[arg-type]


@pytest.fixture
def server(tls_certs: TlsCerts) -> Iterator[FakeOAuth2Server]:
    fake = FakeOAuth2Server(tls_certs.server_context())
    yield fake
    fake.close()


def account(server: FakeOAuth2Server, directory: Path, **changes: Any) -> OAuth2Settings:
    """The account ``office`` against the fake server, its tokens under ``directory``."""
    values: dict[str, Any] = {
        "account": "office", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "refresh_token_file": str(directory / "office.refresh"),
        "token_url": server.url("/token"), "device_url": server.url("/devicecode"),
        "scope": SCOPE,
    }
    values.update(changes)
    return OAuth2Settings(**values)


def signed_in(server: FakeOAuth2Server, tmp_path: Path, **changes: Any) -> OAuth2Settings:
    """An account whose refresh token file holds a token the server knows."""
    directory = tmp_path / "oauth2"
    directory.mkdir(mode=0o700, exist_ok=True)
    token = server.state.new_token("refresh-initial")
    server.state.refresh_tokens.add(token)
    write_secret_file(str(directory / "office.refresh"), token.encode() + b"\n")
    return account(server, directory, **changes)


def token_files(settings: OAuth2Settings) -> set[Path]:
    return {Path(settings.refresh_token_file or ""), Path(settings.cache_file or "")}


def assert_no_secrets(server: FakeOAuth2Server, root: Path, texts: list[str],
                      allowed: set[Path]) -> None:
    """No token, refresh token, device code or the client secret in ``texts`` or in any
    file under ``root`` but the token files ``allowed``."""
    secrets = {CLIENT_SECRET, *server.state.issued, *server.state.refresh_tokens}
    corpus = list(texts)
    for path in root.rglob("*"):
        if path.is_file() and path not in allowed:
            corpus.append(path.read_bytes().decode("latin-1"))
    for secret in secrets:
        for text in corpus:
            assert secret not in text


def error_texts(error: BaseException) -> list[str]:
    return [str(error), repr(error), *(a for a in error.args if isinstance(a, str))]


def outputs(capfd: pytest.CaptureFixture[str], sink: Lines) -> list[str]:
    captured = capfd.readouterr()
    return [captured.out, captured.err, *sink.lines]


# --- core: presets and requests ---------------------------------------------------------------


def test_microsoft_preset_fills_tenant_endpoints_and_scope() -> None:
    """provider "microsoft" gives the v2.0 token and devicecode endpoints of the tenant and
    the SMTP.Send scope with offline_access."""
    where = endpoints(OAuth2Settings("office", client_id="c", refresh_token_file="/r",
                                     provider="microsoft", tenant="organizations"))
    base = "https://login.microsoftonline.com/organizations/oauth2/v2.0/"
    assert where.token_url == base + "token"
    assert where.device_url == base + "devicecode"
    assert where.scope == "https://outlook.office.com/SMTP.Send offline_access"


def test_google_preset_and_explicit_endpoints_override() -> None:
    """provider "google" gives Google's endpoints and Gmail's scope; token_url, device_url and
    scope given in the account replace the preset's."""
    google = endpoints(OAuth2Settings("g", client_id="c", refresh_token_file="/r",
                                      provider="google"))
    assert (google.token_url, google.device_url, google.scope) == (
        "https://oauth2.googleapis.com/token", "https://oauth2.googleapis.com/device/code",
        "https://mail.google.com/")
    assert not google.device_scope_allowed
    mine = endpoints(OAuth2Settings("g", client_id="c", refresh_token_file="/r",
                                    provider="google", token_url="https://idp.test/t",
                                    device_url="https://idp.test/d", scope="mail"))
    assert (mine.token_url, mine.device_url, mine.scope) == (
        "https://idp.test/t", "https://idp.test/d", "mail")
    assert mine.device_scope_allowed


@pytest.mark.parametrize(("changes", "words"), [
    ({"provider": "yahoo"}, "unknown oauth2 provider"),
    ({"provider": "microsoft", "tenant": "evil/../x"}, "is not a tenant name"),
    ({"token_url": "http://idp.test/token"}, "must be an https:// URL"),
    ({"token_url": "https://user@idp.test/token"}, "must be an https:// URL"),
    ({}, "needs a provider or a token_url"),
])
def test_bad_endpoint_settings_are_config_errors(changes: dict[str, str], words: str) -> None:
    """An unknown provider, a tenant that is no name, a plain-http or userinfo URL, or no
    endpoint at all is a ConfigError naming the account."""
    settings = OAuth2Settings("office", client_id="c", refresh_token_file="/r", **changes)
    with pytest.raises(ConfigError) as caught:
        endpoints(settings)
    assert words in str(caught.value)
    assert "account office" in str(caught.value)


def test_settings_for_takes_the_accounts_table_and_checks_it() -> None:
    """settings_for converts an account's parsed oauth2 table (tenant default "common") and
    refuses a relative refresh token file or token_command mixed with refresh settings."""
    from types import SimpleNamespace

    table: dict[str, Any] = dict(provider="microsoft", client_id="c", client_secret=None,
                                 tenant=None, scope=None, token_url=None, device_url=None,
                                 refresh_token_file="/var/lib/dma/oauth2/o.refresh",
                                 token_command=None)
    settings = settings_for("office", SimpleNamespace(**table))
    assert settings.tenant == "common"
    assert settings.cache_file == "/var/lib/dma/oauth2/o.refresh.access"
    with pytest.raises(ConfigError, match="absolute path"):
        settings_for("office", SimpleNamespace(**{**table, "refresh_token_file": "o.refresh"}))
    with pytest.raises(ConfigError, match="token_command excludes"):
        settings_for("office", SimpleNamespace(**{**table, "token_command": ("x",)}))


def test_refresh_grant_form_body() -> None:
    """The refresh request is RFC 6749 section 6's form: grant_type, refresh_token, the
    client's id and secret, and the scope, percent-encoded (space as +)."""
    settings = OAuth2Settings("office", client_id="id 1", refresh_token_file="/r",
                              token_url="https://idp.test/token", scope=SCOPE,
                              client_secret="s&=")
    post = refresh_request(settings, endpoints(settings), "rt/+x")
    assert post.url == "https://idp.test/token"
    assert post.body == (b"grant_type=refresh_token&refresh_token=rt%2F%2Bx&client_id=id+1"
                         b"&client_secret=s%26%3D&scope=https%3A%2F%2Foutlook.office.com%2F"
                         b"SMTP.Send+offline_access")
    assert set(post.secrets) == {"rt/+x", "s&="}
    assert "rt/+x" not in repr(post) and "s&=" not in repr(post)


def test_device_request_and_poll_form_bodies() -> None:
    """RFC 8628: the device authorization request sends client_id and scope; each poll sends
    the device-code grant type, the device code and the client's id (and secret)."""
    settings = OAuth2Settings("office", client_id="cid", refresh_token_file="/r",
                              token_url="https://idp.test/token",
                              device_url="https://idp.test/device", scope="a b")
    where = endpoints(settings)
    assert device_request(settings, where).body == b"client_id=cid&scope=a+b"
    poll = device_token_request(settings, where, "dc-1")
    assert dict(parse_qsl(poll.body.decode())) == {
        "grant_type": DEVICE_GRANT, "device_code": "dc-1", "client_id": "cid"}
    assert poll.url == "https://idp.test/token"


def test_form_encoding_round_trips_through_the_standard_library() -> None:
    """form_encode's output decodes with urllib.parse to the pairs it was given."""
    pairs = [("a b", "c+d&e=f"), ("é", "~._-*/%"), ("empty", "")]
    assert parse_qsl(form_encode(pairs).decode(), keep_blank_values=True) == pairs


# --- core: answers ----------------------------------------------------------------------------


def test_token_response_granted_with_rotation() -> None:
    """A 200 answer gives the access token, its expiry from now and the rotated refresh
    token; expires_in may be a digit string; the repr hides both tokens."""
    body = json.dumps({"access_token": "at", "token_type": "bearer", "expires_in": "3599",
                       "refresh_token": "rt2"}).encode()
    granted = parse_token_response(200, body, 1000.0)
    assert granted == Granted("at", 4599.0, "rt2")
    assert "at" not in repr(granted).replace("access_token", "").replace("expires_at", "")
    assert "rt2" not in repr(granted)


def test_token_response_without_expiry_or_rotation() -> None:
    """No expires_in means expiry now (never cached); no refresh_token means keep the old one."""
    assert parse_token_response(200, b'{"access_token":"at"}', 50.0) == Granted("at", 50.0, None)


@pytest.mark.parametrize("code", ["invalid_grant", "authorization_pending", "slow_down",
                                  "expired_token", "access_denied"])
def test_token_response_errors_are_refusals(code: str) -> None:
    """An RFC 6749 5.2 / RFC 8628 3.5 error answer is Refused with its code and a one-line
    printable description."""
    body = json.dumps({"error": code, "error_description": "AADSTS70016: wait\r\nTrace: 1"})
    assert parse_token_response(400, body.encode(), 0.0) == Refused(
        code, "AADSTS70016: wait Trace: 1")


@pytest.mark.parametrize(("status", "body"), [
    (200, b"<html>"), (500, b"{}"), (200, b"[]"), (200, b'{"access_token": 5}'),
    (200, b'{"access_token": "a b"}'), (200, b'{"access_token": "a\\r\\nQUIT"}'),
    (200, b'{"access_token": "a", "token_type": "mac"}'),
    (200, b'{"access_token": "a", "expires_in": -1}'),
    (200, b'{"access_token": "a", "expires_in": NaN}'),
    (200, b'{"access_token": "a", "expires_in": true}'),
    (400, b'{"error": 7}'), (200, b"\xff\xfe"), (200, b"[" * 100_000),
])
def test_token_response_nonsense_is_data_error(status: int, body: bytes) -> None:
    """Anything that is neither a token nor an error code, including a token with blanks or
    CR LF that would reach the SMTP command line, is our DataError."""
    with pytest.raises(DataError):
        parse_token_response(status, body, 0.0)


def test_device_authorization_microsoft_and_google_spellings() -> None:
    """The device authorization answer gives code, address, lifetime and interval; Google's
    verification_url is read like verification_uri; interval defaults to 5 s."""
    microsoft = parse_device_authorization(200, json.dumps({
        "device_code": "dc", "user_code": "ABC", "verification_uri":
        "https://microsoft.com/devicelogin", "expires_in": 900, "interval": 5}).encode())
    assert isinstance(microsoft, DeviceAuthorization)
    assert (microsoft.verification_uri, microsoft.expires_in, microsoft.interval) == (
        "https://microsoft.com/devicelogin", 900, 5)
    assert "dc" not in repr(microsoft).replace("device_code", "")
    google = parse_device_authorization(200, json.dumps({
        "device_code": "dc", "user_code": "ABC", "verification_url":
        "https://www.google.com/device", "expires_in": 1800}).encode())
    assert isinstance(google, DeviceAuthorization)
    assert (google.verification_uri, google.interval) == ("https://www.google.com/device", 5)


def test_device_authorization_refuses_a_plain_http_or_control_character_address() -> None:
    """A verification address that is not https, or holds control characters (terminal
    escapes), is a DataError, never printed."""
    for uri in ("http://evil.test/", "https://x.test/\x1b[2J"):
        body = json.dumps({"device_code": "d", "user_code": "u", "verification_uri": uri,
                           "expires_in": 9}).encode()
        with pytest.raises(DataError):
            parse_device_authorization(200, body)


def test_invalid_grant_defers_with_the_login_hint() -> None:
    """A refused refresh (invalid_grant) is a TempFailure that says to run
    `dma oauth2 login ACCOUNT`."""
    error = refusal_error("office", Refused("invalid_grant", "revoked"))
    assert isinstance(error, TempFailure)
    assert "`dma oauth2 login office`" in str(error)
    assert "invalid_grant" in str(error)


def test_gmail_scope_refused_in_the_device_flow_says_why() -> None:
    """Google's invalid_scope for the Gmail scope in the device flow explains that Google
    allows no such scope there, and what to do instead."""
    settings = OAuth2Settings("gmail", client_id="c", refresh_token_file="/r", provider="google")
    error = device_refusal(settings, endpoints(settings), Refused("invalid_scope"))
    assert "Google does not allow the Gmail scope" in str(error)


# --- core: polling and the cache --------------------------------------------------------------


def test_polling_steps() -> None:
    """authorization_pending keeps the interval, slow_down adds 5 s for good, a grant ends it,
    expired_token and access_denied end it with our errors, the deadline too."""
    polling = Polling("dc", 2, 100.0)
    assert next_poll("o", polling, Refused("authorization_pending"), 10.0) == polling
    slower = next_poll("o", polling, Refused("slow_down"), 10.0)
    assert isinstance(slower, Polling) and slower.interval == 7
    assert next_poll("o", slower, Refused("authorization_pending"), 20.0) == slower
    granted = Granted("at", 200.0, "rt")
    assert next_poll("o", polling, granted, 10.0) is granted
    with pytest.raises(TempFailure, match="expired"):
        next_poll("o", polling, Refused("expired_token"), 10.0)
    with pytest.raises(UnavailableError, match="declined"):
        next_poll("o", polling, Refused("access_denied"), 10.0)
    with pytest.raises(UnavailableError, match="declined"):
        next_poll("o", polling, Refused("authorization_declined"), 10.0)
    with pytest.raises(TempFailure, match="expired"):
        next_poll("o", polling, Refused("authorization_pending"), 99.0)
    with pytest.raises(ConfigError, match="no refresh token"):
        next_poll("o", polling, Granted("at", 200.0, None), 10.0)


def test_cached_token_is_used_until_the_margin_before_expiry() -> None:
    """A cached token is usable until expires_at - 300 s, and only for the endpoint, client
    and scope it was issued for."""
    settings = OAuth2Settings("o", client_id="c", refresh_token_file="/r",
                              token_url="https://idp.test/t", scope="s")
    where = endpoints(settings)
    cached = cache_entry(settings, where, Granted("at", 10_000.0))
    assert parse_cache(render_cache(cached)) == cached
    assert CACHE_MARGIN == 300
    assert usable(cached, settings, where, 10_000.0 - 301)
    assert not usable(cached, settings, where, 10_000.0 - 300)
    other = OAuth2Settings("o", client_id="other", refresh_token_file="/r",
                           token_url="https://idp.test/t", scope="s")
    assert not usable(cached, other, endpoints(other), 0.0)
    assert "at" not in repr(cached).replace("access_token", "").replace("expires_at", "")
    assert isinstance(cached, CachedToken)


# --- adapter: refresh against the fake server -------------------------------------------------


def test_first_refresh_then_cached_token_reused(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The first run refreshes once (the RFC 6749 form over verified HTTPS) and caches the
    token 0600; the same run and the next run use it without asking again."""
    settings = signed_in(server, tmp_path)
    clock = Clock()
    log, sink = logger()
    first = AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log)
    token = first.token(settings)
    assert token == server.state.issued[-1] and token.startswith("access-")
    assert first.token(settings) == token
    seen = server.state.seen
    assert len(seen) == 1 and seen[0].path == "/token"
    assert seen[0].content_type == "application/x-www-form-urlencoded"
    assert seen[0].form == {
        "grant_type": "refresh_token", "refresh_token": sorted(server.state.refresh_tokens)[0],
        "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scope": SCOPE}
    cache = Path(settings.cache_file or "")
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    clock.now += 3600 - CACHE_MARGIN - 1
    assert AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log).token(settings) == token
    assert len(server.state.seen) == 1
    assert any("oauth2 access token refreshed" in line and "account=office" in line
               for line in sink.lines)
    assert_no_secrets(server, tmp_path, outputs(capfd, sink), token_files(settings))


def test_expired_cache_refreshes_again(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Once the cached token is within the margin of its expiry, the next run refreshes and
    caches the new token."""
    settings = signed_in(server, tmp_path)
    clock = Clock()
    log, sink = logger()
    old = AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log).token(settings)
    clock.now += 3600 - CACHE_MARGIN
    new = AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log).token(settings)
    assert new != old and len(server.state.seen) == 2
    cached = parse_cache(Path(settings.cache_file or "").read_bytes())
    assert cached.access_token == new and cached.expires_at == clock.now + 3600
    assert_no_secrets(server, tmp_path, outputs(capfd, sink), token_files(settings))


def test_token_without_expiry_is_kept_for_the_run_only(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A token the server gave no lifetime is used for the rest of the run (one refresh) and
    not cached for the next run."""
    server.state.expires_in = None
    settings = signed_in(server, tmp_path)
    tokens = AccessTokens(cafile=tls_certs.ca_file, clock=Clock())
    assert tokens.token(settings) == tokens.token(settings)
    assert len(server.state.seen) == 1
    assert not Path(settings.cache_file or "").exists()
    assert_no_secrets(server, tmp_path, list(capfd.readouterr()), token_files(settings))


def test_rotated_refresh_token_replaces_the_file_keeping_its_owner(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A rotated refresh token replaces the file atomically, 0600 and with the owner it had
    (root rewriting the delivery user's file), and the next refresh sends it."""
    server.state.rotate = True
    settings = signed_in(server, tmp_path)
    path = Path(settings.refresh_token_file or "")
    os.chown(path, NOBODY, NOBODY)
    clock = Clock()
    log, sink = logger()
    AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log).token(settings)
    rotated = path.read_text().strip()
    assert rotated == server.state.issued[-1] and rotated.startswith("refresh-")
    status = path.stat()
    assert (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid) == (0o600, NOBODY, NOBODY)
    assert sorted(p.name for p in path.parent.iterdir()) == ["office.refresh",
                                                             "office.refresh.access"]
    clock.now += 3600
    AccessTokens(cafile=tls_certs.ca_file, clock=clock, log=log).token(settings)
    assert server.state.seen[-1].form["refresh_token"] == rotated
    assert any("rotated=yes" in line for line in sink.lines)
    assert_no_secrets(server, tmp_path, outputs(capfd, sink), token_files(settings))


def test_revoked_refresh_token_defers_with_login_hint_once_per_run(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """invalid_grant is a TempFailure (the mail defers) saying to run `dma oauth2 login
    office`, logged once; the same run asks the server no second time."""
    settings = signed_in(server, tmp_path)
    server.state.refresh_tokens.clear()
    server.state.refresh_tokens.add("some-other-token")
    log, sink = logger()
    tokens = AccessTokens(cafile=tls_certs.ca_file, clock=Clock(), log=log)
    errors = []
    for _ in range(3):
        with pytest.raises(TempFailure) as caught:
            tokens.token(settings)
        errors.append(caught.value)
    assert len(server.state.seen) == 1
    assert all("run `dma oauth2 login office`" in str(e) for e in errors)
    assert [line for line in sink.lines if "refresh refused" in line and "invalid_grant" in line]
    texts = [text for e in errors for text in error_texts(e)]
    assert_no_secrets(server, tmp_path, texts + outputs(capfd, sink), token_files(settings))


def test_refresh_token_echoed_by_the_server_is_hidden(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A server whose error description repeats the refresh token we sent does not get it
    into our error or log."""
    settings = signed_in(server, tmp_path)
    presented = next(iter(server.state.refresh_tokens))
    server.state.refresh_tokens.clear()
    server.state.echo_secrets = True
    log, sink = logger()
    with pytest.raises(TempFailure) as caught:
        AccessTokens(cafile=tls_certs.ca_file, clock=Clock(), log=log).token(settings)
    assert "<secret hidden>" in str(caught.value)
    server.state.refresh_tokens.add(presented)  # searched for too
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + outputs(capfd, sink),
                      token_files(settings))


def test_missing_refresh_token_file_defers_with_login_hint(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """No refresh token file yet: TempFailure naming the file and `dma oauth2 login`, and
    nothing sent."""
    settings = account(server, tmp_path)
    with pytest.raises(TempFailure) as caught:
        AccessTokens(cafile=tls_certs.ca_file, clock=Clock()).token(settings)
    assert "no refresh token in" in str(caught.value)
    assert "dma oauth2 login office" in str(caught.value)
    assert server.state.seen == []
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + list(capfd.readouterr()),
                      set())


def test_endpoint_down_defers(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A token endpoint where nothing listens is a TempFailure (defer), remembered for the run."""
    settings = signed_in(server, tmp_path,
                         token_url=f"https://localhost:{closed_port()}/token")
    log, sink = logger()
    tokens = AccessTokens(cafile=tls_certs.ca_file, clock=Clock(), log=log, timeout=5)
    with pytest.raises(TempFailure) as caught:
        tokens.token(settings)
    assert "Connection refused" in str(caught.value)
    with pytest.raises(TempFailure):
        tokens.token(settings)
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + outputs(capfd, sink),
                      token_files(settings))


def test_untrusted_certificate_is_refused_before_anything_is_sent(
    tls_certs: TlsCerts, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    """A token endpoint whose certificate our CAFILE does not trust gets no request (no
    refresh token, no client secret): TempFailure saying the certificate was not accepted."""
    rogue = FakeOAuth2Server(tls_certs.server_context(trusted=False))
    try:
        settings = signed_in(rogue, tmp_path)
        log, sink = logger()
        with pytest.raises(TempFailure) as caught:
            AccessTokens(cafile=tls_certs.ca_file, clock=Clock(), log=log).token(settings)
        assert "certificate not accepted" in str(caught.value)
        assert rogue.state.seen == []
        assert_no_secrets(rogue, tmp_path, error_texts(caught.value) + outputs(capfd, sink),
                          token_files(settings))
    finally:
        rogue.close()


def test_redirect_is_not_followed(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A token endpoint answering 307 to plain http is an error; the form is not sent again."""
    settings = signed_in(server, tmp_path, token_url=server.url("/redirect"))
    with pytest.raises(TempFailure, match="redirect") as caught:
        AccessTokens(cafile=tls_certs.ca_file, clock=Clock()).token(settings)
    assert [seen.path for seen in server.state.seen] == ["/redirect"]
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + list(capfd.readouterr()),
                      token_files(settings))


def test_nonsense_answer_defers(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An HTML answer from the token endpoint is a TempFailure, not a crash."""
    settings = signed_in(server, tmp_path, token_url=server.url("/garbage"))
    with pytest.raises(TempFailure, match="not JSON") as caught:
        AccessTokens(cafile=tls_certs.ca_file, clock=Clock()).token(settings)
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + list(capfd.readouterr()),
                      token_files(settings))


def test_threads_of_one_run_share_one_refresh(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Eight hops asking for the same account's token at once cause one refresh."""
    settings = signed_in(server, tmp_path)
    tokens = AccessTokens(cafile=tls_certs.ca_file, clock=Clock())
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(tokens.token(settings)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(got)) == 1 and len(got) == 8
    assert len(server.state.seen) == 1
    assert_no_secrets(server, tmp_path, list(capfd.readouterr()), token_files(settings))


def test_a_refresh_by_another_process_meanwhile_is_used(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
) -> None:
    """While another process holds the account's directory lock, a run waits; when that
    process has cached a fresh token, the run uses it instead of refreshing again."""
    import fcntl
    import time

    settings = signed_in(server, tmp_path)
    directory = os.open(str(tmp_path / "oauth2"), os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(directory, fcntl.LOCK_EX)
    clock = Clock()
    got: list[str] = []
    worker = threading.Thread(target=lambda: got.append(
        AccessTokens(cafile=tls_certs.ca_file, clock=clock).token(settings)))
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive() and got == []
    other = cache_entry(settings, endpoints(settings), Granted("from-the-other", clock.now + 3600))
    write_secret_file(settings.cache_file or "", render_cache(other))
    os.close(directory)  # the other process is done
    worker.join(10)
    assert got == ["from-the-other"]
    assert server.state.seen == []


# --- token_command ----------------------------------------------------------------------------


def test_token_command_first_line_once_per_run(tmp_path: Path) -> None:
    """token_command runs without a shell and its first stdout line is the token; a second
    call in the same run does not run it again."""
    counter = tmp_path / "runs"
    script = (f"open({str(counter)!r}, 'a').write('x'); "
              "print('tok-ABC.def'); print('second line')")
    settings = OAuth2Settings("office", token_command=(sys.executable, "-c", script))
    tokens = AccessTokens(clock=Clock())
    assert tokens.token(settings) == "tok-ABC.def"
    assert tokens.token(settings) == "tok-ABC.def"
    assert counter.read_text() == "x"


def test_token_command_failure_names_status_and_first_stderr_line_not_output(
    tmp_path: Path,
) -> None:
    """A failing token_command is a TempFailure with its exit status and first stderr line,
    never what it printed on stdout."""
    script = tmp_path / "helper.py"
    script.write_text("import sys\nprint('tok-leaked')\n"
                      "sys.stderr.write('gpg: decryption failed\\nmore\\n')\nsys.exit(2)\n")
    with pytest.raises(TempFailure) as caught:
        run_token_command("office", [sys.executable, str(script)])
    text = str(caught.value)
    assert "exit status 2" in text and "gpg: decryption failed" in text
    assert "tok-leaked" not in text and "more" not in text


def test_token_command_timeout_and_missing_program() -> None:
    """A token_command that hangs is killed after its timeout; a missing program says it
    cannot run; both defer."""
    with pytest.raises(TempFailure, match=r"did not finish within 0\.5s"):
        run_token_command("office", [sys.executable, "-c", "import time; time.sleep(30)"],
                          timeout=0.5)
    with pytest.raises(TempFailure, match="no such program"):
        run_token_command("office", ["/nonexistent/token-helper"])


def test_token_command_line_that_is_no_token_is_refused_unshown() -> None:
    """A first line with blanks or control characters (it would reach the SMTP command
    line) is refused without being shown."""
    script = "print('tok en\\x1b[2J')"
    with pytest.raises(TempFailure) as caught:
        run_token_command("office", [sys.executable, "-c", script])
    assert "is no access token" in str(caught.value)
    assert "tok en" not in str(caught.value).replace(script, "")


def test_token_command_huge_output_is_refused() -> None:
    """A token_command that prints without end is stopped and refused."""
    script = "import sys\nwhile True: sys.stdout.write('x' * 65536)"
    with pytest.raises(TempFailure, match="printed more than"):
        run_token_command("office", [sys.executable, "-c", script], timeout=10)


# --- dma oauth2 login: the device flow --------------------------------------------------------


def test_device_flow_pending_slow_down_success(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The login prints the address and the user code, polls at the server's interval, 5 s
    slower after slow_down, and stores the refresh token and the first access token 0600
    in a directory it makes 0700."""
    server.state.device_script = ["pending", "slow_down", "success"]
    settings = account(server, tmp_path / "oauth2")
    out = io.StringIO()
    clock = Clock()
    login(settings, cafile=tls_certs.ca_file, out=out, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [1, 1, 6]
    text = out.getvalue()
    assert "https://login.example.test/device" in text and USER_CODE in text
    assert "Signed in" in text
    refresh = Path(settings.refresh_token_file or "")
    assert refresh.read_text().strip() == sorted(server.state.refresh_tokens)[0]
    assert stat.S_IMODE(refresh.stat().st_mode) == 0o600
    assert stat.S_IMODE(refresh.parent.stat().st_mode) == 0o700
    cached = parse_cache(Path(settings.cache_file or "").read_bytes())
    assert cached.access_token == server.state.issued[-1]
    paths = [seen.path for seen in server.state.seen]
    assert paths == ["/devicecode", "/token", "/token", "/token"]
    assert server.state.seen[1].form["grant_type"] == DEVICE_GRANT
    # the first delivery uses the cached token: no refresh
    first = AccessTokens(cafile=tls_certs.ca_file, clock=clock).token(settings)
    assert first == cached.access_token
    assert len(server.state.seen) == 4
    assert_no_secrets(server, tmp_path, [text, *capfd.readouterr()], token_files(settings))


@pytest.mark.parametrize(("script", "error", "words"), [
    (["pending", "expired"], TempFailure, "expired before the sign-in"),
    (["denied"], UnavailableError, "declined"),
])
def test_device_flow_expired_or_denied(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], script: list[str], error: type[DmaError], words: str,
) -> None:
    """expired_token ends the login with a TempFailure (run it again), access_denied with an
    UnavailableError; nothing is stored."""
    server.state.device_script = script
    settings = account(server, tmp_path / "oauth2")
    out = io.StringIO()
    clock = Clock()
    with pytest.raises(error) as caught:
        login(settings, cafile=tls_certs.ca_file, out=out, clock=clock, sleep=clock.sleep)
    assert words in str(caught.value)
    assert not Path(settings.refresh_token_file or "").exists()
    assert_no_secrets(server, tmp_path,
                      [out.getvalue(), *error_texts(caught.value), *capfd.readouterr()], set())


def test_device_flow_stops_at_its_deadline(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A code that nobody enters is given up when its lifetime is over, without a poll
    after the deadline."""
    server.state.device_expires_in = 3
    settings = account(server, tmp_path / "oauth2")
    clock = Clock()
    out = io.StringIO()
    with pytest.raises(TempFailure, match="expired") as caught:
        login(settings, cafile=tls_certs.ca_file, out=out, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [1, 1, 1]
    assert [seen.path for seen in server.state.seen].count("/token") == 3
    assert_no_secrets(server, tmp_path, [out.getvalue(), *error_texts(caught.value),
                                         *capfd.readouterr()], set())


def test_device_flow_gmail_scope_refusal(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A device endpoint that refuses the scope (as Google does for Gmail) ends the login
    with the server's error code and what to do."""
    server.state.device_error = "invalid_scope"
    settings = account(server, tmp_path / "oauth2")
    with pytest.raises(UnavailableError) as caught:
        login(settings, cafile=tls_certs.ca_file, out=io.StringIO(), clock=Clock(),
              sleep=Clock().sleep)
    assert "invalid_scope" in str(caught.value)
    assert_no_secrets(server, tmp_path, error_texts(caught.value) + list(capfd.readouterr()),
                      set())


def test_system_mode_login_gives_the_tokens_to_the_delivery_user(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Run as root with a delivery user, the login makes the directory and both token files
    the delivery user's (0700, 0600); a directory of another owner is refused up front."""
    server.state.device_script = ["success"]
    owner = (NOBODY, NOBODY)
    settings = account(server, tmp_path / "oauth2")
    clock = Clock()
    out = io.StringIO()
    login(settings, cafile=tls_certs.ca_file, owner=owner, owner_name="nobody",
          out=out, clock=clock, sleep=clock.sleep)
    assert "owner nobody, mode 0600" in out.getvalue()
    for path, mode in ((tmp_path / "oauth2", 0o700),
                       (Path(settings.refresh_token_file or ""), 0o600),
                       (Path(settings.cache_file or ""), 0o600)):
        status = path.stat()
        assert (stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid) == (mode, *owner)
    rooted = account(server, tmp_path)  # tmp_path itself belongs to root
    with pytest.raises(ConfigError, match="cannot replace files in") as caught:
        login(rooted, cafile=tls_certs.ca_file, owner=owner, out=out,
              clock=clock, sleep=clock.sleep)
    assert_no_secrets(server, tmp_path, [out.getvalue(), *error_texts(caught.value),
                                         *capfd.readouterr()], token_files(settings))


def test_delivery_user_refreshes_and_rotates_in_the_directory_login_made(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """After a system-mode login, a process running as the delivery user (here nobody)
    reads the refresh token, refreshes, and replaces both token files itself."""
    import tempfile

    server.state.device_script = ["success"]
    server.state.rotate = True
    base = Path(tempfile.mkdtemp(prefix="dma-oauth2-"))
    try:
        base.chmod(0o711)
        cafile = base / "ca.pem"
        cafile.write_bytes(Path(tls_certs.ca_file).read_bytes())
        cafile.chmod(0o644)
        settings = account(server, base / "oauth2")
        clock = Clock()
        login(settings, cafile=str(cafile), owner=(NOBODY, NOBODY), out=io.StringIO(),
              clock=clock, sleep=clock.sleep)
        clock.now += 3600
        code = _as_nobody(lambda: AccessTokens(cafile=str(cafile), clock=clock).token(settings))
        assert code == server.state.issued[-2]  # the access token, then the rotated refresh
        refresh = Path(settings.refresh_token_file or "")
        assert refresh.read_text().strip() == server.state.issued[-1]
        assert refresh.stat().st_uid == NOBODY
        assert parse_cache(Path(settings.cache_file or "").read_bytes()).access_token == code
        assert_no_secrets(server, base, list(capfd.readouterr()), token_files(settings))
    finally:
        import shutil

        shutil.rmtree(base)


def _as_nobody(work: Any) -> str:
    """Run ``work`` in a child that has become nobody for good; its result or its error."""
    import http.client  # noqa: F401 (loaded before the child loses root's files)
    import selectors  # noqa: F401
    import ssl  # noqa: F401
    import urllib.parse  # noqa: F401

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            result = "ok " + work()
        except BaseException as error:
            result = f"error {type(error).__name__}: {error}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        result = pipe.read().decode()
    os.waitpid(pid, 0)
    assert result.startswith("ok "), result
    return result[3:]


def test_login_usage_errors(capfd: pytest.CaptureFixture[str]) -> None:
    """`dma oauth2` with anything but `login ACCOUNT` is a usage error (64) saying the usage."""
    for argv in ([], ["login"], ["logout", "x"], ["login", "a", "b"], ["login", "-x"]):
        assert oauth2_main(argv) == 64
        assert "usage: dma oauth2 login ACCOUNT" in capfd.readouterr().err


def test_login_refuses_a_token_command_account(tmp_path: Path) -> None:
    """An account whose tokens come from token_command has nothing to sign in to."""
    settings = OAuth2Settings("office", token_command=("helper",))
    with pytest.raises(DmaError, match="token_command"):
        login(settings, out=io.StringIO())


# --- dma oauth2 login ACCOUNT through dma.conf and the ACCOUNTS file ------------------------


def write_site(server: FakeOAuth2Server, tls_certs: TlsCerts, root: Path, accounts: str) -> Path:
    """A dma.conf naming CAFILE and an ACCOUNTS file with ``accounts``; its path."""
    (root / "accounts.toml").write_text(accounts)
    (root / "accounts.toml").chmod(0o600)
    config = root / "dma.conf"
    config.write_text(f"SPOOLDIR {root / 'spool'}\nCAFILE {tls_certs.ca_file}\n"
                      f"ACCOUNTS {root / 'accounts.toml'}\n")
    return config


def office_toml(server: FakeOAuth2Server) -> str:
    return f"""
[accounts.office]
host = "smtp.office365.com"
login = "alerts@example.com"
auth = "xoauth2"

[accounts.office.oauth2]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
token_url = "{server.url('/token')}"
device_url = "{server.url('/devicecode')}"
scope = "{SCOPE}"
refresh_token_file = "oauth2/office.refresh"
"""


def test_login_command_reads_the_account_and_stores_its_token(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dma oauth2 login office` finds the account in dma.conf's ACCOUNTS file, trusts
    dma.conf's CAFILE, prints the code, and stores the refresh token where the account
    says (relative to the accounts file); delivery then gets the token through
    adapters/secrets without a refresh."""
    from dma.adapters.secrets import Secrets
    from dma.adapters.system import environment
    from dma.shell.settings import load_accounts, load_settings

    server.state.device_script = ["success"]
    monkeypatch.setenv("DMA_CONF", str(write_site(server, tls_certs, tmp_path,
                                                  office_toml(server))))
    assert oauth2_main(["login", "office"]) == 0
    out, err = capfd.readouterr()
    assert USER_CODE in out and "Signed in" in out and err == ""
    refresh = tmp_path / "oauth2" / "office.refresh"
    assert refresh.read_text().strip() in server.state.refresh_tokens
    accounts = load_accounts(load_settings(None, environment()))
    assert accounts is not None
    tokens = AccessTokens(cafile=tls_certs.ca_file)
    credentials = Secrets(oauth2_token=tokens.account_token).credentials(
        accounts.accounts["office"])
    assert credentials is not None and credentials.kind == "oauth2"
    assert credentials.secret == server.state.issued[-1]
    assert [seen.path for seen in server.state.seen] == ["/devicecode", "/token"]
    oauth2 = accounts.accounts["office"].oauth2
    assert oauth2 is not None
    settings = settings_for("office", oauth2)
    assert_no_secrets(server, tmp_path, [out, err, repr(credentials)], token_files(settings)
                      | {tmp_path / "accounts.toml"})


@pytest.mark.parametrize(("accounts", "words"), [
    (None, "ACCOUNTS is not set"),
    ("[accounts.other]\nhost = 'smtp.example.com'\n", "no account 'office'"),
    ("[accounts.office]\nhost = 'smtp.example.com'\n", "has no oauth2 table"),
])
def test_login_command_without_such_an_oauth2_account(
    server: FakeOAuth2Server, tls_certs: TlsCerts, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    accounts: str | None, words: str,
) -> None:
    """No ACCOUNTS key, no such account, or an account without oauth2: exit 78 saying so,
    and nothing asked of any server."""
    config = write_site(server, tls_certs, tmp_path, accounts or "")
    if accounts is None:
        config.write_text(f"SPOOLDIR {tmp_path / 'spool'}\n")
    monkeypatch.setenv("DMA_CONF", str(config))
    assert oauth2_main(["login", "office"]) == 78
    assert words in capfd.readouterr().err
    assert server.state.seen == []
