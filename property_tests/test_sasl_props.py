"""Properties of the SASL mechanisms and their SMTP framing: any server octets, SCRAM against
a server computed from the RFC, a wrong signature always refused, the choice's rules."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

from hypothesis import assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sasl_servers import ScramServer, parse_oauthbearer, parse_xoauth2

from dma.core.credentials import Credentials
from dma.core.errors import DmaError
from dma.core.sasl import (
    MECHANISMS,
    OAUTH2_MECHANISMS,
    Answer,
    Mechanism,
    SaslError,
    SaslPrepError,
    Scram,
    ScramSha1,
    ScramSha256,
    make_mechanism,
    oauth2_error_details,
    saslprep,
)
from dma.core.smtp_auth import CLEARTEXT_MECHANISMS, AuthExchange, choose_mechanism

NONCE = "abcdefghijklmnopqrstuvwx"
PASSWORD = "pa55-w0rd-secret"
TOKEN = "ya29.token-secret"

# Characters SASLprep leaves as they are (ASCII printable, precomposed letters, CJK), so
# the test's server may hash the password's UTF-8 as it is.
_STABLE = st.characters(codec="utf-8", categories=("Lu", "Ll", "Nd", "Po", "Lo"),
                        max_codepoint=0x9FFF) | st.sampled_from(list(" !#$%&'()*+-./:;<>?@"))
stable_text = st.text(_STABLE, min_size=1, max_size=20)


def _all_mechanisms(host: str | None = "mx.example") -> list[Mechanism]:
    password = Credentials("user", PASSWORD)
    token = Credentials("user", TOKEN, "oauth2")
    return [make_mechanism(name, token if name in OAUTH2_MECHANISMS else password,
                           nonce=NONCE, host=host, port=587) for name in MECHANISMS]


# --- any server octets: only our error -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80) | st.sampled_from([
    b"r=" + NONCE.encode() + b"x,s=c2FsdA==,i=4096", b"v=AAAA", b"e=other-error",
    b'{"status":"401"}', b"", b"r=" + NONCE.encode() + b"x,s=c2FsdA==,i=999999999"]),
    max_size=4), st.lists(st.binary(max_size=40), max_size=3))
def test_any_challenge_octets_give_an_answer_or_our_error(challenges: list[bytes],
                                                          extra: list[bytes]) -> None:
    """Every mechanism, fed any challenges and any success data, answers or raises
    SaslError; nothing else escapes, and no answer's repr shows a secret."""
    for mechanism in _all_mechanisms():
        mechanism.initial_response()
        for challenge in challenges:
            try:
                answer = mechanism.respond(challenge)
            except SaslError:
                break
            assert isinstance(answer, Answer) and isinstance(answer.data, bytes)
            assert PASSWORD not in repr(answer) and TOKEN not in repr(answer)
        try:
            mechanism.completed(tuple(extra))
        except SaslError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60) | st.binary(max_size=45).map(
    lambda b: base64.b64encode(b).decode()), max_size=4), st.text(max_size=60))
def test_any_smtp_challenge_text_gives_a_line_or_our_error(texts: list[str],
                                                          success: str) -> None:
    """The SMTP framing, fed any 334 texts and any 235 text: lines out, or SaslError."""
    for mechanism in _all_mechanisms(host=None):
        exchange = AuthExchange(mechanism)
        exchange.command()
        for text in texts:
            try:
                line, failure = exchange.challenge(text)
            except SaslError:
                break
            assert line.shown == "***" and (failure is None or failure)
        try:
            exchange.success(success)
        except DmaError as error:
            assert isinstance(error, SaslError)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_oauth2_error_details_is_one_printable_line(challenge: bytes) -> None:
    """Whatever the error report, its description is one short printable line."""
    shown = oauth2_error_details(challenge)
    assert shown and shown.isprintable() and len(shown) < 700


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30), st.booleans())
def test_saslprep_gives_a_prepared_string_or_our_error(text: str, stored: bool) -> None:
    """SASLprep returns a string that it leaves as it is when prepared again, or raises
    SaslPrepError; nothing else."""
    try:
        prepared = saslprep(text, stored=stored, what="password")
    except SaslPrepError:
        return
    assert saslprep(prepared, stored=stored, what="password") == prepared


# --- SCRAM round trips against the RFC's server side -----------------------------------------


SCRAM_CLASSES: list[type[Scram]] = [ScramSha256, ScramSha1]
_HASH = {ScramSha256: "sha256", ScramSha1: "sha1"}

scram_cases = st.tuples(
    st.sampled_from(SCRAM_CLASSES),
    stable_text.filter(lambda login: login.strip() == login),
    stable_text,
    st.binary(min_size=1, max_size=32),
    st.integers(4096, 4300),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=","),
            min_size=1, max_size=24),
    st.booleans(),
)


def _unchanged(text: str, *, stored: bool) -> bool:
    """True when SASLprep takes ``text`` and leaves it as it is."""
    try:
        return saslprep(text, stored=stored, what="text") == text
    except SaslPrepError:
        return False


def _round_trip(cls: type[Scram], login: str, password: str, salt: bytes, iterations: int,
                server_nonce: str, *, in_success: bool, tamper: bool = False,
                server_password: str | None = None) -> None:
    """One exchange; raises SaslError when the client refuses to complete."""
    assume(_unchanged(password, stored=True) and _unchanged(login, stored=False))
    server = ScramServer(_HASH[cls], login, server_password or password, salt=salt,
                         iterations=iterations, nonce=server_nonce, tamper=tamper)
    client = cls(login, password, NONCE)
    first = client.respond(server.first(client.initial_response()))
    assert server.client_login == login
    final = server.final(first.data)
    if final is None:
        raise SaslError("the test server refused the proof")
    if in_success:
        client.completed((b"2.7.0", final))
    else:
        assert client.respond(final).data == b""
        client.completed(())


@settings(max_examples=60, deadline=None)
@given(scram_cases)
def test_scram_round_trip_with_the_rfc_server(
        case: tuple[type[Scram], str, str, bytes, int, str, bool]) -> None:
    """Random logins, passwords, salts, iteration counts and server nonces: the server
    accepts our proof and we accept its signature, in a 334 or with the 235."""
    cls, login, password, salt, iterations, server_nonce, in_success = case
    _round_trip(cls, login, password, salt, iterations, server_nonce, in_success=in_success)


@settings(max_examples=40, deadline=None)
@given(scram_cases)
def test_wrong_server_signature_always_fails(
        case: tuple[type[Scram], str, str, bytes, int, str, bool]) -> None:
    """A server whose signature is one bit off is never accepted, wherever it sends it."""
    cls, login, password, salt, iterations, server_nonce, in_success = case
    try:
        _round_trip(cls, login, password, salt, iterations, server_nonce,
                    in_success=in_success, tamper=True)
    except SaslError as error:
        assert "signature is wrong" in str(error)
        return
    raise AssertionError("a wrong server signature was accepted")


@settings(max_examples=30, deadline=None)
@given(scram_cases, stable_text)
def test_a_server_with_another_password_never_completes(
        case: tuple[type[Scram], str, str, bytes, int, str, bool], other: str) -> None:
    """A server that holds another password refuses our proof: no exchange completes."""
    cls, login, password, salt, iterations, server_nonce, in_success = case
    assume(other != password)
    try:
        _round_trip(cls, login, password, salt, iterations, server_nonce,
                    in_success=in_success, server_password=other)
    except SaslError:
        return
    raise AssertionError("an exchange completed with the wrong password")


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.booleans())
def test_random_signatures_always_fail(signature: bytes, in_success: bool) -> None:
    """Any v= that is not the right signature fails the exchange."""
    client = ScramSha256("user", "pencil", NONCE)
    client.respond(f"r={NONCE}srv,s=c2FsdA==,i=4096".encode())
    final = b"v=" + base64.b64encode(signature)
    try:
        if in_success:
            client.completed((final,))
        else:
            client.respond(final)
    except SaslError:
        return
    raise AssertionError("a random signature was accepted")


# --- OAuth2 initial responses parse back ------------------------------------------------------


_tokens = st.text(st.sampled_from("ABCxyz0189-._~+/"), min_size=1, max_size=40).map(
    lambda t: t + "=")
_logins = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1,
                  max_size=30)


@settings(max_examples=200, deadline=None)
@given(_logins, _tokens, st.sampled_from(["mx.example", "smtp.office365.com"]),
       st.integers(1, 65535))
def test_oauth2_messages_parse_back(login: str, token: str, host: str, port: int) -> None:
    """The test's RFC parsers read back the login, token, host and port we put in."""
    assume("\x01" not in login)
    xoauth2 = make_mechanism("XOAUTH2", Credentials(login, token, "oauth2"), nonce="")
    initial = xoauth2.initial_response()
    assert initial is not None and parse_xoauth2(initial) == (login, token)
    bearer = make_mechanism("OAUTHBEARER", Credentials(login, token, "oauth2"), nonce="",
                            host=host, port=port)
    initial = bearer.initial_response()
    assert initial is not None
    assert parse_oauthbearer(initial) == (login, {"host": host, "port": str(port),
                                                  "auth": f"Bearer {token}"})


# --- the choice ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.frozensets(st.sampled_from([*MECHANISMS, "GSSAPI", "NTLM"])),
       st.sampled_from(["password", "oauth2"]),
       st.sampled_from([None, *MECHANISMS, "plain", "GSSAPI"]),
       st.booleans(), st.booleans(),
       st.sampled_from([PASSWORD, TOKEN, "caf\udce9", "p\x07w"]))
def test_the_choice_keeps_every_rule(offered: frozenset[str], kind: str, forced: str | None,
                                     tls: bool, insecure: bool, secret: str) -> None:
    """The chosen mechanism is offered, fits the kind of secret, is the forced one when
    there is one, goes in plain text only when it may, is the best such; else a reason."""
    credentials = Credentials("user", secret, "oauth2" if kind == "oauth2" else "password",
                              forced)
    choice = choose_mechanism(offered, credentials, tls_active=tls, insecure=insecure)
    assert secret not in choice.reason
    if choice.mechanism is None:
        assert choice.reason
        return
    name = choice.mechanism
    assert name in offered and name in MECHANISMS
    assert (name in OAUTH2_MECHANISMS) == (kind == "oauth2")
    assert forced is None or name == forced.upper()
    assert tls or insecure or name not in CLEARTEXT_MECHANISMS
    if forced is None:
        order = ["XOAUTH2", "OAUTHBEARER"] if kind == "oauth2" else [
            "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]
        better = order[:order.index(name)]
        for other in better:
            if other in offered:
                assert choose_mechanism(frozenset({other}), credentials, tls_active=tls,
                                        insecure=insecure).mechanism is None
