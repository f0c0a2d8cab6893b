"""The DNS adapter against a real dnsmasq on loopback: MX order, fallbacks, failures (SPEC 5.3)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import dns.resolver
import pytest
from dnsmasq import (  # noqa: F401 (dns_server is a fixture)
    cname,
    dns_server,
    host_record,
    local,
    mx,
    running_dnsmasq,
)

from dma.adapters.dns import Resolver
from dma.core.routing import DnsPermanent, DnsTemporary, NextHop, Target, Targets

RECORDS = (
    local("test"),
    # several preferences, two equal
    mx("multi.test", "mx1.multi.test", 10),
    mx("multi.test", "mx2.multi.test", 10),
    mx("multi.test", "mx3.multi.test", 20),
    host_record("mx1.multi.test", "127.0.0.2"),
    host_record("mx2.multi.test", "127.0.0.3"),
    host_record("mx3.multi.test", "127.0.0.4"),
    # no MX, but an address: the implicit MX
    host_record("plain.test", "127.0.0.5", "2001:db8::5"),
    # a name that exists with neither MX nor address
    '--txt-record=bare.test,"nothing here"',
    # null MX (RFC 7505)
    mx("null.test", ".", 0),
    # an MX whose host does not exist
    mx("ghost.test", "nowhere.ghost.test", 10),
    # one MX host without address, one with
    mx("partial.test", "nowhere.partial.test", 5),
    mx("partial.test", "ok.partial.test", 50),
    host_record("ok.partial.test", "127.0.0.7"),
    # IPv6 and IPv4 on one MX host
    mx("dual.test", "mx.dual.test", 10),
    host_record("mx.dual.test", "2001:db8::25", "127.0.0.25"),
    host_record("mx.dual.test", "2001:db8::26", "127.0.0.26"),
    # a CNAME to a domain with MX records
    cname("alias.test", "multi.test"),
    host_record("multi.test", "127.0.0.9"),
    # a smarthost known only to this server
    host_record("relay.test", "127.0.0.8"),
)


@pytest.fixture(scope="module")
def nameserver() -> Iterator[tuple[str, int]]:
    """One dnsmasq for the whole module, serving RECORDS."""
    with running_dnsmasq(*RECORDS) as server:
        yield server


@pytest.fixture
def resolver(nameserver: tuple[str, int]) -> Resolver:
    """A resolver that asks only the test dnsmasq."""
    return Resolver(nameserver, timeout=3.0)


def mx_hop(domain: str) -> NextHop:
    """The next hop for a recipient at ``domain`` without a smarthost."""
    return NextHop("mx", domain, 25)


def targets(outcome: object) -> tuple[Target, ...]:
    """The targets of a successful outcome; fails the test on anything else."""
    assert isinstance(outcome, Targets), outcome
    return outcome.targets


def test_mx_records_come_in_preference_order(resolver: Resolver) -> None:
    """MX hosts are tried lowest preference first, each with its address."""
    found = targets(resolver.targets_for(mx_hop("multi.test")))
    assert [t.preference for t in found] == [10, 10, 20]
    assert {t.name for t in found[:2]} == {"mx1.multi.test", "mx2.multi.test"}
    assert found[2] == Target("mx3.multi.test", ("127.0.0.4",), 20)
    by_name = {t.name: t.addresses for t in found}
    assert by_name["mx1.multi.test"] == ("127.0.0.2",)
    assert by_name["mx2.multi.test"] == ("127.0.0.3",)


def test_equal_preferences_are_shuffled_over_many_lookups(resolver: Resolver) -> None:
    """Hosts of equal preference come first in either order, the higher one always last."""
    firsts = set()
    for _ in range(40):
        found = targets(resolver.targets_for(mx_hop("multi.test")))
        firsts.add(found[0].name)
        assert found[2].name == "mx3.multi.test"
    assert firsts == {"mx1.multi.test", "mx2.multi.test"}


def test_domain_without_mx_falls_back_to_its_own_addresses(resolver: Resolver) -> None:
    """No MX records means the domain itself is the host, preference 0, IPv6 and IPv4."""
    found = targets(resolver.targets_for(mx_hop("plain.test")))
    assert found == (Target("plain.test", ("2001:db8::5", "127.0.0.5"), 0),)


def test_domain_with_neither_mx_nor_address_is_permanent(resolver: Resolver) -> None:
    """A domain that exists but has no MX and no address cannot receive mail: bounce."""
    outcome = resolver.targets_for(mx_hop("bare.test"))
    assert isinstance(outcome, DnsPermanent)
    assert "bare.test" in outcome.reason


def test_null_mx_is_permanent(resolver: Resolver) -> None:
    """A null MX record (RFC 7505) bounces at once."""
    outcome = resolver.targets_for(mx_hop("null.test"))
    assert isinstance(outcome, DnsPermanent)
    assert "null MX" in outcome.reason


def test_nxdomain_is_permanent(resolver: Resolver) -> None:
    """A domain that does not exist bounces with the C dma's wording."""
    outcome = resolver.targets_for(mx_hop("nosuchdomain.test"))
    assert outcome == DnsPermanent("DNS lookup failure: host nosuchdomain.test not found")


def test_mx_host_without_address_is_temporary(resolver: Resolver) -> None:
    """MX records whose hosts have no address at all defer rather than bounce."""
    outcome = resolver.targets_for(mx_hop("ghost.test"))
    assert isinstance(outcome, DnsTemporary)
    assert "ghost.test" in outcome.reason


def test_mx_hosts_without_address_are_skipped(resolver: Resolver) -> None:
    """An MX host without address is left out and the others are still tried."""
    found = targets(resolver.targets_for(mx_hop("partial.test")))
    assert found == (Target("ok.partial.test", ("127.0.0.7",), 50),)


def test_every_ipv6_and_ipv4_address_of_a_host_is_listed(resolver: Resolver) -> None:
    """All AAAA and A addresses of one MX host are kept, alternating, IPv6 first."""
    found = targets(resolver.targets_for(mx_hop("dual.test")))
    assert len(found) == 1
    listed = found[0].addresses
    assert sorted(listed) == ["127.0.0.25", "127.0.0.26", "2001:db8::25", "2001:db8::26"]
    assert [":" in a for a in listed] == [True, False, True, False]


def test_cname_to_an_mx_domain_is_followed(resolver: Resolver) -> None:
    """A recipient domain that is a CNAME gets the MX hosts of its target."""
    found = targets(resolver.targets_for(mx_hop("alias.test")))
    assert sorted(t.name for t in found) == ["mx1.multi.test", "mx2.multi.test", "mx3.multi.test"]


def test_refused_answer_is_temporary(resolver: Resolver) -> None:
    """A server that refuses to answer (here: a domain it does not serve) defers."""
    outcome = resolver.targets_for(mx_hop("example.com"))
    assert isinstance(outcome, DnsTemporary)
    assert "no name server" in outcome.reason


def test_silent_server_times_out_as_temporary() -> None:
    """A name server that never answers gives a temporary failure within the timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        outcome = Resolver(("127.0.0.1", port), timeout=0.3).targets_for(mx_hop("multi.test"))
    assert isinstance(outcome, DnsTemporary)
    assert "timed out" in outcome.reason


def test_servfail_answer_is_temporary() -> None:
    """A name server that answers SERVFAIL (a broken zone, a failed upstream) defers."""
    import threading

    import dns.message
    import dns.rcode

    stop = threading.Event()
    answered: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.1)
        port = server.getsockname()[1]

        def serve() -> None:
            while not stop.is_set():  # every try of the resolver gets SERVFAIL
                try:
                    data, peer = server.recvfrom(4096)
                except TimeoutError:
                    continue
                query = dns.message.from_wire(data)
                reply = dns.message.make_response(query)
                reply.set_rcode(dns.rcode.SERVFAIL)
                server.sendto(reply.to_wire(), peer)
                answered.append(str(query.question[0].name))

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            outcome = Resolver(("127.0.0.1", port), timeout=2).targets_for(mx_hop("multi.test"))
        finally:
            stop.set()
            thread.join(timeout=5)
    assert isinstance(outcome, DnsTemporary), outcome
    assert answered and answered[0] == "multi.test."


def test_missing_resolver_configuration_is_temporary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without any name server configured, MX lookups defer instead of raising."""

    def unconfigured(*args: object, **kwargs: object) -> None:
        raise dns.resolver.NoResolverConfiguration("no nameservers")

    monkeypatch.setattr(dns.resolver, "Resolver", unconfigured)
    outcome = Resolver().targets_for(mx_hop("multi.test"))
    assert isinstance(outcome, DnsTemporary)
    assert "no DNS server" in outcome.reason


def test_ipv4_literal_needs_no_lookup() -> None:
    """An address literal is its own single target, whatever the name server does."""
    hop = NextHop("literal", "192.0.2.1", 25)
    outcome = Resolver(("127.0.0.1", 9), timeout=0.1).targets_for(hop)
    assert outcome == Targets((Target("192.0.2.1", ("192.0.2.1",), 0),))


def test_ipv6_literal_needs_no_lookup() -> None:
    """An IPv6 address literal is its own single target."""
    outcome = Resolver(("127.0.0.1", 9), timeout=0.1).targets_for(
        NextHop("literal", "2001:db8::1", 25)
    )
    assert outcome == Targets((Target("2001:db8::1", ("2001:db8::1",), 0),))


def test_smarthost_from_etc_hosts_without_nameserver() -> None:
    """Without NAMESERVER a smarthost is resolved like the C library does: localhost works."""
    found = targets(Resolver().targets_for(NextHop("smarthost", "localhost", 2525)))
    assert len(found) == 1
    assert found[0].name == "localhost"
    assert "127.0.0.1" in found[0].addresses


def test_smarthost_ip_address_is_used_as_is(resolver: Resolver) -> None:
    """A smarthost written as an IP address is connected to without any lookup."""
    found = targets(resolver.targets_for(NextHop("smarthost", "127.0.0.1", 2525)))
    assert found == (Target("127.0.0.1", ("127.0.0.1",), 0),)


def test_smarthost_is_looked_up_at_the_nameserver(resolver: Resolver) -> None:
    """With NAMESERVER, the smarthost's addresses come from that server, not MX records."""
    found = targets(resolver.targets_for(NextHop("smarthost", "relay.test", 587)))
    assert found == (Target("relay.test", ("127.0.0.8",), 0),)


def test_localhost_smarthost_works_with_a_nameserver(resolver: Resolver) -> None:
    """localhost needs no DNS server (RFC 6761), even when NAMESERVER is set."""
    found = targets(resolver.targets_for(NextHop("smarthost", "localhost", 25)))
    assert found[0].addresses == ("::1", "127.0.0.1")


def test_unknown_smarthost_is_temporary_not_permanent(resolver: Resolver) -> None:
    """A smarthost that does not resolve defers the mail (C dma issue #30), never bounces."""
    outcome = resolver.targets_for(NextHop("smarthost", "missing.test", 25))
    assert isinstance(outcome, DnsTemporary)
    assert "missing.test" in outcome.reason


def test_dns_server_fixture_serves_the_records_it_is_given(dns_server) -> None:  # noqa: F811
    """The reusable fixture starts a server with just the records a test asks for."""
    server = dns_server(
        local("example"),
        mx("mail.example", "in.mail.example", 5),
        host_record("in.mail.example", "127.0.0.42"),
    )
    found = targets(Resolver(server, timeout=3.0).targets_for(mx_hop("mail.example")))
    assert found == (Target("in.mail.example", ("127.0.0.42",), 5),)
