"""Envelope addresses and To:/Cc:/Bcc: address lists (SPEC 3.5, 3.6, 5.4)."""

from __future__ import annotations

import pytest

from dma.core import sysexits
from dma.core.addresses import (
    format_address_list,
    is_valid_mailbox,
    needs_smtputf8,
    parse_address_list,
    parse_envelope_address,
    parse_recipient_argument,
    split_address,
    unquoted_positions,
)
from dma.core.errors import DataError

# --------------------------------------------------------------------------------------
# split_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("user@example.com", ("user", "example.com")),
        ("root", ("root", None)),
        ("a@b@c", ("a@b", "c")),
        ('"a@b"@c', ('"a@b"', "c")),
        ('"a@b"', ('"a@b"', None)),
        ('"a\\"@"@x', ('"a\\"@"', "x")),
        ("user@", ("user", "")),
        ("@host", ("", "host")),
        ("", ("", None)),
    ],
)
def test_split_address_at_last_unquoted_at(address: str, expected: tuple[str, str | None]) -> None:
    """The split is at the last '@' outside quotes, with None for a missing domain."""
    assert split_address(address) == expected


def test_unquoted_positions_of_several_characters() -> None:
    """unquoted_positions finds any of several characters outside quotes, in order, and
    none inside (escaped quotes included), as the aliases file splits its destinations."""
    text = 'a, "j d"@x "a,b\\" #c"@y\tz # note "open'
    positions, open_quote = unquoted_positions(text, " \t,#")
    assert [text[i] for i in positions] == [",", " ", " ", "\t", " ", "#", " ", " "]
    assert positions[0] == 1 and positions[-1] == len(text) - 6
    assert open_quote
    assert unquoted_positions('"a,b"', ",") == ((), False)


def test_split_address_rejects_unterminated_quote() -> None:
    """An unterminated quoted string is a DataError naming the address."""
    with pytest.raises(DataError, match="unterminated") as caught:
        split_address('"abc@x')
    assert "abc@x" in str(caught.value)


# --------------------------------------------------------------------------------------
# parse_envelope_address

VALID_ENVELOPE = [
    "user@example.com",
    "root",
    "first.last+tag@mail.example.org",
    "!#$%&'*+-/=?^_`{|}~@x.example",
    '"john smith"@example.com',
    '"a@b,c"@x',
    '"quote\\"inside"@x',
    '"back\\\\slash"@x',
    '""@x',
    "jörg@bücher.example",
    "用户@例子.广告",
    "user@[192.0.2.1]",
    "user@[IPv6:2001:db8::1]",
    "user@[ipv6:::1]",
    "user@localhost",
    "u@xn--bcher-kva.example",
    "a" * 64 + "@x",
    "u@" + ".".join(["a" * 63] * 3) + "." + "b" * 60,  # 254 octets in all
    "u@a1-b2.c",
]


@pytest.mark.parametrize("address", VALID_ENVELOPE)
def test_envelope_accepts_and_returns_input(address: str) -> None:
    """A valid forward or reverse path comes back unchanged."""
    assert parse_envelope_address(address) == address
    assert is_valid_mailbox(address)


INVALID_ENVELOPE = [
    ("", "empty"),
    ("a@x\r", "carriage return"),
    ("a@x\nRCPT TO:<b@y>", "line feed"),
    ("a\0@x", "NUL"),
    ("<a@x>", "angle"),
    ('"a>b"@x', "angle"),
    ("john smith@x", "space"),
    ("a..b@x", "empty part"),
    (".a@x", "empty part"),
    ("a.@x", "empty part"),
    ("a(b)@x", "'\\('"),
    ("a,b@x", "','"),
    ("a@", "domain after '@' is empty"),
    ("@x", "local part before '@' is empty"),
    ("a@x..y", "empty label"),
    ("a@.x", "empty label"),
    ("a@x.", "empty label"),
    ("a@-x.com", "starts or ends with '-'"),
    ("a@x-.com", "starts or ends with '-'"),
    ("a@x_y.com", "'_'"),
    ("a@b@c", "'@'"),
    ('"a"b@x', "after its closing quote"),
    ('"a".b@x', "after its closing quote"),
    ('"a@x', "unterminated"),
    ('"a\tb"@x', "inside quotes"),
    ('"a\\\tb"@x', "backslash"),
    ("a\u2028b@x", "only allowed in quotes"),
    ("a\u00a0b@x", "only allowed in quotes"),
    ("a@x\u3000y", "only letters"),
    ("a" * 65 + "@x", "64 octets"),
    ("ö" * 33 + "@x", "64 octets"),
    ("u@" + "a" * 64 + ".x", "63 octets"),
    ("u@" + ".".join(["a" * 50] * 6), "255 octets"),
    ("u@" + ".".join(["a" * 63] * 3) + "." + "b" * 61, "254 octets"),
    ("a@[1.2.3]", "not \\[IPv4\\]"),
    ("a@[300.1.1.1]", "not \\[IPv4\\]"),
    ("a@[01.2.3.4]", "not \\[IPv4\\]"),
    ("a@[IPv6:1.2.3.4]", "not \\[IPv4\\]"),
    ("a@[IPv6:::1%eth0]", "zone id"),
    ("a@[x:y]", "not \\[IPv4\\]"),
    ("a@[]", "empty or not closed"),
    ("a@[1.2.3.4", "not closed"),
    ("a@[1.2.3.4]x", "not closed"),
]


@pytest.mark.parametrize(("address", "reason"), INVALID_ENVELOPE)
def test_envelope_rejects_with_reason(address: str, reason: str) -> None:
    """An invalid path raises DataError (exit 65) naming the address and the reason."""
    with pytest.raises(DataError, match=reason) as caught:
        parse_envelope_address(address)
    assert caught.value.exit_code == sysexits.EX_DATAERR
    assert repr(address[:20])[1:-1] in str(caught.value)
    assert not is_valid_mailbox(address)


def test_envelope_rejects_surrogates_without_crashing() -> None:
    """A lone surrogate (not encodable as UTF-8) is a DataError, not a UnicodeError."""
    with pytest.raises(DataError):
        parse_envelope_address("a\ud800@x")


@pytest.mark.parametrize(
    ("address", "expected"),
    [("user@example.com", False), ("jörg@example.de", True), ("u@bücher.de", True)],
)
def test_needs_smtputf8(address: str, expected: bool) -> None:
    """SMTPUTF8 is needed exactly when the address has a non-ASCII character."""
    assert needs_smtputf8(address) is expected


# --------------------------------------------------------------------------------------
# parse_address_list: real-world header values

REAL_WORLD = [
    # cron
    ("root", ("root",)),
    ("root (Cron Daemon)", ("root",)),
    # Outlook
    ('"Smith, John" <John.Smith@contoso.com>', ("John.Smith@contoso.com",)),
    (
        '"Smith, John" <js@contoso.com>; "Doe, Jane" <jd@contoso.com>',
        ("js@contoso.com", "jd@contoso.com"),
    ),
    ("'John Smith' <js@example.com>", ("js@example.com",)),
    ('"js@example.com" <js@example.com>', ("js@example.com",)),
    ("js@example.com <js@example.com>", ("js@example.com",)),
    ("John Smith (Sales) <js@contoso.com>", ("js@contoso.com",)),
    # Gmail
    ('"Alice Example" <alice@gmail.com>, bob@gmail.com', ("alice@gmail.com", "bob@gmail.com")),
    ("Jörg Müller <joerg@example.de>", ("joerg@example.de",)),
    ("=?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <joerg@example.de>", ("joerg@example.de",)),
    ("=?utf-8?q?J=C3=B6rg?= <j@x>", ("j@x",)),
    ('"=?utf-8?q?J=C3=B6rg?=" <j@x>', ("j@x",)),
    # mutt, folded with LF and with CRLF
    (
        "Mutt User <mutt@example.org>,\n\t\"Other, Person\" <other@example.org>",
        ("mutt@example.org", "other@example.org"),
    ),
    ("a@example.org,\r\n b@example.org", ("a@example.org", "b@example.org")),
    ("Long\r\n Name <a@x>", ("a@x",)),
    ('"folded\r\n quoted"@x', ('"folded quoted"@x',)),
    # git send-email
    ('"A. U. Thor" <author@example.com>', ("author@example.com",)),
    (
        "Linus Torvalds <torvalds@linux-foundation.org>, linux-kernel@vger.kernel.org",
        ("torvalds@linux-foundation.org", "linux-kernel@vger.kernel.org"),
    ),
    ("=?UTF-8?q?Bj=C3=B6rn=20T=C3=B6pel?= <bjorn@kernel.org>", ("bjorn@kernel.org",)),
    # RFC 5322 appendix A
    (
        "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
        ("mary@x.test", "jdoe@example.org", "one@y.test"),
    ),
    (
        '<boss@nil.test>, "Giant; \\"Big\\" Box" <sysservices@example.net>',
        ("boss@nil.test", "sysservices@example.net"),
    ),
    (
        "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
        ("c@a.test", "joe@where.test", "jdoe@one.test"),
    ),
    ("Undisclosed recipients:;", ()),
    ("undisclosed-recipients:;", ()),
    ("undisclosed-recipients: ;", ()),
    ("undisclosed-recipients:", ()),
    ("Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>", ("pete@silly.test",)),
    (
        "A Group(Some people)\r\n     :Chris Jones <c@(Chris's host.)public.example>,\r\n"
        "         joe@example.org,\r\n  John <jdoe@one.test> (my dear friend);"
        " (the end of the group)",
        ("c@public.example", "joe@example.org", "jdoe@one.test"),
    ),
    ("Joe Q. Public <john.q.public@example.com>", ("john.q.public@example.com",)),
    (
        "<@machine.tld:mary@example.net>, , jdoe@test   . example",
        ("mary@example.net", "jdoe@test.example"),
    ),
    ("<@r1,@r2:a@x>", ("a@x",)),
    # the task's own cases
    ("js@x (John (the) Smith)", ("js@x",)),
    ("team: a@x, b@y;", ("a@x", "b@y")),
    ("team: a@x, b@y;, c@z", ("a@x", "b@y", "c@z")),
    ("g: a, b;, c", ("a", "b", "c")),
    ("a@x,,b@y", ("a@x", "b@y")),
    ("a@x, b@y,", ("a@x", "b@y")),
    (",", ()),
    ("", ()),
    (" \t", ()),
    ('"a b"@x', ('"a b"@x',)),
    ('"a,b@c" <"q\\"x"@y>', ('"q\\"x"@y',)),
    ("a@[192.0.2.1], b@[ IPv6:::1 ]", ("a@[192.0.2.1]", "b@[IPv6:::1]")),
    ("<root>", ("root",)),
    ("用户@例子.广告", ("用户@例子.广告",)),
    ("a@x\n", ("a@x",)),
]


@pytest.mark.parametrize(("value", "expected"), REAL_WORLD)
def test_address_list_real_world(value: str, expected: tuple[str, ...]) -> None:
    """Header values as real mailers write them give their addr-specs in order."""
    assert parse_address_list(value) == expected


ADDRESS_LIST_ERRORS = [
    ("John Smith", "John Smith", "not an address"),
    ("a@b@x", "a@b@x", "more than one '@'"),
    ("a@x b@y", "a@x b@y", "more than one '@'"),
    ('"Smith, John <js@x>', '"Smith, John', "never closed"),
    ("js@x (John (the Smith)", "(John", "never closed"),
    ("js@x) y", ")", "without a '\\('"),
    ("Name <js@x", "Name <js@x", "never closed with '>'"),
    ("js@x>", "js@x>", "without a '<'"),
    ("<a<b>>", "<a<", "inside angle"),
    ("Name <>", "Name <>", "empty address"),
    ("<a@x> junk", "<a@x> junk", "text after the address"),
    ("<a@x, b@y>", "a@x, b@y", "more than one '@'"),
    ("Name <a@x b>", "a@x b", "not a single address"),
    ("g: h: a;;", "h", "group inside a group"),
    (": a@x;", ":", "without a group name"),
    ("a@x: b@y;", "a@x", "group name"),
    ("<@route a@x>", "<@route a@x>", "source route"),
    ("a@", "a@", "domain"),
    ("@x", "@x", "local part"),
    ("a..b@x", "a..b@x", "local part"),
    ("a@x..y", "a@x..y", "domain"),
    ("a@[1.2.3]", "a@[1.2.3]", "address literal"),
    ("a@[1.2.3.4", "[1.2.3.4", "never closed"),
    ("a@x]", "]", "without a '\\['"),
    ("a\\b@x", "\\\\b@x", "outside quotes"),
    ('"a".b@x', '"a".b@x', "closing quote"),
    ("a@under_score.example", "a@under_score.example", "'_'"),
    ("a" * 65 + "@x", "aaaa", "64 octets"),
    ("a@x\nBcc: victim@y", "Bcc: victim@y", "does not fold"),
    ("a@x\rb", "\\\\rb", "carriage return"),
    ("a@x\0", "\\\\x00", "NUL"),
    ("a@x\x01", "\\\\x01", "outside quotes"),
    ('"a\\', '"a', "never closed"),
    ("(a\\", "(a", "never closed"),
]


@pytest.mark.parametrize(("value", "named", "reason"), ADDRESS_LIST_ERRORS)
def test_address_list_errors(value: str, named: str, reason: str) -> None:
    """A malformed list raises DataError quoting the offending text and saying why."""
    with pytest.raises(DataError, match=reason) as caught:
        parse_address_list(value)
    assert caught.value.exit_code == sysexits.EX_DATAERR
    assert named.replace("\\\\", "\\") in str(caught.value)


def test_address_list_results_are_envelope_addresses() -> None:
    """Every addr-spec the list parser returns passes the envelope validator."""
    for value, _expected in REAL_WORLD:
        for address in parse_address_list(value):
            assert parse_envelope_address(address) == address


# --------------------------------------------------------------------------------------
# parse_recipient_argument: command-line arguments (sendmail address lists)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("a@x.org,b@y.org", ("a@x.org", "b@y.org")),
        ("<a@x.org>", ("a@x.org",)),
        ("a@x.org, <b@y.org> ,c@z.org,", ("a@x.org", "b@y.org", "c@z.org")),
        ('"c,d"@y.org', ('"c,d"@y.org',)),
        ('"Doe, Jane" <j@x.org>, root', ("j@x.org", "root")),
        ("root (the admin, really)", ("root",)),
        ("team: a@x, b@y;", ("a@x", "b@y")),
    ],
)
def test_recipient_argument_is_an_address_list(argument: str, expected: tuple[str, ...]) -> None:
    """An argument splits at commas outside quotes, brackets and comments; <...> unwraps."""
    assert parse_recipient_argument(argument) == expected


@pytest.mark.parametrize("address", VALID_ENVELOPE)
def test_recipient_argument_with_one_address_gives_it_back(address: str) -> None:
    """Every valid envelope address given alone comes back unchanged."""
    assert parse_recipient_argument(address) == (address,)


@pytest.mark.parametrize("argument", ["", ",", " , ", "undisclosed-recipients:;"])
def test_recipient_argument_naming_nobody_is_a_data_error(argument: str) -> None:
    """An argument with no address in it exits 65 saying that it names no recipient."""
    with pytest.raises(DataError, match="names no recipient") as caught:
        parse_recipient_argument(argument)
    assert caught.value.exit_code == sysexits.EX_DATAERR


def test_bad_address_in_a_recipient_argument_is_named() -> None:
    """One bad address among several fails the argument, naming that address."""
    with pytest.raises(DataError, match=r"b c@y\.org"):
        parse_recipient_argument("a@x.org, b c@y.org")


# --------------------------------------------------------------------------------------
# format_address_list

FORMATTED = [
    ([(None, "a@x")], "a@x"),
    ([("", "a@x")], "a@x"),
    ([("John Smith", "js@x")], "John Smith <js@x>"),
    ([("Smith, John", "js@x")], '"Smith, John" <js@x>'),
    ([("A. U. Thor", "a@x")], '"A. U. Thor" <a@x>'),
    ([('say "hi"', "a@x")], '"say \\"hi\\"" <a@x>'),
    ([("back\\slash", "a@x")], '"back\\\\slash" <a@x>'),
    ([("Jörg", "j@x")], "Jörg <j@x>"),
    ([("=?utf-8?q?J=C3=B6rg?=", "j@x")], "=?utf-8?q?J=C3=B6rg?= <j@x>"),
    ([(" padded ", "a@x")], '" padded " <a@x>'),
    ([("Cron Daemon", "root"), (None, '"a b"@[IPv6:::1]')], 'Cron Daemon <root>, "a b"@[IPv6:::1]'),
    ([], ""),
]


@pytest.mark.parametrize(("entries", "expected"), FORMATTED)
def test_format_address_list(entries: list[tuple[str | None, str]], expected: str) -> None:
    """Display names are quoted only when needed, and the addr-specs parse back."""
    assert format_address_list(entries) == expected
    assert parse_address_list(expected) == tuple(address for _name, address in entries)


@pytest.mark.parametrize("name", ["Evil\r\nBcc: x@y", "Evil\nBcc: x@y", "nul\0", "ls\u2028x"])
def test_format_rejects_line_breaks_in_names(name: str) -> None:
    """A display name holding a line break or NUL is refused (header injection)."""
    with pytest.raises(DataError, match="display name"):
        format_address_list([(name, "a@x")])


def test_format_rejects_invalid_address() -> None:
    """An addr-spec that is not a valid address is refused, named in the error."""
    with pytest.raises(DataError, match="a b@x"):
        format_address_list([("Name", "a b@x")])


def test_octets_that_are_not_utf8_are_shown_as_in_the_log() -> None:
    """An address holding a Latin-1 octet (surrogateescape from argv) is refused with the
    octet shown as \\xe9, as log lines show it, never as repr's lone surrogate."""
    with pytest.raises(DataError) as refused:
        parse_address_list("r\udce9@x.org")
    assert "\\xe9" in str(refused.value)
    assert "udce9" not in str(refused.value)
    str(refused.value).encode("utf-8")  # and the message can be written anywhere
