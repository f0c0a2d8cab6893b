"""OAuth2 end to end (SPEC 2.4, 5.6): a sender routed to an OAuth2 account is delivered
with XOAUTH2, the access token refreshed from a fake HTTPS token endpoint once and
cached for the next run; a revoked refresh token defers with the `dma oauth2 login` hint."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DmaSite
from oauth2_server import CLIENT_ID, CLIENT_SECRET, FakeOAuth2Server
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    TOKEN,
    AiosmtpdSink,
    aiosmtpd_sink_fixture,
    write_remote_config,
)
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.adapters.oauth2 import write_secret_file

SinkFactory = Callable[..., AiosmtpdSink]
MESSAGE = b"Subject: via office\n\nhello\n"


@pytest.fixture
def server(tls_certs: TlsCerts) -> Iterator[FakeOAuth2Server]:
    fake = FakeOAuth2Server(tls_certs.server_context())
    issued = fake.state.issued

    def new_token(prefix: str) -> str:  # the access token is the one the sink accepts
        token = TOKEN if prefix.startswith("access") else f"{prefix}-refresh-{len(issued)}"
        issued.append(token)
        return token

    fake.state.new_token = new_token  # type: ignore[method-assign]
    yield fake
    fake.close()


def _setup(site: DmaSite, sink: AiosmtpdSink, server: FakeOAuth2Server,
           tls_certs: TlsCerts) -> tuple[Path, str]:
    """dma.conf (CAFILE for the token endpoint, INSECURE for XOAUTH2 in plain text on
    loopback), accounts.toml with the office account, its refresh token file."""
    tokens = site.root / "oauth2"
    tokens.mkdir(mode=0o700)
    refresh = "refresh-initial-known"
    server.state.refresh_tokens.add(refresh)
    write_secret_file(str(tokens / "office.refresh"), refresh.encode() + b"\n")
    accounts = site.root / "accounts.toml"
    accounts.write_text(f"""
[accounts.office]
host = "127.0.0.1"
port = {sink.port}
tls = "none"
login = "{LOGIN}"
auth = "xoauth2"

[accounts.office.oauth2]
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
token_url = "{server.url('/token')}"
device_url = "{server.url('/devicecode')}"
scope = "https://outlook.office.com/SMTP.Send offline_access"
refresh_token_file = "{tokens / 'office.refresh'}"

[routes]
"@office.example" = "office"
""")
    accounts.chmod(0o600)
    extra = f"ACCOUNTS {accounts}\nCAFILE {tls_certs.ca_file}\nINSECURE\n"
    write_remote_config(site, 9, extra, defer=True)
    return tokens, refresh


def _said(site: DmaSite, stderr: bytes) -> bytes:
    spool = b"".join(p.read_bytes() for p in site.spool.rglob("*") if p.is_file())
    return stderr + spool + site.run(["-bj"]).stdout + site.run([], program="mailq").stdout


def _assert_nowhere(said: bytes, *secrets: str) -> None:
    for secret in secrets:
        for form in (secret.encode(), base64.b64encode(secret.encode())):
            assert form not in said, secret


def test_oauth2_account_delivers_with_xoauth2_and_reuses_the_cached_token(
    site: DmaSite, aiosmtpd_sink: SinkFactory, server: FakeOAuth2Server, tls_certs: TlsCerts
) -> None:
    """First run: one refresh grant, XOAUTH2 with the new token, delivered. Second run:
    the cached token, no second request. No token, refresh token or client secret in
    the -v trace, the spool or the listings."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=("XOAUTH2",))
    _tokens, refresh = _setup(site, sink, server, tls_certs)
    site.send(["-f", "boss@office.example", "a@example.org"], MESSAGE)
    first = site.run(["-q", "-v"], timeout=60)
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    (arrival,) = sink.wait_for(1)
    assert (arrival.sender, arrival.login) == ("boss@office.example", LOGIN)
    assert sink.handler.auth_mechanisms == ["XOAUTH2"]
    assert [seen.form["grant_type"] for seen in server.state.seen] == ["refresh_token"]
    site.send(["-f", "boss@office.example", "b@example.org"], MESSAGE)
    second = site.run(["-q", "-v"], timeout=60)
    assert second.returncode == 0, second.stderr.decode(errors="replace")
    sink.wait_for(2)
    assert len(server.state.seen) == 1  # the cached token, not a second refresh
    assert site.queue() == []
    _assert_nowhere(_said(site, first.stderr + second.stderr), TOKEN, refresh, CLIENT_SECRET)


def test_a_revoked_refresh_token_defers_with_the_login_hint(
    site: DmaSite, aiosmtpd_sink: SinkFactory, server: FakeOAuth2Server, tls_certs: TlsCerts
) -> None:
    """The token endpoint answers invalid_grant: the mail stays queued, its last error
    says to run `dma oauth2 login office`, and nothing was sent to the smarthost."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False, sasl=("XOAUTH2",))
    _tokens, refresh = _setup(site, sink, server, tls_certs)
    server.state.refresh_tokens.clear()  # revoked
    site.send(["-f", "boss@office.example", "a@example.org"], MESSAGE)
    done = site.run(["-q"], timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (left,) = site.queue()
    assert "dma oauth2 login office" in str(left["last_error"])
    assert sink.messages == []
    _assert_nowhere(_said(site, done.stderr), refresh, CLIENT_SECRET)
