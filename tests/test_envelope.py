"""Envelope sender (SPEC 3.6) and recipient resolution (SPEC 3.7)."""

from __future__ import annotations

import pytest

from dma.core import sysexits
from dma.core.aliases import AliasTable, parse_aliases
from dma.core.envelope import (
    Recipient,
    check_no_control,
    envelope_sender,
    local_name,
    local_user,
    resolve_recipients,
)
from dma.core.errors import DataError, NoUserError, UsageError

MAILNAME = "test.example"
USERS = frozenset({"root", "alice", "bob", "ops"})


def sender(option: str | None = None, email: str | None = None, mask: str | None = None) -> str:
    return envelope_sender(option, email, "root", MAILNAME, mask)


def resolve(
    *addresses: str, aliases: str = "", nullclient: bool = False
) -> tuple[Recipient, ...]:
    return resolve_recipients(
        addresses,
        mailname=MAILNAME,
        aliases=parse_aliases(aliases, "/etc/aliases"),
        is_user=USERS.__contains__,
        nullclient=nullclient,
    )


def local(*names: str) -> tuple[Recipient, ...]:
    return tuple(Recipient(name, local=True) for name in names)


# --- sender: the C dma's cases (dma-behaviour.md 3.6) ----------------------------------


@pytest.mark.parametrize(
    ("option", "email", "mask", "expected"),
    [
        (None, None, None, "root@test.example"),
        ("bob", None, None, "bob@test.example"),
        ("@other", None, None, "root@other"),
        ("bob@example.com", None, None, "bob@example.com"),
        (None, "eve@example.net", None, "eve@example.net"),
        (None, "eve", None, "eve@test.example"),
        ("bob@example.com", "eve@example.net", None, "bob@example.com"),
        (None, "", None, "root@test.example"),
        (None, None, "john@", "john@test.example"),
        (None, None, "percolator", "root@percolator"),
        (None, None, "@percolator", "root@percolator"),
        ("bob@example.com", None, "herb@ert", "herb@ert"),
        (None, "eve@example.net", "@masq.example", "eve@masq.example"),
    ],
)
def test_sender_golden(
    option: str | None, email: str | None, mask: str | None, expected: str
) -> None:
    """-f, then $EMAIL, then login@mailname; bare users get the mail name; MASQUERADE wins."""
    assert sender(option, email, mask) == expected


@pytest.mark.parametrize(
    ("option", "email", "expected_user"),
    [
        (None, None, "root"),
        ("bob@example.com", None, "bob"),
        ("bob", None, "bob"),
        ("@other.example", None, "root"),
        (None, "eve@example.net", "eve"),
        ("<bob@example.com>", "eve@example.net", "bob"),
    ],
)
def test_masquerade_forms_follow_the_manual(
    option: str | None, email: str | None, expected_user: str
) -> None:
    """MASQUERADE `john@` sends as john at the mail name whatever -f or $EMAIL say (the
    manual: `john@` on host hamlet sends all mail as john@hamlet); `percolator` and
    `@percolator` keep the sender's user at percolator; `user@host` is exactly that."""
    assert sender(option, email, "john@") == "john@test.example"
    assert sender(option, email, "percolator") == f"{expected_user}@percolator"
    assert sender(option, email, "@percolator") == f"{expected_user}@percolator"
    assert sender(option, email, "herb@ert.example") == "herb@ert.example"


def test_masquerade_user_uses_the_mail_name_of_hamlet() -> None:
    """The manual's example: MASQUERADE `john@` on host hamlet, -f naming another domain,
    gives john@hamlet."""
    assert envelope_sender("mailer@gnu.example", None, "root", "hamlet", "john@") == "john@hamlet"


def test_sender_splits_at_last_at() -> None:
    """A quoted local part holding '@' keeps it: the domain is after the last '@'."""
    assert sender('"a@b"@example.com') == '"a@b"@example.com'
    assert sender(None, None, '"x@y"@masq') == '"x@y"@masq'


# --- sender: deliberate differences --------------------------------------------------


def test_empty_option_is_null_sender() -> None:
    """`-f ''` is the null sender (the C dma gives root@host), untouched by MASQUERADE."""
    assert sender("") == ""
    assert sender("", None, "herb@ert") == ""
    assert sender("<>") == ""


def test_angle_brackets_are_removed() -> None:
    """`-f '<bob@x>'` and `EMAIL='Bob <bob@x>'` give bob@x (the C dma sends <<bob@x>>)."""
    assert sender("<bob@x.example>") == "bob@x.example"
    assert sender(None, "Bob Smith <bob@x.example>") == "bob@x.example"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b", "bob@x\r\nRCPT TO:<e@f>"])
@pytest.mark.parametrize("slot", [0, 1, 2, 3, 4])
def test_sender_refuses_control_characters(bad: str, slot: int) -> None:
    """CR, LF or NUL in any of the sender's inputs is a UsageError (exit 64)."""
    values: list[str | None] = [None, None, "root", MAILNAME, None]
    values[slot] = bad
    option, email, login, mailname, mask = values
    with pytest.raises(UsageError) as caught:
        envelope_sender(option, email, login or "root", mailname or MAILNAME, mask)
    assert caught.value.exit_code == sysexits.EX_USAGE


def test_check_no_control_returns_value() -> None:
    """A clean value comes back unchanged; a dirty one names what it is."""
    assert check_no_control("bob@example.com", "x") == "bob@example.com"
    with pytest.raises(UsageError, match="recipient"):
        check_no_control("bob\n", "recipient")


# --- local_name ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("bob", "bob"),
        ("bob@test.example", "bob"),
        ("bob@TEST.Example", "bob"),
        ("bob@localhost", "bob"),
        ("Bob@LOCALHOST", "Bob"),
        ("bob@test.example.", "bob"),
        ("bob@other.example", None),
        ("bob@sub.test.example", None),
        ("@localhost", None),
        ("", None),
    ],
)
def test_local_name(address: str, expected: str | None) -> None:
    """Bare names and names at the mail name or localhost (any case) are local."""
    assert local_name(address, MAILNAME) == expected


# --- recipients ----------------------------------------------------------------------


def test_local_and_remote_classification() -> None:
    """Bare names and @mailname are local; other domains are remote and kept as written."""
    assert resolve("alice", "bob@TEST.EXAMPLE", "carol@Example.com") == (
        Recipient("alice", local=True),
        Recipient("bob", local=True),
        Recipient("carol@Example.com", local=False),
    )


def test_local_user_is_the_local_name_unless_nullclient() -> None:
    """Queued addresses of ours go to their user here, except with NULLCLIENT, where
    every address goes out by SMTP; others always do."""
    assert local_user("bob@" + MAILNAME, mailname=MAILNAME, nullclient=False) == "bob"
    assert local_user("bob", mailname=MAILNAME, nullclient=False) == "bob"
    assert local_user("bob", mailname=MAILNAME, nullclient=True) is None
    assert local_user("bob@elsewhere.example", mailname=MAILNAME, nullclient=False) is None


def test_aliases_apply_to_local_names() -> None:
    """Local names, also at the mail name, go through the aliases, recursively."""
    aliases = "postmaster: root\nroot: root, ops, admin@example.com\n"
    assert resolve("postmaster@test.example", aliases=aliases) == (
        *local("root", "ops"),
        Recipient("admin@example.com", local=False),
    )


def test_duplicates_dropped() -> None:
    """Repeats vanish: local names without case, remote domains without case, first kept."""
    aliases = "team: alice, bob\n"
    result = resolve(
        "alice", "ALICE@localhost", "team", "x@Example.com", "x@example.COM", "X@example.com",
        aliases=aliases,
    )
    assert result == (
        *local("alice", "bob"),
        Recipient("x@Example.com", local=False),
        Recipient("X@example.com", local=False),
    )


def test_unknown_local_name_is_exit_67() -> None:
    """A local name that is neither alias nor user fails submission with exit 67."""
    with pytest.raises(NoUserError) as caught:
        resolve("alice", "ghost@test.example")
    assert "ghost" in str(caught.value) and caught.value.exit_code == sysexits.EX_NOUSER


def test_wildcard_applies_to_submitted_names() -> None:
    """`*` catches submitted local names that no alias matches."""
    assert resolve("ghost", "alice", aliases="*: ops\nalice: bob\n") == local("ops", "bob")


def test_nullclient_sends_everything_as_is() -> None:
    """With NULLCLIENT nothing is local and aliases are unused, bare names included."""
    result = resolve("root", "ghost", "bob@test.example", aliases="root: ops\n", nullclient=True)
    assert result == (
        Recipient("root", local=False),
        Recipient("ghost", local=False),
        Recipient("bob@test.example", local=False),
    )


def test_no_addresses_is_empty() -> None:
    """No addresses give an empty tuple for the caller to report."""
    assert resolve_recipients(
        [], mailname=MAILNAME, aliases=AliasTable(), is_user=USERS.__contains__, nullclient=False
    ) == ()


@pytest.mark.parametrize("bad", ["", "  ", "bob@", "@example.com"])
def test_malformed_recipient_is_data_error(bad: str) -> None:
    """An empty address or one with nothing before or after its '@' is a DataError."""
    with pytest.raises(DataError):
        resolve("alice", bad)


def test_recipient_with_line_break_is_usage_error() -> None:
    """CR or LF in a recipient is refused as header injection."""
    with pytest.raises(UsageError):
        resolve("alice\r\nBcc: eve@example.com")


def test_alias_loop_fails_submission() -> None:
    """An alias loop reached from a recipient is a DataError naming the loop."""
    with pytest.raises(DataError, match="alias loop: a -> b -> a"):
        resolve("a", aliases="a: b\nb: a\n")


@pytest.mark.parametrize(("address", "expected"), [
    ('"jd"@localhost', "jd"),
    ('"j.d"@dma.test', "j.d"),
    ('"j\\d"@localhost', "jd"),
    ('"j d"@localhost', '"j d"'),
    ('"a,b"@dma.test', '"a,b"'),
])
def test_quotes_that_quote_nothing_are_dropped_from_local_names(
    address: str, expected: str
) -> None:
    """`"jd"@localhost` is the local user jd (RFC 5321 4.1.2: the same mailbox); a
    local part that needs its quotes keeps them (and no user has such a name)."""
    assert local_name(address, "dma.test") == expected
