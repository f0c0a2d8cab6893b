"""SMTP AUTH (RFC 4954): which mechanism (SPEC 5.6), and the SASL exchange on SMTP lines.

``choose_mechanism`` is the one decision: given what the server offers, the
credentials (a password or an OAuth2 token, maybe an account's forced mechanism),
whether TLS is active and INSECURE, the best mechanism we may use, or why none.

``AuthExchange`` frames one ``dma.core.sasl`` mechanism for SMTP: the AUTH command
with its initial response in base64 (``=`` when empty; held back for the first
334 when the line would pass 512 octets, RFC 4954 4), each 334's text decoded from
base64 and the answer encoded back, ``*`` to cancel when the server's challenge is
wrong (RFC 4954 4: the server answers 501), and the success reply's base64 words
for the mechanism's last check.  Its lines carry secrets: ``AuthLine.shown`` is
what a trace or a log may show (the arguments as ``***``).
"""

from __future__ import annotations

import base64
import binascii

from dma.core.credentials import Credentials
from dma.core.sasl import (
    MECHANISMS,
    OAUTH2_MECHANISMS,
    Mechanism,
    SaslError,
    credentials_problem,
)
from dma.core.values import field, frozen

__all__ = [
    "CLEARTEXT_MECHANISMS",
    "COMMAND_LINE_OCTETS",
    "OAUTH2_PREFERENCE",
    "PASSWORD_PREFERENCE",
    "AuthExchange",
    "AuthLine",
    "Choice",
    "choose_mechanism",
]

OAUTH2_PREFERENCE = ("XOAUTH2", "OAUTHBEARER")
"""For an OAuth2 token, best first.  XOAUTH2 leads: it is the mechanism Microsoft 365
offers for SMTP (it has no OAUTHBEARER there) and the one Google documents for its
SMTP, so it is what the big providers test; a server with both gets the path they
use.  OAUTHBEARER (the IETF standard, RFC 7628) serves the servers that speak only
it (Dovecot submission, Stalwart...)."""

PASSWORD_PREFERENCE = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN")
"""For a password, best first (SPEC 5.6): SCRAM proves the password without showing
it and makes the server prove it knows it; CRAM-MD5 hides it; PLAIN and LOGIN show it."""

CLEARTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN", *OAUTH2_MECHANISMS})
"""Mechanisms that put the secret on the wire as it is: only over TLS, or with INSECURE."""

COMMAND_LINE_OCTETS = 512
"""RFC 5321 4.5.3.1.4's command line, CRLF included: an AUTH command longer than that
goes without its initial response, which follows the first 334 (RFC 4954 4)."""


@frozen
class Choice:
    """The mechanism to use, or None and why (one line for the log and the queue)."""

    mechanism: str | None
    reason: str = ""


def choose_mechanism(offered: frozenset[str], credentials: Credentials, *,
                     tls_active: bool, insecure: bool) -> Choice:
    """The best mechanism in ``offered`` (upper case) for ``credentials`` (SPEC 5.6).

    An OAuth2 token goes by XOAUTH2 or OAUTHBEARER only; a password by SCRAM-SHA-256,
    SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN.  CLEARTEXT_MECHANISMS only with TLS active or
    INSECURE, so a refused STARTTLS in opportunistic mode never shows the secret
    (unlike the C dma).  A mechanism the credentials cannot take (a password SASLprep
    refuses, for SCRAM) is passed over.  An account's forced mechanism is the only
    candidate.  None when nothing is left, with the reason.
    """
    forced = credentials.mechanism.upper() if credentials.mechanism else None
    if forced is not None:
        candidates: tuple[str, ...] = (forced,)
    elif credentials.kind == "oauth2":
        candidates = OAUTH2_PREFERENCE
    else:
        candidates = PASSWORD_PREFERENCE
    skipped: list[str] = []
    for mechanism in candidates:
        if mechanism not in offered:
            continue
        problem = _problem(mechanism, credentials, tls_active=tls_active, insecure=insecure)
        if problem is None:
            return Choice(mechanism)
        skipped.append(f"{mechanism}: {problem}")
    return Choice(None, _none_reason(offered, candidates, skipped, forced))


def _problem(mechanism: str, credentials: Credentials, *, tls_active: bool,
             insecure: bool) -> str | None:
    if mechanism in CLEARTEXT_MECHANISMS and not (tls_active or insecure):
        return "never sent without TLS (use STARTTLS, or set INSECURE)"
    return credentials_problem(mechanism, credentials)


def _none_reason(offered: frozenset[str], candidates: tuple[str, ...], skipped: list[str],
                 forced: str | None) -> str:
    shown = " ".join(sorted(offered))
    if skipped:
        return f"server offers AUTH {shown}, but " + "; ".join(skipped)
    if forced is not None:
        if forced not in MECHANISMS:
            return f"the account's mechanism {forced} is not one dma speaks"
        return f"server offers AUTH {shown}, not {forced}, which the account names"
    return f"server offers AUTH {shown}, none of which dma may use here ({', '.join(candidates)})"


# --- the exchange on SMTP lines ------------------------------------------------------------


@frozen
class AuthLine:
    """One line to send: ``wire`` (secret) and ``shown``, what traces and logs show."""

    wire: str = field(repr=False)
    shown: str


CANCEL = AuthLine("*", "*")
"""RFC 4954 4: the client ends an exchange it cannot go on with; the server says 501."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_challenge(text: str) -> bytes:
    """A 334's text as octets (RFC 4954 4: base64; empty is an empty challenge)."""
    try:
        return base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise SaslError("server sent an AUTH challenge that is not base64",
                        hint="the server is broken; try another mechanism or host") from None


def success_data(text: str) -> tuple[bytes, ...]:
    """The words of a 235 reply that are base64, decoded: a mechanism's additional data
    with success (SCRAM's server-final) may ride there."""
    found = []
    for word in text.split():
        try:
            data = base64.b64decode(word.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            continue
        if data:
            found.append(data)
    return tuple(found)


class AuthExchange:
    """One SASL exchange on SMTP lines (see the module docstring); private and mutable."""

    __slots__ = ("_held", "mechanism")

    def __init__(self, mechanism: Mechanism) -> None:
        self.mechanism = mechanism
        self._held: bytes | None = None  # an initial response too long for the command

    def __repr__(self) -> str:
        return f"<AuthExchange {self.mechanism.name}>"

    def command(self) -> AuthLine:
        """The AUTH command, with the initial response when it fits in the line."""
        name = self.mechanism.name
        initial = self.mechanism.initial_response()
        if initial is None:
            return AuthLine(f"AUTH {name}", f"AUTH {name}")
        argument = _b64(initial) or "="
        wire = f"AUTH {name} {argument}"
        if len(wire) + 2 > COMMAND_LINE_OCTETS:
            self._held = initial
            return AuthLine(f"AUTH {name}", f"AUTH {name}")
        return AuthLine(wire, f"AUTH {name} ***")

    def challenge(self, text: str) -> tuple[AuthLine, str | None]:
        """The answer to a 334 with ``text``, and the failure the server reported when
        this answer closes the exchange (the server's failure reply comes next).

        SaslError when the challenge is wrong: send CANCEL instead.
        """
        if self._held is not None:  # the challenge that asks for it: its text says nothing
            held, self._held = self._held, None
            return AuthLine(_b64(held), "***"), None
        reads = self.mechanism.reads_challenges
        answer = self.mechanism.respond(decode_challenge(text) if reads else b"")
        return AuthLine(_b64(answer.data), "***"), answer.failure

    def success(self, text: str) -> None:
        """The server said 235 with ``text``: SaslError unless the mechanism is satisfied."""
        if self._held is not None:
            raise SaslError(f"server accepted AUTH {self.mechanism.name} before it was sent "
                            "the credentials", hint="the server is broken")
        self.mechanism.completed(success_data(text))
