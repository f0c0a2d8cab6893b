"""A real MTA (Debian's Exim) as the smarthost: STARTTLS, AUTH, and mail that arrives intact.

The first tests prove the fixture itself with Python's smtplib as the client; the
last one sends through it with our own ``sendmail -D``, configured the way a user
would configure a smarthost (SECURETRANSFER + STARTTLS, CAFILE, AUTHPATH).
"""

from __future__ import annotations

import smtplib
import ssl

import pytest
from conftest import DmaSite
from real_mta import RealMta, real_mta_fixture, split_message  # noqa: F401 (a fixture)
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

# What "intact" has to survive: dot lines (a lone one, doubled, leading), an mbox
# "From " line, 8-bit UTF-8, blanks at both ends of lines, a long-ish line (under
# the 998-octet limit, so nobody may re-encode it) and an empty line in the body.
BODY = (
    "Plain first line.\n"
    ".\n"
    "..two dots\n"
    ".leading dot\n"
    "From the start of a line (an mbox would escape it)\n"
    "Grüße aus Köln: 8-bit UTF-8, ✉ and 日本語\n"
    "trailing blanks   \n"
    "\ttab first\n"
    + "long " * 180
    + "end\n"
    "\n"
    "last line\n"
).encode()
RECIPIENT = "bob@example.org"


def _client(mta: RealMta, certs: TlsCerts) -> smtplib.SMTP:
    """An smtplib session to ``mta`` after STARTTLS, verifying its certificate by name."""
    client = smtplib.SMTP(mta.host, mta.port, local_hostname="client.example.test", timeout=10)
    client.ehlo()
    client.starttls(context=ssl.create_default_context(cafile=certs.ca_file))
    client.ehlo()
    return client


def _crlf(text: bytes) -> bytes:
    return text.replace(b"\n", b"\r\n")


def test_fixture_offers_auth_only_after_starttls(real_mta: RealMta, tls_certs: TlsCerts) -> None:
    """The MTA offers STARTTLS in plain text, and AUTH PLAIN and LOGIN only once TLS is on."""
    with smtplib.SMTP(real_mta.host, real_mta.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        client.starttls(context=ssl.create_default_context(cafile=tls_certs.ca_file))
        client.ehlo()
        assert set(client.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"}
        assert isinstance(client.sock, ssl.SSLSocket)
        peer = client.sock.getpeercert()
        assert peer is not None
        assert ("IP Address", "127.0.0.1") in peer["subjectAltName"]


def test_fixture_delivers_smtplib_message_intact(real_mta: RealMta, tls_certs: TlsCerts) -> None:
    """A message sent by smtplib with STARTTLS and AUTH PLAIN lands in the Maildir byte for byte."""
    headers = b"From: alice@example.net\nTo: bob@example.org\nSubject: fixture check\n\n"
    with _client(real_mta, tls_certs) as client:
        client.login(real_mta.user, real_mta.password)
        refused = client.sendmail("alice@example.net", [RECIPIENT], _crlf(headers + BODY))
    assert refused == {}
    [raw] = real_mta.wait_for_messages(1)
    head, body = split_message(raw)
    assert body == BODY
    assert b"\nSubject: fixture check\n" in head
    assert b"Envelope-to: bob@example.org\n" in head
    [line] = real_mta.reception_lines()
    assert " P=esmtpsa " in line
    assert " X=TLS1." in line
    assert f" A=plain:{real_mta.user} " in line


def test_fixture_accepts_auth_login(real_mta: RealMta, tls_certs: TlsCerts) -> None:
    """AUTH LOGIN with the table's credentials is accepted and logged as such."""
    with _client(real_mta, tls_certs) as client:
        client.user, client.password = real_mta.user, real_mta.password
        code, _ = client.auth("LOGIN", client.auth_login)
        assert code == 235
        client.sendmail("alice@example.net", [RECIPIENT], _crlf(b"Subject: login\n\n" + BODY))
    [raw] = real_mta.wait_for_messages(1)
    assert split_message(raw)[1] == BODY
    [line] = real_mta.reception_lines()
    assert f" A=login:{real_mta.user} " in line


def test_fixture_refuses_bad_password_and_unauthenticated_relay(
    real_mta: RealMta, tls_certs: TlsCerts
) -> None:
    """A wrong password gets 535 and, without AUTH, the recipient is refused: nothing arrives."""
    with _client(real_mta, tls_certs) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login(real_mta.user, real_mta.password + "x")
        assert failed.value.smtp_code == 535
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("alice@example.net", [RECIPIENT], _crlf(b"Subject: x\n\n" + BODY))
        [(code, text)] = refused.value.recipients.values()
        assert code == 550
        assert b"authenticate first" in text
    assert real_mta.messages() == []
    assert real_mta.reception_lines() == []


def test_dma_delivers_through_real_smarthost(
    real_mta: RealMta, tls_certs: TlsCerts, site: DmaSite
) -> None:
    """sendmail -D sends through Exim with STARTTLS and AUTH; the body arrives byte-identical."""
    auth = site.root / "auth.conf"
    auth.write_text(f"{real_mta.user}|{real_mta.host}:{real_mta.password}\n")
    auth.chmod(0o600)
    site.write_aliases("")
    site.config.write_text(
        f"SPOOLDIR {site.spool}\nMAILDIR {site.maildir}\nALIASES {site.aliases}\n"
        f"SMARTHOST {real_mta.host}\nPORT {real_mta.port}\n"
        f"SECURETRANSFER\nSTARTTLS\nCAFILE {tls_certs.ca_file}\nAUTHPATH {auth}\n"
    )
    headers = b"From: alice@example.net\nTo: bob@example.org\nSubject: through exim\n\n"
    done = site.run(["-i", "-D", "-v", RECIPIENT], headers + BODY, program="sendmail", timeout=20)
    assert done.returncode == 0, done.stderr.decode(errors="replace") + real_mta.log_text()
    [raw] = real_mta.wait_for_messages(1)
    head, body = split_message(raw)
    assert body == BODY
    assert b"\nSubject: through exim\n" in head
    assert b"pydma" in head  # our own Received header came along
    assert b"Envelope-to: bob@example.org\n" in head
    [line] = real_mta.reception_lines()
    assert " P=esmtpsa " in line
    assert " X=TLS1." in line
    assert f":{real_mta.user} " in line.split(" A=", 1)[1]
    assert real_mta.password not in done.stderr.decode(errors="replace")
    assert site.queue() == []
