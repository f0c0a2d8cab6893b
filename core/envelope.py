"""The envelope: who a message is from (SPEC 3.6) and who it goes to (SPEC 3.7).

Differences from the C dma, on purpose: ``-f ''`` gives the null sender instead of
``root@host``; MASQUERADE ``john@`` sends as john at the mail name, as the manual's
example says, where the C dma's code keeps the domain of ``-f`` or $EMAIL; the
local-domain test ignores case (``root@TEST.EXAMPLE`` is local on ``test.example``);
recipients are resolved, aliases included, at submission, so an unknown local name
fails there (exit 67) instead of at delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dma.core.addresses import plain_local_part, split_address
from dma.core.aliases import AliasExpander, AliasTable
from dma.core.errors import DataError, UsageError
from dma.core.values import frozen

_CONTROL_NAMES = {"\r": "carriage return", "\n": "line feed", "\0": "NUL"}


def check_no_control(value: str, what: str) -> str:
    """Return ``value``, or raise UsageError if it holds CR, LF or NUL (header injection)."""
    for char, label in _CONTROL_NAMES.items():
        if char in value:
            raise UsageError(
                f"{what} {value!r} contains a {label}",
                hint="addresses, names and options are one line of text",
            )
    return value


def _unbracket(address: str) -> str:
    """``Name <a@b>`` and ``<a@b>`` become ``a@b``: the C dma would send ``<<a@b>>``."""
    text = address.strip()
    if text.endswith(">") and "<" in text:
        return text[text.rindex("<") + 1 : -1].strip()
    return text


# --- sender --------------------------------------------------------------------------


def envelope_sender(
    option: str | None, env_email: str | None, login: str, mailname: str, masquerade: str | None
) -> str:
    """The envelope sender: ``-f``/``-r`` (``option``), else $EMAIL, else login@mailname.

    ``option == ""`` (or ``<>``) is the null sender, returned as ``""``; MASQUERADE does
    not touch it.  A missing user becomes ``login``, a missing domain ``mailname``.
    MASQUERADE overrides ``-f`` and $EMAIL as the manual's examples say (SPEC 3.6):
    ``john@`` gives ``john@<mailname>`` (the user at the mail name, whatever domain
    ``-f`` named), ``host`` or ``@host`` the sender's user at that host, ``user@host``
    exactly that.
    """
    for value, what in (
        (option, "sender address"),
        (env_email, "EMAIL"),
        (login, "login name"),
        (mailname, "mail name"),
        (masquerade, "MASQUERADE"),
    ):
        if value is not None:
            check_no_control(value, what)
    if option is not None:
        given = _unbracket(option)
        if not given:
            return ""
    else:
        given = _unbracket(env_email or "")
    user, domain = split_address(given)
    user = user or login
    domain = domain or mailname
    if masquerade:
        masked_user, masked_domain = split_address(masquerade.strip())
        if masked_domain is None:
            masked_domain, masked_user = masked_user, ""
        if masked_user and not masked_domain:
            return f"{masked_user}@{mailname}"
        user = masked_user or user
        domain = masked_domain or domain
    return f"{user}@{domain}"


# --- recipients ----------------------------------------------------------------------


@frozen
class Recipient:
    """One final envelope recipient."""

    address: str  # "user" for local (no @), "user@domain" for remote
    local: bool


def local_name(address: str, mailname: str) -> str | None:
    """The local user part of ``address`` if it is ours, else None.

    Ours: a bare name, or ``name@<mailname>`` / ``name@localhost`` in any case (a
    trailing dot on the domain is ignored).  An empty local part is never ours.
    """
    local, domain = split_address(address)
    if domain is None:
        return address or None
    if not local:
        return None
    domain = domain.lower().removesuffix(".")
    if domain in ("localhost", mailname.strip().lower().removesuffix(".")):
        return plain_local_part(local)
    return None


def local_user(recipient: str, *, mailname: str, nullclient: bool) -> str | None:
    """The user a queued address is delivered to here, or None when it goes out by SMTP
    (every address does with NULLCLIENT: SPEC 3.7)."""
    if nullclient:
        return None
    return local_name(recipient, mailname)


def resolve_recipients(
    addresses: Sequence[str],
    *,
    mailname: str,
    aliases: AliasTable,
    is_user: Callable[[str], bool],
    nullclient: bool,
) -> tuple[Recipient, ...]:
    """Turn submitted addresses into final recipients, in order, without duplicates.

    Local names go through the aliases (``*`` included) and must end at users; with
    ``nullclient`` every address goes to the smarthost as written, aliases unused.
    Raises UsageError for CR/LF/NUL, DataError for an empty or half address (and for
    alias loops or refused alias targets), NoUserError for an unknown local name.
    An empty input gives an empty tuple: the caller reports "no recipients".
    """
    found: dict[tuple[bool, str], Recipient] = {}

    def add(recipient: Recipient) -> None:
        found.setdefault(_recipient_key(recipient), recipient)

    def ours(destination: str) -> str | None:
        return local_name(destination, mailname)

    expander = AliasExpander(aliases, is_user=is_user, local_name=ours)
    for address in addresses:
        check_no_control(address, "recipient address")
        _check_shape(address)
        if nullclient:
            add(Recipient(address, local=False))
            continue
        name = local_name(address, mailname)
        if name is None:
            add(Recipient(address, local=False))
            continue
        for destination in expander.expand(name, wildcard=True):
            add(Recipient(destination, local="@" not in destination))
    return tuple(found.values())


def _check_shape(address: str) -> None:
    """Refuse an empty address and one with nothing before or after its last '@'."""
    local, domain = split_address(address)
    if not address.strip():
        raise DataError("empty recipient address", hint="name a user or user@domain")
    if domain is not None and (not local or not domain):
        raise DataError(f"bad recipient address {address!r}", hint="write user or user@domain")


def merge_recipients(*groups: Sequence[Recipient]) -> tuple[Recipient, ...]:
    """The recipients of ``groups`` in order, each once by the one duplicate rule
    (``_recipient_key``): command-line and ``-t`` recipients are merged with it."""
    found: dict[tuple[bool, str], Recipient] = {}
    for group in groups:
        for recipient in group:
            found.setdefault(_recipient_key(recipient), recipient)
    return tuple(found.values())


def _recipient_key(recipient: Recipient) -> tuple[bool, str]:
    """Duplicates: local names ignore case; remote addresses ignore the domain's case only."""
    if recipient.local:
        return True, recipient.address.lower()
    local, domain = split_address(recipient.address)
    if domain is None:
        return False, recipient.address
    return False, f"{local}@{domain.lower()}"
