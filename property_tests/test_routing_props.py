"""Properties of routing: next_hop and grouping are total and lose nothing (SPEC 5.3)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError
from dma.core.routing import (
    HostLookup,
    MxRecord,
    NextHop,
    Targets,
    group_by_next_hop,
    hosts_to_look_up,
    interleave_addresses,
    join_recipient_parts,
    mx_outcome,
    next_hop,
    normalise_domain,
    recipient_parts,
)

GRAMMAR = "abcXYZ09-_.@[]:\"\\ éß用"
any_text = st.one_of(st.text(max_size=40), st.text(alphabet=GRAMMAR, max_size=40))

letters = st.characters(whitelist_categories=("Ll", "Lu", "Lo", "Nd"))
label = st.text(alphabet=st.one_of(st.sampled_from("abzAZ09"), letters), min_size=1, max_size=12)
ascii_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", fullmatch=True)
ascii_domain = st.lists(ascii_label, min_size=1, max_size=4).map(".".join)
unicode_domain = st.lists(label, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda p: "[{}.{}.{}.{}]".format(*p))
ipv6 = st.integers(0, 2**128 - 1).map(
    lambda n: "[IPv6:" + ":".join(f"{(n >> s) & 0xFFFF:x}" for s in range(112, -1, -16)) + "]"
)
local_part = st.sampled_from(["a", "root", "x.y", '"q@uoted"', "Z"])
recipient = st.one_of(
    st.tuples(local_part, st.one_of(ascii_domain, unicode_domain, ipv4, ipv6)).map("@".join),
    local_part,
    any_text,
)
smarthost = st.one_of(st.none(), st.sampled_from(["relay.example", "127.0.0.1"]))
port = st.integers(1, 65535)


@settings(max_examples=200, deadline=None)
@given(any_text, smarthost, port)
def test_next_hop_is_total(text: str, relay: str | None, number: int) -> None:
    """Any recipient text gives a NextHop or a DataError, nothing else."""
    try:
        hop = next_hop(text, smarthost=relay, port=number)
    except DataError:
        assert relay is None
        return
    assert hop.port == number
    assert (hop.kind == "smarthost") == (relay is not None)


@settings(max_examples=200, deadline=None)
@given(local_part, ascii_domain, port)
def test_ascii_domain_routes_to_itself_lower_cased(local: str, domain: str, number: int) -> None:
    """A plain ASCII domain is looked up as itself, lower-cased."""
    assert next_hop(f"{local}@{domain}", smarthost=None, port=number) == NextHop(
        "mx", domain.lower(), number
    )


@settings(max_examples=200, deadline=None)
@given(st.one_of(ascii_domain, unicode_domain, any_text))
def test_normalised_domain_is_ascii_and_stable(domain: str) -> None:
    """A normalised domain is lower-case ASCII and normalises to itself."""
    try:
        name = normalise_domain(domain)
    except DataError:
        return
    assert name.isascii()
    assert name == name.lower()
    assert normalise_domain(name) == name


@settings(max_examples=200, deadline=None)
@given(st.lists(recipient, max_size=12), smarthost, port)
def test_grouping_keeps_every_item_once_and_in_order(
    recipients: list[str], relay: str | None, number: int
) -> None:
    """Each item lands once: in the group of its own next hop, in input order, or set
    aside with the DataError ``next_hop`` raises for it."""
    pairs = [(f"{index:x}", text) for index, text in enumerate(recipients)]
    routes = group_by_next_hop(pairs, smarthost=relay, port=number)
    hops = [hop for hop, _ in routes.groups]
    assert len(set(hops)) == len(hops)
    expected: dict[str, NextHop | None] = {}
    for item, text in pairs:
        try:
            expected[item] = next_hop(text, smarthost=relay, port=number)
        except DataError:
            expected[item] = None
    seen = [item for _, items in routes.groups for item in items]
    aside = [item for item, _ in routes.unroutable]
    assert sorted(seen + aside) == sorted(expected)
    assert all(expected[item] is None for item in aside)
    assert all(isinstance(error, DataError) for _, error in routes.unroutable)
    if relay is not None:
        assert not aside
    for hop, items in routes.groups:
        assert items
        assert all(expected[item] == hop for item in items)
        assert list(items) == sorted(items, key=lambda item: int(item, 16))
    first_seen = list(dict.fromkeys(hop for item, _ in pairs if (hop := expected[item])))
    assert hops == first_seen


addresses = st.lists(st.sampled_from(["::1", "::2", "2001:db8::1", "fe80::1"]), max_size=4)
addresses4 = st.lists(st.sampled_from(["127.0.0.1", "192.0.2.1", "10.0.0.1"]), max_size=4)


@settings(max_examples=200, deadline=None)
@given(addresses, addresses4)
def test_interleaving_keeps_every_address_once(ipv6: list[str], ipv4: list[str]) -> None:
    """Every address appears once, each family in its own order, IPv6 first when there is one."""
    result = interleave_addresses(ipv6, ipv4)
    assert len(result) == len(set(result))
    assert set(result) == set(ipv6) | set(ipv4)
    assert [a for a in result if ":" in a] == list(dict.fromkeys(ipv6))
    assert [a for a in result if ":" not in a] == list(dict.fromkeys(ipv4))
    if ipv6:
        assert result[0] == ipv6[0]


exchanges = st.sampled_from(["a.example", "b.example", "c.example", "."])
records = st.lists(st.builds(MxRecord, st.integers(0, 65535), exchanges), max_size=5)
lookup = st.builds(
    HostLookup, addresses, addresses4, st.one_of(st.none(), st.just("timed out"))
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), records), st.dictionaries(exchanges, lookup))
def test_outcome_targets_follow_the_lookup_order(
    mx: list[MxRecord] | None, lookups: dict[str, HostLookup]
) -> None:
    """Targets are the looked-up hosts that have addresses, in lookup order, never empty."""
    outcome = mx_outcome("d.example", mx, lookups)
    if not isinstance(outcome, Targets):
        return
    names = [target.name for target in outcome.targets]
    wanted = hosts_to_look_up("d.example", mx)
    assert names == [name for name in wanted if name in names]
    assert outcome.targets
    for target in outcome.targets:
        assert target.addresses


@settings(max_examples=300, deadline=None)
@given(st.one_of(any_text, st.text(alphabet=GRAMMAR + ",", max_size=60)))
def test_recipient_parts_is_total(text: str) -> None:
    """Any Recipient value splits into non-empty parts that never start or end with a blank."""
    parts = recipient_parts(text)
    assert parts
    if "," not in text:
        assert parts == (text,)
    elif parts != (text,):
        assert all(part and part == part.strip() for part in parts)


@settings(max_examples=200, deadline=None)
@given(st.lists(recipient.filter(lambda r: "," not in r and r.strip() == r and r
                                 and r.count('"') % 2 == 0 and "\\" not in r),
                min_size=1, max_size=5))
def test_recipient_parts_reads_back_a_joined_list(parts: list[str]) -> None:
    """Addresses without commas, joined with commas, split back into the same addresses."""
    assert recipient_parts(join_recipient_parts(parts)) == tuple(parts)
