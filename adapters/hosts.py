"""Host addresses without DNS libraries: IP literals and the C library's getaddrinfo.

Kept apart from adapters/dns.py so that delivery to a smarthost named in
/etc/hosts or by address never loads dnspython (about 40 ms of start-up).
"""

from __future__ import annotations

import ipaddress
import socket

from dma.core.routing import (
    DnsOutcome,
    DnsTemporary,
    HostLookup,
    Target,
    Targets,
    interleave_addresses,
)


def ip_literal(host: str) -> str | None:
    """``host`` as an IP address when it is one (optionally in brackets), else None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def getaddrinfo_lookup(host: str, port: int) -> HostLookup:
    """The C library's view of ``host`` (/etc/hosts, then DNS), split by address family."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        return HostLookup(trouble=error.strerror or str(error))
    except (UnicodeError, ValueError) as error:
        return HostLookup(trouble=f"the name cannot be looked up ({error})")
    ipv6 = tuple(str(info[4][0]) for info in infos if info[0] == socket.AF_INET6)
    ipv4 = tuple(str(info[4][0]) for info in infos if info[0] == socket.AF_INET)
    return HostLookup(ipv6, ipv4)


def system_smarthost_targets(host: str, port: int) -> DnsOutcome:
    """The smarthost's addresses by the system's rules; any failure is temporary (C dma #30)."""
    literal = ip_literal(host)
    if literal is not None:
        return Targets((Target(host, (literal,), 0),))
    found = getaddrinfo_lookup(host, port)
    addresses = interleave_addresses(found.ipv6, found.ipv4)
    if addresses:
        return Targets((Target(host, addresses, 0),))
    why = found.trouble or "it has no address"
    return DnsTemporary(f"cannot resolve smarthost {host}: {why}")
