"""TLS and AUTH to a smarthost end to end: ``sendmail -D`` against aiosmtpd on loopback.

Certificates come from trustme (``tls_certs``): a trusted CA named by CAFILE and
a rogue one.  Each test checks what arrived (and whether over TLS, as whom), what
stayed queued with which X-Last-Error, what ``mailq`` says, and that secrets
never reach stderr (SPEC 5.5, 5.6, 6, 7).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    PASSWORD,
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    b64,
    bounces,
    free_port,
    q_fields,
    scripted_sink_fixture,
    write_auth,
    write_remote_config,
)
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.adapters.net import format_fingerprint

MESSAGE = b"Subject: secure\n\nover the wire\n"
RECIPIENT = "bob@example.org"
SinkFactory = Callable[..., AiosmtpdSink]


def _send(site: DmaSite, *options: str) -> tuple[int, str]:
    """Submit MESSAGE with -D (and ``options``); return the exit code and stderr."""
    done = site.run(["-D", *options, RECIPIENT], MESSAGE, program="sendmail", timeout=30)
    return done.returncode, done.stderr.decode(errors="replace")


def _deferred_with(site: DmaSite, *words: str) -> str:
    """Check the one queued item was tried once and its error has ``words``; return the error."""
    [item] = site.queue()
    assert item["attempts"] == 1
    error = str(item["last_error"])
    for word in words:
        assert word.lower() in error.lower(), error
    assert q_fields(site, item["id"])["X-Last-Error"] == error
    mailq = site.run([], program="mailq")
    assert mailq.returncode == 0
    assert f"Error\t: {error[:60]}" in mailq.stdout.decode()
    assert bounces(site) == []
    return error


# --- TLS ----------------------------------------------------------------------------------


def test_starttls_delivers_over_tls(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """SECURETRANSFER + STARTTLS with CAFILE upgrades the session and delivers over TLS."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), require_starttls=True)
    write_remote_config(
        site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.tls
    assert arrival.recipients == [RECIPIENT]
    assert ">>> STARTTLS" in stderr
    assert sink.handler.ehlo_count == 2  # EHLO again after the handshake
    assert site.queue() == []


def test_implicit_tls_delivers(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """SECURETRANSFER alone speaks TLS from the first byte (port 465 style)."""
    sink = aiosmtpd_sink(implicit=tls_certs.server_context())
    write_remote_config(site, sink.port, f"SECURETRANSFER\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.tls
    assert "STARTTLS" not in stderr
    assert site.queue() == []


def test_wrong_host_name_fails_verification(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """A trusted certificate that does not name the smarthost (127.0.0.2) defers the item."""
    sink = aiosmtpd_sink("127.0.0.2", starttls=tls_certs.server_context())
    write_remote_config(site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n",
                        host="127.0.0.2")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.messages == []
    assert sink.handler.mail_commands == 0
    _deferred_with(site, "certificate")


def test_untrusted_ca_fails_verification(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """A server certificate from a CA that CAFILE does not hold defers the item."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(trusted=False))
    write_remote_config(site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.messages == []
    assert sink.handler.mail_commands == 0
    _deferred_with(site, "certificate")


def test_untrusted_implicit_tls_fails_verification(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """Implicit TLS to a server with a rogue certificate defers; nothing is sent."""
    sink = aiosmtpd_sink(implicit=tls_certs.server_context(trusted=False))
    write_remote_config(site, sink.port, f"SECURETRANSFER\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.messages == []
    _deferred_with(site, "certificate")


def test_noverifycert_accepts_untrusted_server(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """NOVERIFYCERT connects to a server whose CA nobody trusts and delivers over TLS."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(trusted=False), require_starttls=True)
    write_remote_config(
        site, sink.port, f"SECURETRANSFER\nSTARTTLS\nNOVERIFYCERT\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.tls


def test_fingerprint_pins_untrusted_certificate(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """FINGERPRINT with the server's hash delivers though its CA is not trusted."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(trusted=False), require_starttls=True)
    pin = format_fingerprint(tls_certs.fingerprint(trusted=False))
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\nFINGERPRINT {pin}\n")
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.tls


def test_wrong_fingerprint_defers(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """FINGERPRINT that does not match the server defers, even when its CA is trusted."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context())
    wrong = tls_certs.fingerprint(trusted=False).hex()
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\nFINGERPRINT {wrong}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.messages == []
    assert sink.handler.mail_commands == 0
    _deferred_with(site, "fingerprint")


def test_opportunistic_tls_continues_in_plain_text(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """OPPORTUNISTIC_TLS delivers in plain text to a server that offers no STARTTLS."""
    sink = aiosmtpd_sink()
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert not arrival.tls


def test_mandatory_starttls_without_offer_defers(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """Without OPPORTUNISTIC_TLS a server that offers no STARTTLS gets nothing: deferred."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.messages == []
    assert sink.handler.mail_commands == 0
    _deferred_with(site, "STARTTLS")


def _tls_1_0_sink(aiosmtpd_sink: SinkFactory, certs: TlsCerts) -> AiosmtpdSink:
    """aiosmtpd offering STARTTLS with TLS 1.0 at most: our handshake (TLS 1.2+) fails."""
    try:
        old = certs.server_context(max_version=ssl.TLSVersion.TLSv1)
    except (ssl.SSLError, ValueError):
        pytest.skip("the local OpenSSL cannot offer TLS 1.0")
    return aiosmtpd_sink(starttls=old)


def test_opportunistic_tls_falls_back_after_a_failed_handshake(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """OPPORTUNISTIC_TLS: a STARTTLS handshake that fails is followed by one plain connection."""
    sink = _tls_1_0_sink(aiosmtpd_sink, tls_certs)
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert not arrival.tls
    assert sink.handler.ehlo_count == 2  # once per connection
    assert stderr.count(">>> STARTTLS") == 1
    assert "TLS handshake failed; reconnecting" in stderr
    assert site.queue() == []


def test_opportunistic_fallback_after_a_hang_up_in_the_handshake(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """A server that answers STARTTLS with 220 and then no TLS: the second connection is plain."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "STARTTLS"), broken_starttls=True))
    write_remote_config(site, sink.port, "SECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\n")
    code, stderr = _send(site)
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == [RECIPIENT]
    first, second = sink.connections
    assert first.commands == ["EHLO dma.test", "STARTTLS"]
    assert "STARTTLS" not in second.commands and second.commands[-1] == "QUIT"


def test_mandatory_tls_defers_after_a_failed_handshake(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink], tls_certs: TlsCerts
) -> None:
    """Without OPPORTUNISTIC_TLS a failed STARTTLS handshake defers: no plain reconnection."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "STARTTLS"), broken_starttls=True))
    write_remote_config(site, sink.port, f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert len(sink.connections) == 1 and sink.messages == []
    _deferred_with(site, "TLS handshake")


def test_opportunistic_tls_never_falls_back_after_a_refused_certificate(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """OPPORTUNISTIC_TLS with a FINGERPRINT that does not match defers: no plain-text retry."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context())
    wrong = tls_certs.fingerprint(trusted=False).hex()
    write_remote_config(
        site, sink.port, f"SECURETRANSFER\nSTARTTLS\nOPPORTUNISTIC_TLS\nFINGERPRINT {wrong}\n")
    code, stderr = _send(site)
    assert code == 75, stderr
    assert sink.handler.ehlo_count == 1
    assert sink.messages == []
    _deferred_with(site, "fingerprint")


# --- AUTH -----------------------------------------------------------------------------------


def _tls_auth_config(site: DmaSite, sink: AiosmtpdSink, certs: TlsCerts, extra: str = "",
                     password: str = PASSWORD) -> None:
    write_remote_config(
        site, sink.port,
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {certs.ca_file}\n"
        + write_auth(site, password=password) + extra)


def _no_secrets(stderr: str, password: str = PASSWORD) -> None:
    """Neither the password nor any base64 form of it shows in ``stderr``."""
    for secret in (password, b64(password), b64(f"\0{LOGIN}\0{password}"),
                   b64(f"{LOGIN}\0{LOGIN}\0{password}")):
        assert secret not in stderr, secret


def test_auth_cram_md5_preferred(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """With CRAM-MD5, PLAIN and LOGIN offered, dma authenticates with CRAM-MD5."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True, cram_md5=True)
    _tls_auth_config(site, sink, tls_certs)
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN
    assert sink.handler.auth_mechanisms == ["CRAM-MD5"]
    assert ">>> AUTH CRAM-MD5" in stderr
    _no_secrets(stderr)


def test_auth_plain_over_tls(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """AUTH PLAIN after STARTTLS authenticates; the -v dialogue hides the token."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True, exclude=("LOGIN",))
    _tls_auth_config(site, sink, tls_certs)
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN and arrival.tls
    assert sink.handler.auth_mechanisms == ["PLAIN"]
    assert ">>> AUTH PLAIN" in stderr
    _no_secrets(stderr)


def test_auth_login_over_tls(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """AUTH LOGIN after STARTTLS authenticates; the -v dialogue hides both answers."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True, exclude=("PLAIN",))
    _tls_auth_config(site, sink, tls_certs)
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN
    assert sink.handler.auth_mechanisms == ["LOGIN"]
    _no_secrets(stderr)
    assert b64(LOGIN) not in stderr


def test_bad_password_defers_never_unauthenticated(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """A refused password defers the item: no MAIL is sent, nothing bounces."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True)
    wrong = "not the password"
    _tls_auth_config(site, sink, tls_certs, password=wrong)
    code, stderr = _send(site, "-v")
    assert code == 75, stderr
    assert sink.handler.auth_mechanisms  # it tried
    assert sink.handler.mail_commands == 0
    assert sink.messages == []
    _deferred_with(site, "AUTH")
    _no_secrets(stderr, wrong)


def test_cleartext_auth_refused_without_tls(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """PLAIN and LOGIN offered without TLS are not used (no INSECURE): deferred, nothing sent."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False)
    write_remote_config(site, sink.port, write_auth(site))
    code, stderr = _send(site, "-v")
    assert code == 75, stderr
    assert sink.handler.auth_mechanisms == []
    assert sink.handler.mail_commands == 0
    assert sink.messages == []
    assert ">>> AUTH" not in stderr
    _deferred_with(site)
    _no_secrets(stderr)


def test_insecure_allows_cleartext_auth(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """With INSECURE, PLAIN without TLS is allowed and the mail arrives authenticated."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False, exclude=("LOGIN",))
    write_remote_config(site, sink.port, write_auth(site) + "INSECURE\n")
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN and not arrival.tls
    _no_secrets(stderr)


def test_server_without_auth_gets_the_mail(
    site: DmaSite, aiosmtpd_sink: SinkFactory, tls_certs: TlsCerts
) -> None:
    """A server that offers no AUTH at all gets the mail though auth.conf has an entry."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context())
    _tls_auth_config(site, sink, tls_certs)
    code, stderr = _send(site, "-v")
    assert code == 0, stderr
    [arrival] = sink.wait_for(1)
    assert arrival.login is None
    assert ">>> AUTH" not in stderr
    _no_secrets(stderr)
