"""SMTP AUTH (RFC 4954): the mechanism choice and the client's responses (SPEC 5.6).

Pure functions of the login, the password and the server's challenge.  Their
results are secrets: callers put them on the wire and nowhere else (no events,
no logs, no reprs).  Login and password are sent as the octets auth.conf holds
(``wire_octets``): a Latin-1 password is sent in Latin-1, as the C dma sends it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from dma.core.octets import wire_octets
from dma.core.smtp_reply import RemoteProtocolError

PREFERENCE = ("CRAM-MD5", "PLAIN", "LOGIN")
"""Mechanisms we speak, best first: CRAM-MD5 never shows the password to the wire."""

CLEARTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
"""Mechanisms that put the password on the wire: only over TLS, or with INSECURE."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def cram_md5_response(login: str, password: str, challenge_b64: str) -> str:
    """The CRAM-MD5 answer (RFC 2195): base64 of ``login`` SP hex HMAC-MD5(password, challenge).

    A challenge that is not base64 is the server's fault: RemoteProtocolError.
    """
    try:
        challenge = base64.b64decode(challenge_b64.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RemoteProtocolError(
            "server sent a CRAM-MD5 challenge that is not base64",
            hint="the server is broken; try another mechanism or host",
        ) from None
    digest = hmac.new(wire_octets(password), challenge, hashlib.md5).hexdigest()
    return _b64(wire_octets(f"{login} {digest}"))


def plain_token(login: str, password: str) -> str:
    """The AUTH PLAIN initial response (RFC 4616): base64 of NUL login NUL password."""
    return _b64(b"\0" + wire_octets(login) + b"\0" + wire_octets(password))


def login_steps(login: str, password: str) -> tuple[str, str]:
    """The two AUTH LOGIN answers: base64 of the login, then of the password."""
    return _b64(wire_octets(login)), _b64(wire_octets(password))


def choose_mechanism(offered: frozenset[str], *, tls_active: bool, insecure: bool) -> str | None:
    """The best mechanism in ``offered`` we may use, or None when there is none.

    PLAIN and LOGIN are allowed only when TLS is active or INSECURE is set, so a
    refused STARTTLS in opportunistic mode never leaks the password (unlike the C dma).
    """
    for mechanism in PREFERENCE:
        if mechanism not in offered:
            continue
        if mechanism in CLEARTEXT_MECHANISMS and not (tls_active or insecure):
            continue
        return mechanism
    return None
