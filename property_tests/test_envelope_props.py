"""Properties of the envelope sender and of recipient resolution."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.aliases import AliasEntry, AliasTable
from dma.core.envelope import Recipient, envelope_sender, local_name, resolve_recipients
from dma.core.errors import DmaError, UsageError

MAILNAME = "mail.example"
USERS = frozenset({"root", "alice", "bob"})
MAYBE_TEXT = st.none() | st.text(alphabet=st.sampled_from("ab@<> \r\n\x00.x"), max_size=12)


@settings(max_examples=200, deadline=None)
@given(MAYBE_TEXT, MAYBE_TEXT, st.text(max_size=6), st.text(max_size=8), MAYBE_TEXT)
def test_sender_never_holds_a_line_break(
    option: str | None, email: str | None, login: str, mailname: str, mask: str | None
) -> None:
    """The sender is refused (UsageError) or free of CR, LF and NUL; "" only for -f ''."""
    try:
        result = envelope_sender(option, email, login, mailname, mask)
    except UsageError:
        return
    assert not any(char in result for char in "\r\n\x00")
    if result == "":
        assert option is not None
    else:
        assert "@" in result


_ADDRESS_TEXT = st.none() | st.text(alphabet=st.sampled_from("ab@<> .x"), max_size=12)
_WORD = st.text(alphabet="abcxyz", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(_ADDRESS_TEXT, _ADDRESS_TEXT, _WORD, _WORD, _WORD, _WORD)
def test_masquerade_forms(
    option: str | None, email: str | None, login: str, mailname: str, user: str, host: str
) -> None:
    """Whatever -f and $EMAIL say (the null sender aside): MASQUERADE `user@` gives user at
    the mail name, `host` and `@host` the unmasked sender's user at host, `user@host` itself."""
    plain = envelope_sender(option, email, login, mailname, None)
    if plain == "":
        for mask in (f"{user}@", host, f"@{host}", f"{user}@{host}"):
            assert envelope_sender(option, email, login, mailname, mask) == ""
        return
    plain_user = plain.rpartition("@")[0]
    assert envelope_sender(option, email, login, mailname, f"{user}@") == f"{user}@{mailname}"
    assert envelope_sender(option, email, login, mailname, host) == f"{plain_user}@{host}"
    assert envelope_sender(option, email, login, mailname, f"@{host}") == f"{plain_user}@{host}"
    assert envelope_sender(option, email, login, mailname, f"{user}@{host}") == f"{user}@{host}"


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet="abcXYZ.-_+", min_size=1, max_size=8),
    st.sampled_from(["mail.example", "MAIL.EXAMPLE", "Mail.Example.", "localhost", "LocalHost"]),
)
def test_local_name_strips_our_domains(local: str, domain: str) -> None:
    """`user@<mailname or localhost>` in any case maps to `user`; other domains do not."""
    assert local_name(f"{local}@{domain}", MAILNAME) == local
    assert local_name(f"{local}@{domain}.other", MAILNAME) is None


ADDRESS = st.one_of(
    st.sampled_from(["root", "alice", "ALICE", "bob", "ghost", "team", "ops", "*"]),
    st.sampled_from(["root", "Alice", "team", "ops"]).map(lambda n: f"{n}@{MAILNAME.upper()}"),
    st.sampled_from(["x@far.example", "x@FAR.example", "X@far.example", "y@localhost"]),
)
TABLE_TARGET = st.sampled_from(
    ["root", "alice", "Bob", "team", "ops", "ghost", "z@far.example", "x@Far.Example"]
)


@st.composite
def tables(draw: st.DrawFn) -> AliasTable:
    """Small alias tables over the names that ADDRESS uses."""
    names = draw(st.lists(st.sampled_from(["team", "ops", "root", "*"]), max_size=4))
    return AliasTable(
        "aliases",
        tuple(
            AliasEntry(name, tuple(draw(st.lists(TABLE_TARGET, min_size=1, max_size=3))), i)
            for i, name in enumerate(names, start=1)
        ),
    )


def key(recipient: Recipient) -> tuple[bool, str]:
    if recipient.local:
        return True, recipient.address.lower()
    local, sign, domain = recipient.address.rpartition("@")
    return False, f"{local}@{domain.lower()}" if sign else recipient.address


@settings(max_examples=200, deadline=None)
@given(st.lists(ADDRESS, max_size=6), tables(), st.booleans())
def test_resolved_recipients_are_unique_and_real(
    addresses: list[str], table: AliasTable, nullclient: bool
) -> None:
    """Output has no duplicates, local results are users, nullclient keeps input as is."""
    try:
        result = resolve_recipients(
            addresses,
            mailname=MAILNAME,
            aliases=table,
            is_user=USERS.__contains__,
            nullclient=nullclient,
        )
    except DmaError:
        assert addresses
        return
    keys = [key(r) for r in result]
    assert len(set(keys)) == len(keys)
    for recipient in result:
        assert recipient.local == ("@" not in recipient.address and not nullclient)
        if recipient.local:
            assert recipient.address in USERS
    if nullclient:
        assert all(not r.local for r in result)
        expected: dict[tuple[bool, str], str] = {}
        for address in addresses:
            expected.setdefault(key(Recipient(address, local=False)), address)
        assert [r.address for r in result] == list(expected.values())
    if not addresses:
        assert result == ()
