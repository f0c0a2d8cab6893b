"""DNS lookups for remote delivery, with dnspython: the only module that imports ``dns``.

It asks the questions and hands the answers to ``dma.core.routing``, which decides
what they mean.  Every DNS problem comes back as a value (``DnsPermanent`` or
``DnsTemporary``), never as an exception, so a broken resolver defers mail instead
of crashing a queue run.

NAMESERVER (an address and port) replaces the system's resolver for every lookup;
tests point it at a dnsmasq on loopback.  Without it MX and address records come
from the servers in /etc/resolv.conf, and a smarthost is resolved with the C
library's ``getaddrinfo`` so that a smarthost named in /etc/hosts works, as in the
C dma.  Names are looked up as given (absolute), without resolv.conf search domains:
a recipient domain is never a short name.
"""

from __future__ import annotations

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.rdtypes.mxbase
import dns.resolver

from dma.adapters.hosts import ip_literal, system_smarthost_targets
from dma.core.routing import (
    DnsOutcome,
    DnsPermanent,
    DnsTemporary,
    HostLookup,
    MxRecord,
    NextHop,
    Target,
    Targets,
    hosts_to_look_up,
    interleave_addresses,
    mx_outcome,
)

_PER_TRY_TIMEOUT = 2.0  # one query to one server; dnspython retries until the lifetime ends
_LOCALHOST = HostLookup(ipv6=("::1",), ipv4=("127.0.0.1",))


class Resolver:
    """Resolve a ``NextHop`` to the hosts and addresses to try."""

    def __init__(self, nameserver: tuple[str, int] | None = None, timeout: float = 10.0) -> None:
        self._system = nameserver is None
        self._problem: str | None = None
        self._resolver: dns.resolver.Resolver | None = None
        try:
            resolver = dns.resolver.Resolver(configure=nameserver is None)
        except dns.exception.DNSException as error:
            self._problem = f"no DNS server configured ({error})"
        else:
            if nameserver is not None:
                address, port = nameserver
                resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port)]
            resolver.lifetime = timeout
            resolver.timeout = min(timeout, _PER_TRY_TIMEOUT)
            resolver.use_search_by_default = False
            self._resolver = resolver

    def targets_for(self, hop: NextHop) -> DnsOutcome:
        """Return the hosts to try for ``hop``, or why there are none; never raises for DNS."""
        try:
            if hop.kind == "literal":
                return Targets((Target(hop.host, (hop.host,), 0),))
            if hop.kind == "smarthost":
                return self._smarthost(hop.host, hop.port)
            return self._mx(hop.host)
        except (dns.exception.DNSException, OSError, UnicodeError, ValueError) as error:
            return DnsTemporary(f"DNS lookup failure for {hop.host}: {_describe(error)}")

    # -- smarthost ----------------------------------------------------------------------

    def _smarthost(self, host: str, port: int) -> DnsOutcome:
        """Every address of the smarthost; any failure is temporary (C dma issue #30)."""
        if self._system or ip_literal(host) is not None:
            return system_smarthost_targets(host, port)
        # RFC 6761 6.3: localhost is never asked of a DNS server
        found = _LOCALHOST if _is_localhost(host) else self._host_lookup(host)
        addresses = interleave_addresses(found.ipv6, found.ipv4)
        if addresses:
            return Targets((Target(host, addresses, 0),))
        why = found.trouble or "it has no address"
        return DnsTemporary(f"cannot resolve smarthost {host}: {why}")

    # -- MX -----------------------------------------------------------------------------

    def _mx(self, domain: str) -> DnsOutcome:
        records = self._mx_records(domain)
        if isinstance(records, DnsPermanent | DnsTemporary):
            return records
        lookups = {name: self._host_lookup(name) for name in hosts_to_look_up(domain, records)}
        return mx_outcome(domain, records, lookups)

    def _mx_records(
        self, domain: str
    ) -> tuple[MxRecord, ...] | DnsPermanent | DnsTemporary | None:
        """The MX records in processing order, None when there are none, or the failure."""
        resolver = self._need_resolver()
        if isinstance(resolver, DnsTemporary):
            return resolver
        try:
            answer = resolver.resolve(dns.name.from_text(domain), dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN:
            return DnsPermanent(f"DNS lookup failure: host {domain} not found")
        except dns.resolver.NoAnswer:
            return None
        except dns.exception.DNSException as error:
            return DnsTemporary(f"DNS lookup failure for {domain}: {_describe(error)}")
        if answer.rrset is None:
            return None
        # processing_order sorts by preference and shuffles equal ones (RFC 5321 5.1).
        return tuple(
            MxRecord(rdata.preference, _name_text(rdata.exchange))
            for rdata in answer.rrset.processing_order()
            if isinstance(rdata, dns.rdtypes.mxbase.MXBase)
        )

    # -- addresses ----------------------------------------------------------------------

    def _host_lookup(self, name: str) -> HostLookup:
        """The AAAA and A records of ``name``; a missing name or type is just no addresses."""
        resolver = self._need_resolver()
        if isinstance(resolver, DnsTemporary):
            return HostLookup(trouble=resolver.reason)
        found: dict[str, tuple[str, ...]] = {"AAAA": (), "A": ()}
        troubles: list[str] = []
        for rdtype in found:
            try:
                answer = resolver.resolve(dns.name.from_text(name), rdtype)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as error:
                troubles.append(f"{rdtype} lookup: {_describe(error)}")
                continue
            if answer.rrset is not None:
                found[rdtype] = tuple(str(rdata.address) for rdata in answer.rrset)
        return HostLookup(found["AAAA"], found["A"], "; ".join(troubles) or None)

    def _need_resolver(self) -> dns.resolver.Resolver | DnsTemporary:
        if self._resolver is None:
            return DnsTemporary(self._problem or "no DNS server configured")
        return self._resolver


def _is_localhost(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _name_text(name: dns.name.Name) -> str:
    """A DNS name without its final dot; the root is "."."""
    if name == dns.name.root:
        return "."
    return str(name.to_text(omit_final_dot=True))


def _describe(error: BaseException) -> str:
    """A short, one-line reason for a DNS exception."""
    if isinstance(error, dns.exception.Timeout):
        return "timed out"
    if isinstance(error, dns.resolver.NoNameservers):
        return "no name server gave an answer (SERVFAIL or REFUSED)"
    text = " ".join(str(error).split())
    return text or type(error).__name__
