"""SASL mechanisms (core/sasl.py) and their SMTP framing (core/smtp_auth.py): exact octets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from dma.core.credentials import Credentials
from dma.core.errors import DmaError, SoftwareError
from dma.core.sasl import (
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    CramMd5,
    Login,
    OAuthBearer,
    Plain,
    SaslError,
    SaslPrepError,
    ScramSha1,
    ScramSha256,
    XOAuth2,
    credentials_problem,
    make_mechanism,
    oauth2_error_details,
    saslprep,
)
from dma.core.smtp_auth import (
    CANCEL,
    COMMAND_LINE_OCTETS,
    AuthExchange,
    Choice,
    choose_mechanism,
    decode_challenge,
    success_data,
)
from dma.core.smtp_reply import RemoteProtocolError

TOKEN = "ya29.a0AfH6SMBx-secret_token~value/+="

# RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256), verbatim.
RFC5802 = {
    "nonce": "fyko+d2lbbFgONRv9qkxdawL",
    "client_first": b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "server_first": b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "client_final": b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                    b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "server_final": b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
RFC7677 = {
    "nonce": "rOprNGfwEbeRWgbNEkqO",
    "client_first": b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "server_first": b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "client_final": b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "server_final": b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}


# --- SCRAM: the RFCs' examples ----------------------------------------------------------------


@pytest.mark.parametrize(("cls", "vector"), [(ScramSha1, RFC5802), (ScramSha256, RFC7677)])
def test_scram_reproduces_the_rfc_example(cls: type[ScramSha1], vector: dict[str, bytes | str]
                                          ) -> None:
    """user/pencil with the RFC's nonce gives the RFC's client-first and client-final octets
    and accepts its server signature in a challenge, answered with nothing."""
    nonce = vector["nonce"]
    assert isinstance(nonce, str)
    scram = cls("user", "pencil", nonce)
    assert scram.initial_response() == vector["client_first"]
    server_first, server_final = vector["server_first"], vector["server_final"]
    assert isinstance(server_first, bytes) and isinstance(server_final, bytes)
    first = scram.respond(server_first)
    assert (first.data, first.failure) == (vector["client_final"], None)
    last = scram.respond(server_final)
    assert (last.data, last.failure) == (b"", None)
    scram.completed(())


@pytest.mark.parametrize(("cls", "vector"), [(ScramSha1, RFC5802), (ScramSha256, RFC7677)])
def test_scram_signature_may_come_with_the_success_reply(
        cls: type[ScramSha1], vector: dict[str, bytes | str]) -> None:
    """The server signature in the 235 reply's base64 word completes the exchange."""
    nonce = vector["nonce"]
    server_first, server_final = vector["server_first"], vector["server_final"]
    assert isinstance(nonce, str) and isinstance(server_first, bytes)
    assert isinstance(server_final, bytes)
    exchange = AuthExchange(cls("user", "pencil", nonce))
    exchange.command()
    exchange.challenge(base64.b64encode(server_first).decode())
    exchange.success("2.7.0 " + base64.b64encode(server_final).decode())


def _rfc7677_after_first() -> ScramSha256:
    scram = ScramSha256("user", "pencil", str(RFC7677["nonce"]))
    server_first = RFC7677["server_first"]
    assert isinstance(server_first, bytes)
    scram.respond(server_first)
    return scram


def test_wrong_server_signature_fails() -> None:
    """A server signature one bit off raises SaslError, in a challenge and with 235."""
    good = base64.b64decode(str(RFC7677["server_final"])[2:])
    bad = b"v=" + base64.b64encode(bytes([good[0] ^ 1]) + good[1:])
    with pytest.raises(SaslError, match="signature is wrong"):
        _rfc7677_after_first().respond(bad)
    with pytest.raises(SaslError, match="signature is wrong"):
        _rfc7677_after_first().completed((bad,))


def test_missing_server_signature_fails() -> None:
    """A 235 with no server signature, before or after client-final, is no success."""
    with pytest.raises(SaslError, match="no server signature"):
        _rfc7677_after_first().completed(())
    with pytest.raises(SaslError, match="no server signature"):
        _rfc7677_after_first().completed((b"not a signature",))
    first_only = ScramSha256("user", "pencil", "abcdefghijklmnop")
    first_only.initial_response()
    with pytest.raises(SaslError):
        first_only.completed((str(RFC7677["server_final"]).encode(),))


def test_server_error_in_server_final_fails() -> None:
    """server-final ``e=invalid-proof`` is the server's refusal, named in the error."""
    with pytest.raises(SaslError, match="invalid-proof"):
        _rfc7677_after_first().respond(b"e=invalid-proof")


def _server_first(nonce: str = "rOprNGfwEbeRWgbNEkqOxyz", salt: str = "c2FsdA==",
                  iterations: str = "4096", extra: str = "") -> bytes:
    return f"r={nonce},s={salt},i={iterations}{extra}".encode()


@pytest.mark.parametrize(("server_first", "words"), [
    (_server_first(nonce="someone-elses-nonce"), "does not extend ours"),
    (_server_first(nonce="rOprNGfwEbeRWgbNEkqO"), "does not extend ours"),  # not longer
    (_server_first(salt="not base64!"), "not base64"),
    (_server_first(salt=""), "empty salt"),
    (_server_first(iterations="0"), "not a positive number"),
    (_server_first(iterations="04096"), "not a positive number"),
    (_server_first(iterations="-1"), "not a positive number"),
    (_server_first(iterations="4096.0"), "not a positive number"),
    (_server_first(iterations=str(MIN_ITERATIONS - 1)), "outside"),
    (_server_first(iterations=str(MAX_ITERATIONS + 1)), "outside"),
    (_server_first(iterations="9" * 40), "not a positive number"),
    (b"m=ext," + _server_first(), "mandatory extension"),
    (b"s=c2FsdA==,r=rOprNGfwEbeRWgbNEkqOxyz,i=4096", "not r=,s=,i="),
    (b"r=rOprNGfwEbeRWgbNEkqOxyz,s=c2FsdA==", "not r=,s=,i="),
    (_server_first(extra=",bogus"), "not r=,s=,i="),
    (b"r=rOprNGfwEbeRWgbNEkqO\xff,s=c2FsdA==,i=4096", "not UTF-8"),
    (b"", "not r=,s=,i="),
])
def test_server_first_is_parsed_strictly(server_first: bytes, words: str) -> None:
    """A server-first message that breaks RFC 5802 7 or our bounds raises SaslError."""
    scram = ScramSha256("user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    with pytest.raises(SaslError, match=words):
        scram.respond(server_first)


def test_iteration_bounds_are_inclusive() -> None:
    """MIN_ITERATIONS is accepted, and an extension after i= is allowed."""
    scram = ScramSha256("user", "pencil", "rOprNGfwEbeRWgbNEkqO")
    answer = scram.respond(_server_first(iterations=str(MIN_ITERATIONS), extra=",x=future"))
    assert answer.data.startswith(b"c=biws,r=rOprNGfwEbeRWgbNEkqOxyz,p=")


def test_scram_escapes_the_login_and_uses_saslprep() -> None:
    """``=`` and ``,`` in the login become =3D and =2C; the password is SASLprep'd (a
    non-ASCII space is a space, a soft hyphen disappears), the login as a query."""
    scram = ScramSha256("a=b,c", "pen\u00adcil\u00a0x", "abcdefghijklmnop")
    assert scram.initial_response() == b"n,,n=a=3Db=2Cc,r=abcdefghijklmnop"
    plain = ScramSha256("a=b,c", "pencil x", "abcdefghijklmnop")
    first = b"r=abcdefghijklmnopXYZ,s=c2FsdA==,i=4096"
    assert scram.respond(first) == plain.respond(first)


@pytest.mark.parametrize(("text", "stored", "expected"), [
    ("I\u00adX", True, "IX"),            # RFC 4013 3: soft hyphen mapped to nothing
    ("user", True, "user"),
    ("USER", True, "USER"),              # case preserved
    ("\u00aa", True, "a"),               # NFKC
    ("\u2168", True, "IX"),              # NFKC
    ("a\u2003b", True, "a b"),           # non-ASCII space to SPACE
    ("\u0221", False, "\u0221"),         # unassigned in Unicode 3.2: a query may hold it
])
def test_saslprep_examples(text: str, stored: bool, expected: str) -> None:
    """SASLprep gives RFC 4013's results (its section 3 examples and the mapping rules)."""
    assert saslprep(text, stored=stored, what="password") == expected


@pytest.mark.parametrize("text", [
    "\u0007",            # RFC 4013 3: a control character
    "\u0627\u0031",      # RFC 4013 3: RandALCat first, not last
    "a\udcffb",          # an auth.conf octet that is not UTF-8 (surrogateescape)
    "\ue000",            # private use
    "\u0221",            # unassigned: a stored string may not hold it
])
def test_saslprep_refuses_without_showing_the_text(text: str) -> None:
    """Prohibited, bidi-breaking and unassigned text raises SaslPrepError naming the kind
    of character, never the text, the character or its position."""
    with pytest.raises(SaslPrepError) as caught:
        saslprep("secret" + text, stored=True, what="password")
    message = str(caught.value)
    assert "secret" not in message and "U+" not in message and "7" not in message
    assert "password" in message and caught.value.exit_code == 78


def test_scram_nonce_must_be_printable_without_comma() -> None:
    """A nonce with a comma, a space or nothing is a caller's bug: SoftwareError."""
    for nonce in ("", "a,b", "a b", "é"):
        with pytest.raises(SoftwareError):
            ScramSha1("user", "pencil", nonce)


# --- the other mechanisms --------------------------------------------------------------------


def test_plain_login_cram_md5_octets() -> None:
    """PLAIN is NUL login NUL password; LOGIN answers login then password; CRAM-MD5 answers
    RFC 2195's example; each refuses a challenge too many."""
    assert Plain("user", "pass").initial_response() == b"\0user\0pass"
    login = Login("user", "pass")
    assert login.initial_response() is None
    assert [login.respond(b"Username:").data, login.respond(b"Password:").data] == [
        b"user", b"pass"]
    cram = CramMd5("tim", "tanstaaftanstaaf")
    answer = cram.respond(b"<1896.697170952@postoffice.reston.mci.net>")
    assert answer.data == b"tim b913a602c7eda7a495b4e6e7334d3890"
    for mechanism in (Plain("u", "p"), login, cram):
        with pytest.raises(SaslError, match="more"):
            mechanism.respond(b"again")
    with pytest.raises(SaslError, match="empty"):
        CramMd5("tim", "x").respond(b"")


def test_latin1_password_goes_as_its_octets() -> None:
    """A password auth.conf held in Latin-1 goes out as those octets (as the C dma sends)."""
    password = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert Plain("u", password).initial_response() == b"\0u\0caf\xe9"


def test_xoauth2_initial_response_and_error() -> None:
    """XOAUTH2 sends user=...^Aauth=Bearer ...^A^A; the JSON error challenge is decoded
    and answered with an empty response."""
    xoauth2 = XOAuth2("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
    assert xoauth2.initial_response() == (
        b"user=someuser@example.com\x01auth=Bearer "
        b"ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01")
    error = json.dumps({"status": "401", "schemes": "Bearer",
                        "scope": "https://mail.google.com/"}).encode()
    answer = xoauth2.respond(error)
    assert answer.data == b""
    assert answer.failure == ("server refused the OAuth2 token (status 401, schemes Bearer, "
                              "scope https://mail.google.com/)")


def test_oauthbearer_initial_response_and_error() -> None:
    """OAUTHBEARER is RFC 7628 3.1's gs2 header and key-values; its error challenge (the RFC
    7628 4.3 example) is decoded and answered with a single ^A."""
    bearer = OAuthBearer("user@example.com", "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
                         "server.example.com", 587)
    assert bearer.initial_response() == (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01")
    error = (b'{"status":"invalid_token","scope":"example_scope",'
             b'"openid-configuration":"https://example.com/.well-known/openid-configuration"}')
    answer = bearer.respond(error)
    assert answer.data == b"\x01"
    assert answer.failure == (
        "server refused the OAuth2 token (status invalid_token, scope example_scope, "
        "openid-configuration https://example.com/.well-known/openid-configuration)")
    with pytest.raises(SaslError):
        bearer.respond(error)


def test_oauthbearer_escapes_the_login_and_may_leave_out_host_and_port() -> None:
    """``,`` and ``=`` in the login are escaped; host and port are sent only when known."""
    bearer = OAuthBearer("a,b=c", "tok")
    assert bearer.initial_response() == b"n,a=a=2Cb=3Dc,\x01auth=Bearer tok\x01\x01"


@pytest.mark.parametrize(("challenge", "shown"), [
    (b"not json", "its error report is not JSON"),
    (b"[1, 2]", "its error report is not a JSON object"),
    (b"{}", "its error report names no status"),
    (b'{"status": "40\\u0001"}', "status 40\\x01"),
    (b"\xff\xfe", "its error report is not JSON"),
    (b"[" * 100_000, "its error report is not JSON"),
    (('{"status": "' + "x" * 5000 + '"}').encode(), "status " + "x" * 120),
])
def test_oauth2_error_details_never_raise(challenge: bytes, shown: str) -> None:
    """Whatever the error challenge holds, one printable, bounded line comes out."""
    assert oauth2_error_details(challenge) == shown


def test_reprs_hold_no_secret() -> None:
    """No mechanism's or answer's repr shows the password, token or proof."""
    mechanisms = [Plain("u", "hunter2"), Login("u", "hunter2"), CramMd5("u", "hunter2"),
                  ScramSha256("u", "hunter2", "abcdefghijklmnop"), XOAuth2("u", TOKEN),
                  OAuthBearer("u", TOKEN, "h", 1)]
    for mechanism in mechanisms:
        assert "hunter2" not in repr(mechanism) and TOKEN not in repr(mechanism)
        exchange = AuthExchange(mechanism)
        line = exchange.command()
        assert "hunter2" not in repr(line) + line.shown + repr(exchange)
        assert TOKEN not in repr(line) + line.shown
    answer = Login("u", "hunter2")
    answer.respond(b"")
    assert "hunter2" not in repr(answer.respond(b""))


# --- the SMTP framing ---------------------------------------------------------------------


def test_command_lines_and_masks() -> None:
    """An initial response rides in base64 (shown as ***); none leaves the argument off."""
    plain = AuthExchange(Plain("user", "pass")).command()
    assert (plain.wire, plain.shown) == ("AUTH PLAIN AHVzZXIAcGFzcw==", "AUTH PLAIN ***")
    login = AuthExchange(Login("user", "pass")).command()
    assert (login.wire, login.shown) == ("AUTH LOGIN", "AUTH LOGIN")
    answer, failure = AuthExchange(Login("user", "pass")).challenge("VXNlcm5hbWU6")
    assert (answer.wire, answer.shown, failure) == ("dXNlcg==", "***", None)
    assert (CANCEL.wire, CANCEL.shown) == ("*", "*")


def test_login_ignores_challenges_that_are_not_base64() -> None:
    """LOGIN answers an old server's plain "Username:" prompt as it always did."""
    exchange = AuthExchange(Login("user", "pass"))
    exchange.command()
    assert exchange.challenge("Username:")[0].wire == "dXNlcg=="


def test_a_long_initial_response_waits_for_the_first_challenge() -> None:
    """An AUTH line that would pass 512 octets goes bare; the response follows the 334."""
    token = "t" * 600
    exchange = AuthExchange(XOAuth2("user@example.com", token))
    command = exchange.command()
    assert (command.wire, command.shown) == ("AUTH XOAUTH2", "AUTH XOAUTH2")
    answer, failure = exchange.challenge("")
    assert base64.b64decode(answer.wire) == XOAuth2("user@example.com", token).initial_response()
    assert (answer.shown, failure) == ("***", None)
    # at the edge: 372 octets are 496 in base64, a line of 509 with CRLF; 373 make 513
    fits = AuthExchange(Plain("u", "p" * 369)).command()
    assert fits.wire.startswith("AUTH PLAIN ") and len(fits.wire) + 2 == 509
    held = AuthExchange(Plain("u", "p" * 370)).command()
    assert held.wire == "AUTH PLAIN" and COMMAND_LINE_OCTETS == 512


def test_success_before_a_held_response_fails() -> None:
    """A 235 before we sent the held initial response is no success."""
    exchange = AuthExchange(XOAuth2("u", "t" * 600))
    exchange.command()
    with pytest.raises(SaslError):
        exchange.success("2.7.0 ok")


def test_challenge_and_success_decoding() -> None:
    """334 text is strict base64 (empty is empty); 235's base64 words are offered decoded."""
    assert decode_challenge("") == b"" and decode_challenge(" dXNlcg== ") == b"user"
    with pytest.raises(SaslError) as caught:
        decode_challenge("dXNlcg")
    assert isinstance(caught.value, RemoteProtocolError)
    assert success_data("2.7.0 Authentication successful") == ()
    assert success_data("2.7.0 dj1hYmM= done!") == (b"v=abc",)
    assert success_data("2.7.0 dj1hYmM= done") == (b"v=abc", base64.b64decode("done"))


# --- the choice (SPEC 5.6) ---------------------------------------------------------------


EVERYTHING = frozenset({"XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5",
                        "PLAIN", "LOGIN", "GSSAPI"})


def _choose(offered: frozenset[str] | set[str], credentials: Credentials, *, tls: bool = True,
            insecure: bool = False) -> Choice:
    return choose_mechanism(frozenset(offered), credentials, tls_active=tls, insecure=insecure)


def test_password_preference_order() -> None:
    """SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5, PLAIN, LOGIN: each taken when the better are
    not offered; never an OAuth2 mechanism for a password."""
    password = Credentials("u", "pw")
    offered = set(EVERYTHING)
    for expected in ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"):
        assert _choose(offered, password) == Choice(expected)
        offered.discard(expected)
    assert _choose(offered, password).mechanism is None


def test_oauth2_preference_order() -> None:
    """A token goes by XOAUTH2 first, else OAUTHBEARER, never by a password mechanism."""
    token = Credentials("u", TOKEN, "oauth2")
    assert _choose(EVERYTHING, token) == Choice("XOAUTH2")
    assert _choose(EVERYTHING - {"XOAUTH2"}, token) == Choice("OAUTHBEARER")
    none = _choose({"SCRAM-SHA-256", "PLAIN", "LOGIN"}, token)
    assert none.mechanism is None and "XOAUTH2, OAUTHBEARER" in none.reason


def test_cleartext_and_oauth2_need_tls_or_insecure() -> None:
    """PLAIN, LOGIN, XOAUTH2 and OAUTHBEARER are passed over without TLS unless INSECURE;
    SCRAM and CRAM-MD5 go in plain text."""
    password, token = Credentials("u", "pw"), Credentials("u", TOKEN, "oauth2")
    for offered, credentials in (({"PLAIN", "LOGIN"}, password),
                                 ({"XOAUTH2", "OAUTHBEARER"}, token)):
        refused = _choose(offered, credentials, tls=False)
        assert refused.mechanism is None and "without TLS" in refused.reason
        assert _choose(offered, credentials, tls=False, insecure=True).mechanism is not None
    assert _choose(EVERYTHING, password, tls=False) == Choice("SCRAM-SHA-256")
    assert _choose({"CRAM-MD5", "PLAIN"}, password, tls=False) == Choice("CRAM-MD5")


def test_forced_mechanism_only_when_offered() -> None:
    """An account's mechanism is the only one tried (any case); not offered, wrong for
    the secret, or unknown: none, saying why."""
    forced = Credentials("u", "pw", "password", "plain")
    assert _choose(EVERYTHING, forced) == Choice("PLAIN")
    missing = _choose(EVERYTHING - {"PLAIN"}, forced)
    assert missing.mechanism is None and "not PLAIN, which the account names" in missing.reason
    wrong = _choose(EVERYTHING, Credentials("u", "pw", "password", "XOAUTH2"))
    assert wrong.mechanism is None and "needs an OAuth2 token" in wrong.reason
    unknown = _choose(EVERYTHING, Credentials("u", "pw", "password", "GSSAPI"))
    assert unknown.mechanism is None and "GSSAPI" in unknown.reason
    bearer = Credentials("u", TOKEN, "oauth2", "OAUTHBEARER")
    assert _choose(EVERYTHING, bearer) == Choice("OAUTHBEARER")
    cleartext = _choose(EVERYTHING, forced, tls=False)
    assert cleartext.mechanism is None and "without TLS" in cleartext.reason


def test_a_password_saslprep_refuses_skips_scram() -> None:
    """A password with a control character or a Latin-1 octet goes by CRAM-MD5, not SCRAM;
    forced to SCRAM it is refused, saying why without the password."""
    for secret in ("pass\u0007word", b"caf\xe9".decode("utf-8", "surrogateescape")):
        credentials = Credentials("u", secret)
        assert _choose(EVERYTHING, credentials) == Choice("CRAM-MD5")
        forced = _choose(EVERYTHING, Credentials("u", secret, "password", "SCRAM-SHA-1"))
        assert forced.mechanism is None and "SASLprep" in forced.reason
        assert secret not in forced.reason


def test_unsafe_oauth2_tokens_and_plain_nuls_are_refused() -> None:
    """A token with ^A or a space, a login with a control character, PLAIN with a NUL: not
    sendable; the reason never holds the secret."""
    for secret in ("tok\x01auth=x", "tok en", ""):
        problem = credentials_problem("XOAUTH2", Credentials("u", secret, "oauth2"))
        assert problem is not None and (not secret or secret not in problem)
    assert credentials_problem("OAUTHBEARER", Credentials("u\x01", TOKEN, "oauth2"))
    assert credentials_problem("PLAIN", Credentials("u", "p\0w"))
    assert credentials_problem("PLAIN", Credentials("u", "pw")) is None


def test_make_mechanism_builds_each_and_refuses_others() -> None:
    """Every mechanism we speak is built by name; another name is our bug."""
    password, token = Credentials("u", "pw"), Credentials("u", TOKEN, "oauth2")
    for name in ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"):
        assert make_mechanism(name, password, nonce="abcdefghijklmnop").name == name
    for name in ("XOAUTH2", "OAUTHBEARER"):
        assert make_mechanism(name, token, nonce="", host="h", port=25).name == name
    with pytest.raises(SoftwareError):
        make_mechanism("GSSAPI", password, nonce="abcdefghijklmnop")


def test_cram_md5_matches_hmac_md5() -> None:
    """CRAM-MD5's digest is lowercase hex HMAC-MD5 keyed with the password."""
    expected = hmac.new(b"pw", b"<1.2@h>", hashlib.md5).hexdigest()
    assert CramMd5("me", "pw").respond(b"<1.2@h>").data == f"me {expected}".encode()


def test_errors_are_ours() -> None:
    """SaslError is a RemoteProtocolError (temporary); SaslPrepError a configuration error."""
    assert issubclass(SaslError, RemoteProtocolError) and issubclass(SaslError, DmaError)
    assert SaslError("x").exit_code == 75
    assert SaslPrepError("x").exit_code == 78
