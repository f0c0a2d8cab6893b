"""Next hops, grouping, and what DNS answers mean, without any network (SPEC 5.3)."""

from __future__ import annotations

import pytest

from dma.core.errors import DataError
from dma.core.routing import (
    DnsPermanent,
    DnsTemporary,
    HostLookup,
    MxRecord,
    NextHop,
    Routes,
    Target,
    Targets,
    group_by_next_hop,
    hosts_to_look_up,
    interleave_addresses,
    is_null_mx,
    join_recipient_parts,
    mx_outcome,
    next_hop,
    normalise_domain,
    recipient_parts,
)

# -- next_hop ---------------------------------------------------------------------------


def test_smarthost_takes_every_recipient() -> None:
    """With a smarthost, every recipient goes there on PORT, whatever its domain."""
    assert next_hop("a@example.org", smarthost="relay.example", port=587) == NextHop(
        "smarthost", "relay.example", 587
    )


def test_smarthost_takes_bare_local_names() -> None:
    """A bare name (NULLCLIENT) is relayed to the smarthost, as the C dma does."""
    assert next_hop("root", smarthost="relay.example", port=25).kind == "smarthost"


def test_domain_is_looked_up_in_dns_on_port() -> None:
    """Without a smarthost the recipient's domain is the hop, and PORT still applies."""
    assert next_hop("a@Example.ORG", smarthost=None, port=2525) == NextHop(
        "mx", "example.org", 2525
    )


def test_domain_after_the_last_at_sign_counts() -> None:
    """A quoted local part may hold '@': the domain is after the last one."""
    assert next_hop('"a@b"@c.example', smarthost=None, port=25).host == "c.example"


def test_empty_smarthost_counts_as_unset() -> None:
    """An empty smarthost string does not swallow every recipient."""
    assert next_hop("a@example.org", smarthost="", port=25).kind == "mx"


def test_ipv4_literal_is_connected_to_directly() -> None:
    """``user@[192.0.2.1]`` goes to that address, no DNS involved."""
    assert next_hop("u@[192.0.2.1]", smarthost=None, port=25) == NextHop(
        "literal", "192.0.2.1", 25
    )


def test_ipv6_literal_is_normalised() -> None:
    """``user@[IPv6:...]`` goes to the compressed, lower-case IPv6 address."""
    hop = next_hop("u@[ipv6:2001:DB8:0:0::1]", smarthost=None, port=25)
    assert hop == NextHop("literal", "2001:db8::1", 25)


@pytest.mark.parametrize(
    "recipient",
    ["u@[300.1.1.1]", "u@[IPv6:nothing]", "u@[2001:db8::1]", "u@[]", "u@[fe80::1%eth0]", "u@[x"],
)
def test_bad_literal_is_a_data_error(recipient: str) -> None:
    """An address literal that is not [IPv4] or [IPv6:address] is refused."""
    with pytest.raises(DataError, match="address literal"):
        next_hop(recipient, smarthost=None, port=25)


def test_recipient_without_domain_is_a_data_error() -> None:
    """A bare name cannot be routed without a smarthost, and the error says so."""
    with pytest.raises(DataError, match="no domain") as caught:
        next_hop("root", smarthost=None, port=25)
    assert caught.value.hint is not None and "SMARTHOST" in caught.value.hint


@pytest.mark.parametrize(
    ("recipient", "problem"),
    [
        ("u@", "empty domain"),
        ("u@a..b", "empty domain label"),
        ("u@example.org.", "empty domain label"),
        ("u@a_b.example", "'_'"),
        ("u@-a.example", "starts or ends with '-'"),
        ("u@" + "a" * 64 + ".example", "longer than 63"),
        ("u@" + ".".join(["a" * 60] * 5), "longer than 253"),
    ],
)
def test_unroutable_domain_is_a_data_error(recipient: str, problem: str) -> None:
    """Domains that DNS cannot be asked about are refused with the reason."""
    with pytest.raises(DataError, match=problem):
        next_hop(recipient, smarthost=None, port=25)


def test_internationalised_domain_becomes_a_labels() -> None:
    """Unicode labels are lower-cased and Punycode-encoded, ASCII ones only lower-cased."""
    assert normalise_domain("Bücher.Example") == "xn--bcher-kva.example"


def test_sharp_s_is_kept_as_idna_2008_does() -> None:
    """'ß' stays a distinct letter (IDNA 2008), not 'ss' as the IDNA 2003 codec makes it."""
    assert normalise_domain("straße.de") == "xn--strae-oqa.de"


def test_a_label_and_u_label_give_the_same_hop() -> None:
    """The same domain written as A-label or U-label routes to one hop."""
    first = next_hop("a@bücher.example", smarthost=None, port=25)
    second = next_hop("b@XN--BCHER-KVA.example", smarthost=None, port=25)
    assert first == second


# -- group_by_next_hop ------------------------------------------------------------------


def test_grouping_keeps_first_seen_order_of_hops_and_items() -> None:
    """Recipients of one domain share a hop; hops and item ids stay in first-seen order."""
    groups = group_by_next_hop(
        [("1", "a@b.example"), ("2", "x@c.example"), ("3", "d@B.example"), ("4", "u@[192.0.2.1]")],
        smarthost=None,
        port=25,
    )
    assert groups.groups == (
        (NextHop("mx", "b.example", 25), ("1", "3")),
        (NextHop("mx", "c.example", 25), ("2",)),
        (NextHop("literal", "192.0.2.1", 25), ("4",)),
    )
    assert groups.unroutable == ()


def test_grouping_with_smarthost_makes_one_group() -> None:
    """With a smarthost all recipients share one connection."""
    groups = group_by_next_hop(
        [("1", "a@b.example"), ("2", "root")], smarthost="relay", port=25
    )
    assert groups.groups == ((NextHop("smarthost", "relay", 25), ("1", "2")),)


def test_grouping_nothing_gives_nothing() -> None:
    """No recipients, no hops."""
    assert group_by_next_hop([], smarthost=None, port=25) == Routes((), ())


def test_grouping_sets_an_unroutable_recipient_aside_alone() -> None:
    """A recipient without domain is set aside with a DataError naming it; the others
    are grouped as if it were not there (one bad item never costs the others)."""
    routes = group_by_next_hop([("1", "a@b.example"), ("2", "root"), ("3", "c@b.example")],
                               smarthost=None, port=25)
    assert routes.groups == ((NextHop("mx", "b.example", 25), ("1", "3")),)
    ((key, error),) = routes.unroutable
    assert key == "2"
    assert isinstance(error, DataError)
    assert "'root'" in str(error)


# -- DNS answers ------------------------------------------------------------------------


def test_null_mx_is_one_record_pointing_at_the_root() -> None:
    """Only a single MX record with the root as exchange is a null MX."""
    assert is_null_mx([MxRecord(0, ".")])
    assert is_null_mx([MxRecord(0, "")])
    assert not is_null_mx([MxRecord(0, "."), MxRecord(10, "mx.example")])
    assert not is_null_mx([MxRecord(0, "mx.example")])
    assert not is_null_mx([])


def test_addresses_alternate_families_ipv6_first() -> None:
    """Addresses alternate IPv6 and IPv4, IPv6 first, leftovers at the end, no repeats."""
    assert interleave_addresses(["::1", "::2", "::3"], ["1.1.1.1"]) == (
        "::1",
        "1.1.1.1",
        "::2",
        "::3",
    )
    assert interleave_addresses([], ["1.1.1.1", "2.2.2.2", "1.1.1.1"]) == ("1.1.1.1", "2.2.2.2")


def test_hosts_to_look_up_skip_root_and_repeats() -> None:
    """Each MX host is looked up once, in record order; no MX means the domain itself."""
    records = [MxRecord(5, "a.example"), MxRecord(5, "."), MxRecord(9, "c.example")]
    assert hosts_to_look_up("d.example", records) == ("a.example", "c.example")
    assert hosts_to_look_up("d.example", [MxRecord(5, "a.example"), MxRecord(7, "A.EXAMPLE")]) == (
        "a.example",
    )
    assert hosts_to_look_up("d.example", None) == ("d.example",)


def test_outcome_keeps_record_order_and_preferences() -> None:
    """Targets follow the records' order, each with its preference and addresses."""
    records = [MxRecord(20, "b.example"), MxRecord(10, "a.example")]
    lookups = {"a.example": HostLookup(ipv4=("192.0.2.1",)), "b.example": HostLookup(("::1",))}
    assert mx_outcome("d.example", records, lookups) == Targets(
        (Target("b.example", ("::1",), 20), Target("a.example", ("192.0.2.1",), 10))
    )


def test_outcome_of_null_mx_is_permanent() -> None:
    """A null MX bounces, whatever else was looked up."""
    assert isinstance(mx_outcome("d.example", [MxRecord(0, ".")], {}), DnsPermanent)


def test_outcome_without_mx_uses_the_domain() -> None:
    """No MX records: the domain's own addresses at preference 0."""
    lookups = {"d.example": HostLookup(ipv4=("192.0.2.9",))}
    assert mx_outcome("d.example", None, lookups) == Targets(
        (Target("d.example", ("192.0.2.9",), 0),)
    )


def test_outcome_without_mx_or_address_is_permanent() -> None:
    """A domain with neither MX nor address records cannot receive mail."""
    assert isinstance(mx_outcome("d.example", None, {"d.example": HostLookup()}), DnsPermanent)


def test_outcome_without_mx_and_failed_address_lookup_is_temporary() -> None:
    """When the domain's address lookup failed for now, the mail waits."""
    lookups = {"d.example": HostLookup(trouble="timed out")}
    outcome = mx_outcome("d.example", None, lookups)
    assert isinstance(outcome, DnsTemporary)
    assert "timed out" in outcome.reason


def test_outcome_of_mx_hosts_without_address_is_temporary() -> None:
    """MX records whose hosts have no address defer rather than bounce."""
    outcome = mx_outcome("d.example", [MxRecord(1, "gone.example")], {})
    assert isinstance(outcome, DnsTemporary)
    assert "d.example" in outcome.reason


def test_outcome_skips_hosts_without_address() -> None:
    """A host without addresses is skipped when another one has some."""
    records = [MxRecord(1, "gone.example"), MxRecord(2, "ok.example")]
    lookups = {"gone.example": HostLookup(trouble="timed out"), "ok.example": HostLookup(("::1",))}
    assert mx_outcome("d.example", records, lookups) == Targets(
        (Target("ok.example", ("::1",), 2),)
    )


def test_outcome_of_only_root_among_several_records_is_permanent() -> None:
    """Records that name no host at all (only the root, twice) cannot be delivered to."""
    records = [MxRecord(0, "."), MxRecord(10, ".")]
    assert isinstance(mx_outcome("d.example", records, {}), DnsPermanent)


# -- comma lists --------------------------------------------------------------------------


def test_single_address_is_one_part() -> None:
    """A Recipient without a comma is one part, exactly as written."""
    assert recipient_parts("bob@example.org") == ("bob@example.org",)


def test_comma_list_splits_like_the_c_dma() -> None:
    """A C dma comma list splits into its addresses; blanks around them and empty ones go."""
    assert recipient_parts("a@x.org,b@y.org") == ("a@x.org", "b@y.org")
    assert recipient_parts(" a@x.org , ,b@y.org,") == ("a@x.org", "b@y.org")
    assert recipient_parts("root,a@[127.0.0.1]") == ("root", "a@[127.0.0.1]")


def test_comma_in_a_quoted_local_part_does_not_split() -> None:
    """A comma inside a quoted local part belongs to the address."""
    assert recipient_parts('"a,b"@x.org,c@y.org') == ('"a,b"@x.org', "c@y.org")
    assert recipient_parts('"a\\",b"@x.org') == ('"a\\",b"@x.org',)


def test_nothing_but_commas_stays_whole() -> None:
    """A value of only commas is returned whole, for routing to refuse."""
    assert recipient_parts(",,") == (",,",)


def test_join_is_what_split_reads() -> None:
    """join_recipient_parts writes a list that recipient_parts reads back."""
    parts = ("a@x.org", '"c,d"@z.org', "root")
    assert recipient_parts(join_recipient_parts(parts)) == parts
