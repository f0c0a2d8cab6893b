"""SASL mechanisms, client side (RFC 4422): pure objects, octets in and octets out.

One object per exchange.  ``initial_response()`` is what goes with the AUTH
command (None: nothing), ``respond(challenge)`` answers each server challenge
(already base64-decoded) with an ``Answer``, and ``completed(extra)`` checks
what the server said with its success reply (SCRAM's signature may ride there).
Any misstep of the server raises ``SaslError`` (ours, a RemoteProtocolError):
whatever octets the server sends, nothing else comes out (property-tested).
The SMTP framing (base64, AUTH lines, ``*``) is ``dma.core.smtp_auth``'s.

Mechanisms:

- PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), CRAM-MD5 (RFC 2195): as
  the C dma sends them: login and password are the octets auth.conf holds.
- SCRAM-SHA-256 (RFC 7677) and SCRAM-SHA-1 (RFC 5802), without channel binding
  (gs2 header ``n,,``).  The client nonce comes in as an argument (core takes
  randomness in).  The server-first message is parsed strictly: ``r`` must
  extend our nonce, ``s`` is base64, ``i`` a decimal between ``MIN_ITERATIONS``
  and ``MAX_ITERATIONS``, a mandatory extension (``m=``) is refused.  The server's
  signature (``v=``) is checked with ``hmac.compare_digest``; a wrong or missing
  one is an error, never a success.  Login and password go through SASLprep
  (RFC 4013, with the standard library's ``stringprep`` tables): the login as a
  query, the password as a stored string, as RFC 5802 2.2 and 5.1 say.
- XOAUTH2 (Google's and Microsoft's) and OAUTHBEARER (RFC 7628) with an OAuth2
  access token.  A challenge after the initial response is the server's error
  report (base64 JSON: status, schemes, scope, openid-configuration): it is
  decoded into ``Answer.failure`` and answered as each expects, XOAUTH2 with an
  empty response, OAUTHBEARER with a single ``%x01`` (RFC 7628 3.2.3); the
  server's failure reply follows.

Secrets (passwords, tokens, proofs) live in the objects' private slots and in the
octets they return, nowhere else: reprs, ``Answer`` reprs and error messages
never hold them.
"""

from __future__ import annotations

import abc
import base64
import binascii
import hashlib
import hmac
import json
import re
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from dma.core.credentials import Credentials
from dma.core.errors import ConfigError, SoftwareError
from dma.core.octets import printable, wire_octets
from dma.core.smtp_reply import RemoteProtocolError

__all__ = [
    "MAX_ITERATIONS",
    "MECHANISMS",
    "MIN_ITERATIONS",
    "OAUTH2_MECHANISMS",
    "Answer",
    "CramMd5",
    "Login",
    "Mechanism",
    "OAuthBearer",
    "Plain",
    "SaslError",
    "SaslPrepError",
    "Scram",
    "ScramSha1",
    "ScramSha256",
    "XOAuth2",
    "credentials_problem",
    "make_mechanism",
    "oauth2_error_details",
    "saslprep",
]

MIN_ITERATIONS = 4096
"""The fewest SCRAM iterations we accept.  RFC 5802 5.1 and RFC 7677 4 say the
server's count SHOULD be at least 4096; a lower one makes our proof cheap to attack
offline (a server, or someone in the middle, could ask for ``i=1`` to that end)."""

MAX_ITERATIONS = 1_000_000
"""The most SCRAM iterations we accept.  The count is the server's to choose and we
pay for it (PBKDF2 before we can answer): a million is about 0.4 s of one core with
OpenSSL's SHA-256 (measured: 0.37 s; SHA-1 0.35 s) and 244 times the RFCs' 4096,
above what servers use (Dovecot and Cyrus 4096, PostgreSQL 4096, MongoDB 15000), so
a hostile server cannot make each connection burn more than that."""

OAUTH2_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})
"""Mechanisms whose secret is an OAuth2 access token."""

_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802 "printable": no comma
_ITERATIONS = re.compile(r"[1-9][0-9]{0,9}")
_EXTENSION = re.compile(r"[A-Za-z]=.*", re.DOTALL)
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 2.1, the Bearer token
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHOWN_VALUE = 120  # octets of a server's error value shown in a reason


class SaslError(RemoteProtocolError):
    """The server's side of a SASL exchange is wrong: a malformed challenge, a
    failed proof, an error it reports.  The session fails; the mail is deferred."""


class SaslPrepError(ConfigError):
    """A login or password that SASLprep (RFC 4013) refuses: SCRAM cannot use it."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The response to one challenge, and whether it ends a failed exchange.

    ``failure`` is set when the challenge was the server's error report (OAuth2):
    this answer is what the mechanism sends to close the exchange, and the server's
    failure reply comes next.  It says what the server reported, in one line.
    """

    data: bytes = field(repr=False)
    failure: str | None = None


def _b64decode(text: bytes | str, what: str) -> bytes:
    """Strict base64 (RFC 4648 alphabet, padding); SaslError naming ``what`` otherwise."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslError(f"server sent {what} that is not base64",
                        hint="the server is broken; try another mechanism or host") from None


# --- SASLprep (RFC 4013) -----------------------------------------------------------------

_PROHIBITED: tuple[Callable[[str], bool], ...] = (
    stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
    stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
    stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
    stringprep.in_table_c9,
)


def saslprep(text: str, *, stored: bool, what: str) -> str:
    """``text`` prepared by the SASLprep profile of stringprep (RFC 4013, RFC 3454).

    Map (non-ASCII spaces to SPACE, "commonly mapped to nothing" removed), NFKC
    with Unicode 3.2 (the version stringprep is defined on), then refuse prohibited
    characters (controls, private use, surrogates: an octet of auth.conf that is
    not UTF-8 is one), bidirectional text that breaks RFC 3454 6, and, for a stored
    string (the password), unassigned code points.  SaslPrepError names ``what`` and
    the kind of character, never the text, a character of it or its position.
    """
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    normal = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    # The messages say what kind of character, never which or where: a password's
    # characters are secret one by one.
    if any(table(char) for char in normal for table in _PROHIBITED):
        raise SaslPrepError(f"the {what} holds a character SASLprep prohibits (a control "
                            "or private-use character, or an octet that is not UTF-8)",
                            hint="use another mechanism, or change it")
    if stored and any(stringprep.in_table_a1(char) for char in normal):
        raise SaslPrepError(f"the {what} holds a code point unassigned in Unicode 3.2, "
                            "which SASLprep refuses", hint="use another mechanism, or change it")
    _check_bidi(normal, what)
    return normal


def _check_bidi(text: str, what: str) -> None:
    """RFC 3454 6: right-to-left text has no left-to-right character and starts and
    ends with a right-to-left one."""
    rtl = [stringprep.in_table_d1(char) for char in text]
    if not any(rtl):
        return
    if any(stringprep.in_table_d2(char) for char in text) or not (rtl[0] and rtl[-1]):
        raise SaslPrepError(f"the {what} mixes right-to-left and left-to-right text in a "
                            "way SASLprep prohibits", hint="use another mechanism")


# --- the mechanisms ---------------------------------------------------------------------


class Mechanism(abc.ABC):
    """One client-side SASL exchange (see the module docstring)."""

    name: ClassVar[str]
    reads_challenges: ClassVar[bool] = True
    """False when the challenges' text means nothing to the mechanism (LOGIN's
    "Username:" prompts, which some old servers send without base64)."""
    __slots__ = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    def initial_response(self) -> bytes | None:
        """What goes with the AUTH command; None when the mechanism starts with nothing."""
        return None

    @abc.abstractmethod
    def respond(self, challenge: bytes) -> Answer:
        """The answer to ``challenge``; SaslError when the server is wrong."""

    def completed(self, extra: tuple[bytes, ...]) -> None:
        """The server said success; ``extra``: base64 words of its reply, decoded.

        SaslError when the mechanism has not been satisfied (SCRAM's signature);
        the others have nothing left to check.
        """
        return None

    def _too_many(self) -> SaslError:
        return SaslError(f"server sent more {self.name} challenges than the mechanism has",
                         hint="the server is broken; try another mechanism or host")


class Plain(Mechanism):
    """PLAIN (RFC 4616): NUL login NUL password, all in the initial response."""

    name = "PLAIN"
    __slots__ = ("_message",)

    def __init__(self, login: str, password: str) -> None:
        self._message = b"\0" + wire_octets(login) + b"\0" + wire_octets(password)

    def initial_response(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> Answer:
        raise self._too_many()


class Login(Mechanism):
    """LOGIN: the login to the first challenge, the password to the second."""

    name = "LOGIN"
    reads_challenges = False
    __slots__ = ("_answers",)

    def __init__(self, login: str, password: str) -> None:
        self._answers = [wire_octets(login), wire_octets(password)]

    def respond(self, challenge: bytes) -> Answer:
        if not self._answers:
            raise self._too_many()
        return Answer(self._answers.pop(0))


class CramMd5(Mechanism):
    """CRAM-MD5 (RFC 2195): login SP hex HMAC-MD5(password, challenge)."""

    name = "CRAM-MD5"
    __slots__ = ("_answered", "_login", "_password")

    def __init__(self, login: str, password: str) -> None:
        self._login = wire_octets(login)
        self._password = wire_octets(password)
        self._answered = False

    def respond(self, challenge: bytes) -> Answer:
        if self._answered:
            raise self._too_many()
        if not challenge:
            raise SaslError("server sent an empty CRAM-MD5 challenge",
                            hint="the server is broken; try another mechanism or host")
        self._answered = True
        digest = hmac.new(self._password, challenge, hashlib.md5).hexdigest()
        return Answer(self._login + b" " + digest.encode("ascii"))


def _saslname(name: str) -> str:
    """RFC 5802 5.1 / RFC 5801: ``=`` as ``=3D`` and ``,`` as ``=2C``."""
    return name.replace("=", "=3D").replace(",", "=2C")


class Scram(Mechanism):
    """SCRAM (RFC 5802) without channel binding; ``ScramSha256`` and ``ScramSha1``.

    Three steps: client-first (the initial response), client-final (the answer to
    server-first), then the server's signature, in a challenge (answered with
    nothing) or with the success reply.  Only a verified signature completes it.
    """

    __slots__ = ("_auth_message", "_first_bare", "_nonce", "_password",
                 "_server_signature", "_step", "_verified")
    _hash: ClassVar[str]

    def __init__(self, login: str, password: str, nonce: str) -> None:
        if not _NONCE.fullmatch(nonce):
            raise SoftwareError("a SCRAM client nonce is printable ASCII without ','",
                                hint="the caller must give one from adapters/system")
        prepared_login = saslprep(login, stored=False, what="login")
        if not prepared_login:
            raise SaslPrepError("the login is empty after SASLprep", hint="fix the login")
        self._password = saslprep(password, stored=True, what="password").encode("utf-8")
        self._nonce = nonce
        self._first_bare = f"n={_saslname(prepared_login)},r={nonce}"
        self._auth_message = b""
        self._server_signature = b""
        self._step = 0
        self._verified = False

    def initial_response(self) -> bytes:
        return ("n,," + self._first_bare).encode("utf-8")

    def respond(self, challenge: bytes) -> Answer:
        self._step += 1
        if self._step == 1:
            return Answer(self._client_final(challenge))
        if self._step == 2 and not self._verified:
            self._verify(challenge)
            return Answer(b"")
        raise self._too_many()

    def completed(self, extra: tuple[bytes, ...]) -> None:
        if self._verified:
            return
        finals = [data for data in extra if data.startswith((b"v=", b"e="))]
        if self._step == 1 and finals:
            self._verify(finals[-1])
            return
        raise SaslError(f"server accepted {self.name} without proving that it knows the "
                        "password (no server signature): not trusted",
                        hint="the server is broken or not the one configured")

    def _client_final(self, challenge: bytes) -> bytes:
        """Parse server-first strictly; the client-final message with our proof."""
        server_first = self._text(challenge, "server-first message")
        nonce, salt, iterations = self._parse_server_first(server_first)
        without_proof = f"c=biws,r={nonce}"  # biws: base64 of the gs2 header "n,,"
        self._auth_message = f"{self._first_bare},{server_first},{without_proof}".encode()
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", self._hash).digest()
        stored_key = hashlib.new(self._hash, client_key).digest()
        signature = hmac.new(stored_key, self._auth_message, self._hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self._hash).digest()
        self._server_signature = hmac.new(server_key, self._auth_message, self._hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def _text(self, challenge: bytes, what: str) -> str:
        try:
            return challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise self._bad(f"a {what} that is not UTF-8") from None

    def _bad(self, what: str) -> SaslError:
        return SaslError(f"server sent {what} in {self.name}",
                         hint="the server is broken or not the one configured")

    def _parse_server_first(self, message: str) -> tuple[str, bytes, int]:
        """``r``, ``s`` and ``i`` of server-first (RFC 5802 7), checked."""
        attributes = message.split(",")
        if attributes[0].startswith("m="):
            raise self._bad("a mandatory extension (m=) we do not support")
        if len(attributes) < 3 or not all(_EXTENSION.fullmatch(a) for a in attributes[3:]):
            raise self._bad("a server-first message that is not r=,s=,i=")
        nonce, salt, count = (self._attribute(a, key)
                              for a, key in zip(attributes, "rsi", strict=False))
        if not (_NONCE.fullmatch(nonce) and nonce.startswith(self._nonce)
                and len(nonce) > len(self._nonce)):
            raise self._bad("a nonce that does not extend ours")
        salt_octets = _b64decode(salt, f"a {self.name} salt")
        if not salt_octets:
            raise self._bad("an empty salt")
        if not _ITERATIONS.fullmatch(count):
            raise self._bad("an iteration count that is not a positive number")
        iterations = int(count)
        if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
            raise self._bad(f"an iteration count of {iterations}, outside the "
                            f"{MIN_ITERATIONS}..{MAX_ITERATIONS} we accept")
        return nonce, salt_octets, iterations

    def _attribute(self, attribute: str, key: str) -> str:
        if not attribute.startswith(key + "="):
            raise self._bad("a server-first message that is not r=,s=,i=")
        return attribute[2:]

    def _verify(self, server_final: bytes) -> None:
        """Check server-final's ``v=`` against the signature we computed."""
        final = self._text(server_final, "server-final message")
        first = final.split(",", 1)[0]
        if first.startswith("e="):
            raise SaslError(f"server refused {self.name}: "
                            f"{printable(first[2:][:_SHOWN_VALUE])}",
                            hint="check the login and password")
        if not first.startswith("v="):
            raise self._bad("a server-final message without a signature (v=)")
        signature = _b64decode(first[2:], f"a {self.name} server signature")
        if not self._server_signature or not hmac.compare_digest(
                signature, self._server_signature):
            raise SaslError(f"server's {self.name} signature is wrong: it does not know the "
                            "password, or is not the server configured; not trusted",
                            hint="check the server and the password")
        self._verified = True


class ScramSha256(Scram):
    """SCRAM-SHA-256 (RFC 7677)."""

    name = "SCRAM-SHA-256"
    __slots__ = ()
    _hash = "sha256"


class ScramSha1(Scram):
    """SCRAM-SHA-1 (RFC 5802)."""

    name = "SCRAM-SHA-1"
    __slots__ = ()
    _hash = "sha1"


def oauth2_error_details(challenge: bytes) -> str:
    """The server's OAuth2 error report (RFC 7628 3.2.2; Google's and Microsoft's
    XOAUTH2 send the same JSON) in one printable line: ``status``, ``schemes``,
    ``scope`` and ``openid-configuration`` when present.  Never raises."""
    try:
        report = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "its error report is not JSON"
    if not isinstance(report, dict):
        return "its error report is not a JSON object"
    shown = [
        f"{key} {printable(str(report[key])[:_SHOWN_VALUE])}"
        for key in ("status", "schemes", "scope", "openid-configuration")
        if key in report
    ]
    return ", ".join(shown) if shown else "its error report names no status"


class _OAuth2(Mechanism):
    """What XOAUTH2 and OAUTHBEARER share: a token up front, one error challenge."""

    __slots__ = ("_answered", "_message")
    _CLOSE: ClassVar[bytes]

    def __init__(self, message: bytes) -> None:
        self._message = message
        self._answered = False

    def initial_response(self) -> bytes:
        return self._message

    def respond(self, challenge: bytes) -> Answer:
        if self._answered:
            raise self._too_many()
        self._answered = True
        return Answer(self._CLOSE, f"server refused the OAuth2 token "
                                   f"({oauth2_error_details(challenge)})")


class XOAuth2(_OAuth2):
    """XOAUTH2: ``user=LOGIN^Aauth=Bearer TOKEN^A^A``; an error is answered empty."""

    name = "XOAUTH2"
    __slots__ = ()
    _CLOSE = b""

    def __init__(self, login: str, token: str) -> None:
        super().__init__(b"user=" + wire_octets(login) + b"\x01auth=Bearer "
                         + wire_octets(token) + b"\x01\x01")


class OAuthBearer(_OAuth2):
    """OAUTHBEARER (RFC 7628): gs2 header ``n,a=LOGIN,``, then ``^Ahost=^Aport=^Aauth=
    Bearer TOKEN^A^A``; an error is answered with a single ``^A`` (3.2.3)."""

    name = "OAUTHBEARER"
    __slots__ = ()
    _CLOSE = b"\x01"

    def __init__(self, login: str, token: str, host: str | None = None,
                 port: int | None = None) -> None:
        parts = [f"n,a={_saslname(login)},"]
        if host and not _CONTROL.search(host):
            parts.append(f"host={host}")
        if port:
            parts.append(f"port={port}")
        parts.append(f"auth=Bearer {token}")
        super().__init__(wire_octets("\x01".join(parts) + "\x01\x01"))


# --- which mechanism may carry which credentials -------------------------------------------

MECHANISMS = ("XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN",
              "LOGIN")
"""Every mechanism we speak."""

_PROBE_NONCE = "x" * 24
_SCRAM: dict[str, type[Scram]] = {"SCRAM-SHA-256": ScramSha256, "SCRAM-SHA-1": ScramSha1}


def credentials_problem(name: str, credentials: Credentials) -> str | None:
    """Why ``credentials`` cannot go by mechanism ``name`` (None: they can).

    A token needs an OAuth2 mechanism and a password one that is not; an OAuth2
    login holds no control character and the token is an RFC 6750 b64token (nothing
    in it can change the message's framing); PLAIN carries no NUL; SCRAM needs a
    login and password that SASLprep takes.
    """
    oauth2 = credentials.kind == "oauth2"
    if name not in MECHANISMS:
        return f"dma does not speak {name}"
    if oauth2 != (name in OAUTH2_MECHANISMS):
        return (f"{name} does not carry an OAuth2 token" if oauth2
                else f"{name} needs an OAuth2 token, not a password")
    if oauth2:
        if _CONTROL.search(credentials.login):
            return "the login holds a control character"
        if not _B64TOKEN.fullmatch(credentials.secret):
            return "the OAuth2 access token holds characters a Bearer token may not"
    elif name == "PLAIN" and "\0" in credentials.login + credentials.secret:
        return "the login or password holds a NUL, which PLAIN cannot carry"
    elif name.startswith("SCRAM-"):
        try:
            ScramSha1(credentials.login, credentials.secret, _PROBE_NONCE)
        except SaslPrepError as refused:
            return refused.message
    return None


def make_mechanism(name: str, credentials: Credentials, *, nonce: str,
                   host: str | None = None, port: int | None = None) -> Mechanism:
    """The exchange for mechanism ``name`` (one of MECHANISMS) with ``credentials``.

    ``nonce``: SCRAM's client nonce (printable ASCII without ','), from the caller's
    randomness; ``host`` and ``port``: the server, for OAUTHBEARER.  Check
    ``credentials_problem`` first: this raises SaslPrepError or ValueError for what
    it reports, and SoftwareError for a name or nonce no caller may give.
    """
    login, secret = credentials.login, credentials.secret
    if name in _SCRAM:
        return _SCRAM[name](login, secret, nonce)
    if name == "XOAUTH2":
        return XOAuth2(login, secret)
    if name == "OAUTHBEARER":
        return OAuthBearer(login, secret, host, port)
    simple: dict[str, Callable[[str, str], Mechanism]] = {
        "PLAIN": Plain, "LOGIN": Login, "CRAM-MD5": CramMd5}
    if name not in simple:
        raise SoftwareError(f"not a mechanism we speak: {name}",
                            hint="choose it with smtp_auth.choose_mechanism")
    return simple[name](login, secret)
