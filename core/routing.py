"""Where a recipient's mail goes next, and what a DNS answer means for it (SPEC 5.3).

The decisions live here; ``dma.adapters.dns`` only asks the questions.  A next hop
is the smarthost when one is set, an address literal (``user@[192.0.2.1]``, which
the C dma could not route), or the recipient's domain, whose MX records are looked
up.  Recipients with the same next hop share one connection, so the shell groups
them with ``group_by_next_hop``, which sets an unroutable one aside alone.

DNS outcomes are values, not exceptions: ``Targets`` (hosts to try, in order),
``DnsPermanent`` (bounce: NXDOMAIN, a null MX, a domain with neither MX nor address)
and ``DnsTemporary`` (defer: SERVFAIL, timeouts, MX hosts without any address).
Unlike the C dma, equal MX preferences are tried in random order (RFC 5321 5.1)
and a null MX (RFC 7505) bounces at once instead of being retried for days.
"""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Generic, Literal, TypeVar

from dma.core.addresses import split_address, unquoted_positions
from dma.core.errors import DataError
from dma.core.octets import is_utf8, printable
from dma.core.values import frozen

K = TypeVar("K", bound=Hashable)
"""What a caller groups: an item id, an address id."""

MAX_DOMAIN_OCTETS = 253  # a name on the wire, without the final root dot
MAX_LABEL_OCTETS = 63
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_MAX_SHOWN = 60


@frozen
class NextHop:
    """Where to connect for a recipient: the smarthost, an address literal, or an MX lookup."""

    kind: Literal["smarthost", "mx", "literal"]
    host: str  # smarthost name, recipient domain (lower-case A-labels), or the literal's IP
    port: int  # PORT applies to every remote delivery (SPEC 2.1), not only the smarthost
    account: str | None = None  # the ACCOUNTS account whose smarthost this is (SPEC 2.4)


@frozen
class MxRecord:
    """One MX record as DNS gave it; ``exchange`` has no final dot ("." for the root)."""

    preference: int
    exchange: str


@frozen
class Target:
    """One host to try, with every address to try before moving to the next host."""

    name: str  # the smarthost or MX name: TLS checks and auth.conf match against it
    addresses: tuple[str, ...]
    preference: int


@frozen
class HostLookup:
    """What the AAAA and A lookups for one host name found.

    ``trouble`` says why a lookup failed temporarily (a timeout, SERVFAIL); a name
    that simply has no such records has empty tuples and no trouble.
    """

    ipv6: tuple[str, ...] = ()
    ipv4: tuple[str, ...] = ()
    trouble: str | None = None


@frozen
class Targets:
    """The hosts to try, in order; never empty."""

    targets: tuple[Target, ...]


@frozen
class DnsPermanent:
    """The domain cannot receive mail: bounce (NXDOMAIN, null MX, no MX and no address)."""

    reason: str


@frozen
class DnsTemporary:
    """DNS could not answer now: defer (SERVFAIL, timeout, MX hosts with no address)."""

    reason: str


DnsOutcome = Targets | DnsPermanent | DnsTemporary


# -- next hop ---------------------------------------------------------------------------


def recipient_parts(recipient: str) -> tuple[str, ...]:
    """The addresses of one Q file's Recipient value, which may be a comma list.

    The C dma queues ``dma 'a@x.org,b@y.org'`` as one item and delivers it as one
    RCPT per part (its ``strtok`` at ","); we queue it the same way.  Commas inside
    a quoted local part (``"a,b"@x.org``) do not split.  Parts are stripped of
    surrounding blanks and empty ones dropped; a value with no part at all (",")
    comes back whole, for routing to refuse.  Never raises.
    """
    if "," not in recipient:
        return (recipient,)
    commas, _open_quote = unquoted_positions(recipient, ",")
    starts = (0, *(comma + 1 for comma in commas))
    ends = (*commas, len(recipient))
    parts = [recipient[start:end] for start, end in zip(starts, ends, strict=True)]
    kept = tuple(part for part in (p.strip() for p in parts) if part)
    return kept or (recipient,)


def join_recipient_parts(parts: Sequence[str]) -> str:
    """The Recipient value for ``parts``: what ``recipient_parts`` splits again."""
    return ",".join(parts)


def next_hop(recipient: str, *, smarthost: str | None, port: int) -> NextHop:
    """Return the next hop for ``recipient``; raise DataError when it has no usable domain.

    With a smarthost every recipient goes there, bare local names included (the
    NULLCLIENT case, as in the C dma).  Otherwise the domain after the last '@'
    outside quotes decides: an address literal is connected to directly, any other
    domain is looked up in DNS.
    """
    if smarthost:
        return NextHop("smarthost", smarthost, port)
    _, domain = split_address(recipient)
    if domain is None:
        raise DataError(
            f"recipient {_shown(recipient)} has no domain, so it cannot be delivered remotely",
            hint="write user@domain, or set SMARTHOST to relay bare names",
        )
    if domain.startswith("["):
        return NextHop("literal", _literal_address(domain, recipient), port)
    return NextHop("mx", normalise_domain(domain, recipient), port)


@frozen
class Routes(Generic[K]):
    """Keys grouped by next hop (hops and keys in first-seen order), and the keys whose
    recipient has no next hop, each with the reason (a bounce: SPEC 5.3)."""

    groups: tuple[tuple[NextHop, tuple[K, ...]], ...]
    unroutable: tuple[tuple[K, DataError], ...]


def group_by_next_hop(
    recipients: Iterable[tuple[K, str]], *, smarthost: str | None, port: int
) -> Routes[K]:
    """Group ``(key, recipient)`` pairs by next hop; a recipient ``next_hop`` refuses is
    set aside alone, so the others still go.

    Recipients that share a hop share one connection and one transaction (SPEC 5.3).
    """
    groups: dict[NextHop, list[K]] = {}
    unroutable: list[tuple[K, DataError]] = []
    for key, recipient in recipients:
        try:
            hop = next_hop(recipient, smarthost=smarthost, port=port)
        except DataError as error:
            unroutable.append((key, error))
            continue
        groups.setdefault(hop, []).append(key)
    return Routes(tuple((hop, tuple(keys)) for hop, keys in groups.items()), tuple(unroutable))


def account_hop(host: str, port: int, account: str) -> NextHop:
    """The next hop of mail whose sender routes to an account: its smarthost (SPEC 2.4).
    Mail of one account shares connections; two accounts on one host do not."""
    return NextHop("smarthost", host, port, account)


def normalise_domain(domain: str, recipient: str | None = None) -> str:
    """Return ``domain`` as DNS asks for it: lower case, internationalised labels as A-labels.

    Each label is lower-cased, NFC-normalised and, when not ASCII, Punycode-encoded
    with the ``xn--`` prefix (RFC 3492), which keeps 'ß' and final sigma as IDNA 2008
    does; stdlib's ``idna`` codec is IDNA 2003 and would send ``straße.de`` to
    ``strasse.de``, another domain.  Raises DataError for anything DNS cannot ask.
    """
    about = _shown(recipient if recipient is not None else domain)
    if not domain:
        raise DataError(f"recipient {about} has an empty domain", hint="write user@domain")
    labels = []
    for label in domain.split("."):
        if not label:
            raise DataError(
                f"recipient {about} has an empty domain label (a dot at an end, or two in a row)",
                hint="remove the extra dot",
            )
        labels.append(_a_label(label, about))
    name = ".".join(labels)
    if len(name) > MAX_DOMAIN_OCTETS:
        raise DataError(
            f"recipient {about} has a domain longer than {MAX_DOMAIN_OCTETS} octets",
            hint="check the address",
        )
    return name


def _a_label(label: str, about: str) -> str:
    text = unicodedata.normalize("NFC", label.lower())
    if not text.isascii():
        try:
            text = "xn--" + text.encode("punycode").decode("ascii")
        except UnicodeError:
            raise DataError(
                f"recipient {about} has a domain label that cannot be encoded for DNS",
                hint="check the address",
            ) from None
    bad = next((char for char in text if char not in _LDH), None)
    if bad is not None:
        raise DataError(
            f"recipient {about} has {bad!r} in its domain (only letters, digits, '-' and '.')",
            hint="check the address",
        )
    if text[0] == "-" or text[-1] == "-":
        raise DataError(
            f"recipient {about} has a domain label that starts or ends with '-'",
            hint="check the address",
        )
    if len(text) > MAX_LABEL_OCTETS:
        raise DataError(
            f"recipient {about} has a domain label longer than {MAX_LABEL_OCTETS} octets",
            hint="check the address",
        )
    return text


def _literal_address(domain: str, recipient: str) -> str:
    """The IP of an address literal (RFC 5321 4.1.3): ``[IPv6:2001:DB8::1]`` -> ``2001:db8::1``."""
    content = domain[1:-1] if domain.endswith("]") else None
    try:
        if content is None or "%" in content:
            raise ValueError(domain)
        if content[:5].lower() == "ipv6:":
            return str(ipaddress.IPv6Address(content[5:]))
        return str(ipaddress.IPv4Address(content))
    except ValueError:
        raise DataError(
            f"recipient {_shown(recipient)} has an address literal that is not "
            "[IPv4] or [IPv6:address]",
            hint="write e.g. user@[192.0.2.1] or user@[IPv6:2001:db8::1]",
        ) from None


def _shown(text: str) -> str:
    """``text`` quoted for a message: repr's form, octets that are not UTF-8 as \\xNN."""
    cut = text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."
    return repr(cut) if is_utf8(cut) else f"'{printable(cut)}'"


# -- DNS answers ------------------------------------------------------------------------


def is_null_mx(records: Sequence[MxRecord]) -> bool:
    """True for a null MX (RFC 7505): one record whose exchange is the root.

    The RFC writes it ``0 .``; a single record pointing at the root can never be
    delivered to whatever its preference, so the preference is not checked.
    """
    return len(records) == 1 and records[0].exchange in (".", "")


def interleave_addresses(ipv6: Sequence[str], ipv4: Sequence[str]) -> tuple[str, ...]:
    """Every address of a host, IPv6 and IPv4 alternating, IPv6 first, without repeats.

    Alternating rather than all IPv6 first (the C dma's order) follows RFC 8305 4:
    on a host whose IPv6 route is broken, the first IPv4 address is tried after one
    failed connection instead of after a timeout per IPv6 address.
    """
    ordered: list[str] = []
    for index in range(max(len(ipv6), len(ipv4))):
        for family in (ipv6, ipv4):
            if index < len(family) and family[index] not in ordered:
                ordered.append(family[index])
    return tuple(ordered)


def hosts_to_look_up(domain: str, records: Sequence[MxRecord] | None) -> tuple[str, ...]:
    """The host names whose addresses ``mx_outcome`` needs, in the order they are tried.

    ``records`` None means the domain has no MX records: the domain itself is the
    host (RFC 5321 5.1 implicit MX).  The root exchange of a null MX is not a host.
    """
    if records is None:
        return (domain,)
    names: list[str] = []
    seen: set[str] = set()
    for record in records:
        key = record.exchange.lower()
        if key not in (".", "") and key not in seen:
            seen.add(key)
            names.append(record.exchange)
    return tuple(names)


def mx_outcome(
    domain: str, records: Sequence[MxRecord] | None, lookups: Mapping[str, HostLookup]
) -> DnsOutcome:
    """Decide what an MX answer and its hosts' address lookups mean for ``domain``.

    ``records`` are in the order to try them (the adapter lets dnspython sort by
    preference and shuffle equal ones), or None when the domain has no MX records.
    ``lookups`` maps each name of ``hosts_to_look_up`` to what its lookups found; a
    name missing from it counts as a host without addresses.
    """
    if records is not None and is_null_mx(records):
        return DnsPermanent(f"{domain} does not accept mail (null MX record, RFC 7505)")
    names = hosts_to_look_up(domain, records)
    if records is not None and not names:
        return DnsPermanent(f"the MX records of {domain} name no host")
    preference = {record.exchange.lower(): record.preference for record in records or ()}
    targets: list[Target] = []
    troubles: list[str] = []
    for name in names:
        found = lookups.get(name, HostLookup())
        addresses = interleave_addresses(found.ipv6, found.ipv4)
        if addresses:
            targets.append(Target(name, addresses, preference.get(name.lower(), 0)))
        elif found.trouble is not None:
            troubles.append(f"{name}: {found.trouble}")
    if targets:
        return Targets(tuple(targets))
    if troubles:
        return DnsTemporary(f"DNS lookup failure: {'; '.join(troubles)}")
    if records is None:
        return DnsPermanent(f"DNS lookup failure: {domain} has no MX and no address records")
    return DnsTemporary(f"DNS lookup failure: no MX host of {domain} has an address")
