"""Properties of the address parsers: total, fast, and round-tripping (SPEC 3.5)."""

from __future__ import annotations

import time

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dma.core.addresses import (
    format_address_list,
    is_valid_mailbox,
    parse_address_list,
    parse_envelope_address,
    parse_recipient_argument,
    split_address,
    unquoted_positions,
)
from dma.core.errors import DataError

ATEXT = "abcxyzABZ0189!#$%&'*+-/=?^_`{|}~"
GRAMMAR = ATEXT + ' \t\r\n()<>[]:;@\\,."' + "éß用"

# Text that is mostly the grammar's own characters, so that parsers get past the
# first character; plus arbitrary text.
grammar_text = st.text(alphabet=GRAMMAR, max_size=60)
any_text = st.one_of(st.text(max_size=60), grammar_text)

unicode_letters = st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd"), min_codepoint=128)
atom = st.text(alphabet=st.one_of(st.sampled_from(ATEXT), unicode_letters), min_size=1, max_size=8)
quoted_char = st.one_of(
    st.sampled_from(' ,@()[]:;.abc'),  # '<' and '>' are refused even in quotes
    unicode_letters,
    st.sampled_from(['\\"', "\\\\", "\\ "]),
)
quoted_local = st.lists(quoted_char, max_size=8).map(lambda chars: '"' + "".join(chars) + '"')
dot_local = st.lists(atom, min_size=1, max_size=3).map(".".join)
label = st.text(
    alphabet=st.one_of(st.sampled_from("abz09"), unicode_letters), min_size=1, max_size=10
).map(lambda text: f"x{text}y" if len(text) < 3 else text)
hostname = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda p: "[{}.{}.{}.{}]".format(*p))
ipv6 = st.integers(0, 2**128 - 1).map(
    lambda n: "[IPv6:" + ":".join(f"{(n >> s) & 0xFFFF:x}" for s in range(112, -1, -16)) + "]"
)
domain = st.one_of(hostname, hostname, ipv4, ipv6)
addr_spec = st.one_of(
    st.tuples(st.one_of(dot_local, quoted_local), domain).map("@".join),
    dot_local,
)
display_name = st.one_of(
    st.none(),
    st.text(
        alphabet=st.one_of(
            st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")),
            st.sampled_from(',"\\()<>@;:. \t'),
        ),
        max_size=20,
    ),
)


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_address_list_is_total(value: str) -> None:
    """Any text gives a tuple of valid envelope addresses or a DataError, nothing else."""
    try:
        result = parse_address_list(value)
    except DataError:
        return
    assert isinstance(result, tuple)
    for address in result:
        assert parse_envelope_address(address) == address


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_envelope_returns_input_or_raises(text: str) -> None:
    """parse_envelope_address returns its input unchanged whenever it does not raise."""
    try:
        result = parse_envelope_address(text)
    except DataError:
        assert not is_valid_mailbox(text)
        return
    assert result == text
    assert is_valid_mailbox(text)


@settings(max_examples=200, deadline=None)
@given(addr_spec)
def test_generated_addr_specs_validate_unchanged(address: str) -> None:
    """Well-formed generated addresses that fit the length limits are returned as given."""
    local, _domain = split_address(address)
    assume(len(local.encode()) <= 64 and len(address.encode()) <= 254)
    assert parse_envelope_address(address) == address


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_split_address_rejoins(address: str) -> None:
    """split_address is lossless: local, '@' and domain give the input back."""
    try:
        local, domain = split_address(address)
    except DataError:
        return
    assert (local if domain is None else f"{local}@{domain}") == address
    assert domain is None or "@" not in domain


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(display_name, addr_spec), max_size=5))
def test_format_parse_round_trip(entries: list[tuple[str | None, str]]) -> None:
    """Parsing a formatted list gives back exactly the addr-specs that went in."""
    assume(all(is_valid_mailbox(address) for _name, address in entries))
    value = format_address_list(entries)
    assert parse_address_list(value) == tuple(address for _name, address in entries)


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(["(", ")", '"', "\\", "<", ">", "[", "a@", "((a)", '"\\"', "(\\(", ",", ":"]),
    st.integers(5_000, 20_000),
    st.sampled_from(["", "a@x", ")", '"', ";"]),
)
def test_long_pathological_inputs_stay_fast(piece: str, count: int, tail: str) -> None:
    """Long runs of parentheses, quotes and specials are answered in linear time."""
    value = piece * count + tail
    started = time.perf_counter()
    for parse in (parse_address_list, parse_envelope_address):
        try:
            parse(value)
        except DataError:
            pass
    assert time.perf_counter() - started < 2.0


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_recipient_argument_is_total(value: str) -> None:
    """Any argument gives at least one valid envelope address or a DataError, nothing else."""
    try:
        result = parse_recipient_argument(value)
    except DataError:
        return
    assert result
    for address in result:
        assert parse_envelope_address(address) == address


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(addr_spec, st.booleans(), st.sampled_from(["", " ", "\t"])),
        min_size=1, max_size=5,
    )
)
def test_recipient_argument_splits_a_comma_list(entries: list[tuple[str, bool, str]]) -> None:
    """Valid addresses, some in <>, joined by commas and blanks come back in order."""
    for address, _, _ in entries:
        assume(is_valid_mailbox(address))
    text = ",".join(
        f"{blank}<{address}>{blank}" if wrapped else f"{blank}{address}{blank}"
        for address, wrapped, blank in entries
    )
    assert parse_recipient_argument(text) == tuple(address for address, _, _ in entries)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab,@"\\ #', max_size=40), st.sampled_from([",", "@", " ,#"]))
def test_unquoted_positions_point_at_the_character_outside_quotes(
    text: str, wanted: str
) -> None:
    """Every position found holds one of the characters; without quotes they are all of
    their positions; with quotes around the whole text there are none."""
    positions, open_quote = unquoted_positions(text, wanted)
    assert all(text[i] in wanted for i in positions)
    assert list(positions) == sorted(set(positions))
    if '"' not in text:
        assert list(positions) == [i for i, c in enumerate(text) if c in wanted]
        assert not open_quote
    plain = text.replace('"', "").replace("\\", "")
    assert unquoted_positions(f'"{plain}"', wanted) == ((), False)
