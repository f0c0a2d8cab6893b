"""Which address to try next for one hop, and what the tries add up to (SPEC 5.3, 5.6).

The decisions of a remote delivery attempt, as a steppable object in the manner of
dnspython's ``_Resolution``: the shell asks ``next_step()``, connects where it is
told and speaks SMTP, then hands back what that connection did with
``session_ended()``.  Nothing here touches the network, the clock or the spool.

The rules:

- hosts in the order given, every address of a host before the next host (SPEC 5.3);
- each try carries only the items not settled yet (delivered or failed for good);
  once every item is settled nothing more is tried;
- an authentication failure (credentials refused, or no mechanism we may use) ends
  that host: its other addresses take the same credentials and offer the same
  mechanisms, and trying them could lock the account (SPEC 5.6);
- a host whose auth.conf credentials were refused by an earlier host of this hop
  is passed over;
- with OPPORTUNISTIC_TLS, an address whose STARTTLS handshake failed (not a refused
  certificate) is tried again at once, in plain text, as Postfix's "may" level does:
  once per address, and never when TLS is required;
- at the end every item has one outcome: the one it settled with, else the last
  temporary outcome a server gave it, else deferred with the last failure seen.

Each ``TryAddress`` carries what the shell needs to connect: the host's auth.conf
credentials and the TLS policy (``dma.core.transport.Security``).  Generic in the
id type: the shell's item ids, or ``dma.core.ledger.AddressId`` values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Generic, Literal, TypeVar

from dma.core.credentials import Credentials
from dma.core.errors import SoftwareError
from dma.core.outcomes import Outcome, deferred
from dma.core.routing import Target
from dma.core.transport import Security
from dma.core.values import field, frozen, replace

Id = TypeVar("Id", bound=Hashable)  # an item id, or an AddressId

NO_HOST_REACHED = "no host for this destination could be reached"
"""The deferral reason when no connection said why it failed."""
CREDENTIALS_REFUSED = (
    "the login for this host was refused earlier in this run; not tried again"
    " (fix auth.conf or the account, then run the queue)"
)
"""The deferral reason when a host was skipped because its login was just refused."""


@frozen
class HopTarget:
    """One host of the hop, with the credentials that apply to it (or None)."""

    target: Target
    credentials: Credentials | None = field(default=None, repr=False)


@frozen
class TryAddress(Generic[Id]):
    """Connect to ``address`` of ``target`` and offer it ``item_ids``, the items still open.

    ``credentials``: the host's login and secret, or None; ``security``: how to secure
    the session (None only when HopAttempts was given none); ``tls_fallback``: set on
    the plain-text retry after a failed STARTTLS handshake, saying why it failed.
    """

    target: Target
    address: str
    item_ids: tuple[Id, ...]
    credentials: Credentials | None = field(default=None, repr=False)
    security: Security | None = None
    tls_fallback: str | None = None


@frozen
class SkipHost(Generic[Id]):
    """``target`` is passed over: another host of this hop just refused its credentials."""

    target: Target
    item_ids: tuple[Id, ...]


@frozen
class LeaveHost(Generic[Id]):
    """Authentication failed at ``target``: its other addresses are not tried."""

    target: Target
    item_ids: tuple[Id, ...]


@frozen
class HopDone(Generic[Id]):
    """Nothing more to try: the final outcome of every item, settled ones first."""

    outcomes: Mapping[Id, Outcome]


Step = TryAddress[Id] | SkipHost[Id] | LeaveHost[Id] | HopDone[Id]


@frozen
class SessionResult(Generic[Id]):
    """What one connection did, as the shell reports it back.

    ``settled``: delivered or failed for good; ``retry``: temporary outcomes (another
    address or host may still take those items); ``failure``: the host's own failure,
    if any; ``auth``: set when that failure was authentication;
    ``tls_handshake_failed``: why the STARTTLS handshake broke down, when it did.
    """

    settled: Mapping[Id, Outcome] = field(default_factory=dict)
    retry: Mapping[Id, Outcome] = field(default_factory=dict)
    failure: str | None = None
    auth: Literal["refused", "unusable"] | None = None
    tls_handshake_failed: str | None = None


def plain_retry(tried: TryAddress[Id], result: SessionResult[Id]) -> TryAddress[Id] | None:
    """The same address again in plain text, when ``result`` says the STARTTLS handshake
    of ``tried`` failed and its security was opportunistic; else None.

    Never after a plain-text retry (once per address), never with TLS required or
    implicit, never after an authentication failure.
    """
    security = tried.security
    if (result.tls_handshake_failed is None or result.auth is not None or security is None
            or security.starttls != "opportunistic" or tried.tls_fallback is not None):
        return None
    return replace(tried, security=replace(security, starttls="no"),
                               tls_fallback=result.tls_handshake_failed)


class HopAttempts(Generic[Id]):
    """The attempt to deliver some items over one hop, step by step (see the module doc)."""

    def __init__(
        self,
        targets: Sequence[HopTarget],
        item_ids: Iterable[Id],
        refused: Iterable[Credentials] = (),
        *,
        security: Security | None = None,
    ) -> None:
        """``refused``: credentials a server turned down earlier in this run (other
        hops): hosts that take the same login and secret are skipped, lest the account be
        locked (kind and forced mechanism do not matter: the server judged the secret).
        ``security``: the hop's TLS policy (``dma.core.transport.security_for``), handed
        on in each TryAddress; without it no plain-text retry is ever given."""
        self._targets = tuple(targets)
        self._ids = tuple(dict.fromkeys(item_ids))
        self._security = security
        self._settled: dict[Id, Outcome] = {}
        self._temporary: dict[Id, Outcome] = {}
        self._refused: list[Credentials] = list(refused)  # credentials turned down
        self._last_error = NO_HOST_REACHED
        self._host = 0        # index of the host being worked on
        self._address = 0     # index of its next address
        self._awaiting: TryAddress[Id] | None = None
        self._leaving: Target | None = None  # auth failed there; LeaveHost not given yet
        self._plain: TryAddress[Id] | None = None  # the plain-text retry, not given yet

    @property
    def refused(self) -> tuple[Credentials, ...]:
        """Every credential turned down so far, those given at the start included."""
        return tuple(self._refused)

    def _was_refused(self, credentials: Credentials) -> bool:
        """True when a login and secret equal to ``credentials``' were turned down."""
        return any((c.login, c.secret) == (credentials.login, credentials.secret)
                   for c in self._refused)

    @property
    def open_ids(self) -> tuple[Id, ...]:
        """The items not settled yet, in the order given."""
        return tuple(item_id for item_id in self._ids if item_id not in self._settled)

    def next_step(self) -> Step[Id]:
        """The next thing to do: try an address, note a host left out, or stop."""
        if self._awaiting is not None:
            raise SoftwareError("next_step() before the last session's result was reported",
                                hint="call session_ended() after each TryAddress")
        open_ids = self.open_ids
        if not open_ids:
            return self._done()
        if self._leaving is not None:
            leaving, self._leaving = self._leaving, None
            return LeaveHost(leaving, open_ids)
        if self._plain is not None:
            plain, self._plain = self._plain, None
            self._awaiting = replace(plain, item_ids=open_ids)
            return self._awaiting
        return self._next_address(open_ids)

    def _next_address(self, open_ids: tuple[Id, ...]) -> Step[Id]:
        """The next address in order, or a host passed over, or done when none is left."""
        while self._host < len(self._targets):
            host = self._targets[self._host]
            if self._address == 0 and host.credentials is not None \
                    and self._was_refused(host.credentials):
                self._host += 1
                if self._last_error == NO_HOST_REACHED:
                    self._last_error = CREDENTIALS_REFUSED
                return SkipHost(host.target, open_ids)
            if self._address < len(host.target.addresses):
                address = host.target.addresses[self._address]
                self._address += 1
                self._awaiting = TryAddress(host.target, address, open_ids,
                                            host.credentials, self._security)
                return self._awaiting
            self._next_host()
        return self._done()

    def session_ended(self, result: SessionResult[Id]) -> None:
        """Take in what the connection of the last ``TryAddress`` did."""
        tried = self._awaiting
        if tried is None:
            raise SoftwareError("session_ended() without a TryAddress to answer",
                                hint="call next_step() and connect where it says first")
        self._awaiting = None
        self._record(tried.item_ids, result)
        if result.failure:
            self._last_error = result.failure
        self._plain = plain_retry(tried, result)
        if result.auth is not None:
            host = self._targets[self._host]
            if result.auth == "refused" and host.credentials is not None:
                self._refused.append(host.credentials)
            self._leaving = host.target
            self._next_host()

    def _record(self, offered_ids: tuple[Id, ...], result: SessionResult[Id]) -> None:
        """Keep the session's outcomes for the items it was offered and that are still
        open: settled ones for good, temporary ones until a later session says more."""
        offered = set(offered_ids)
        for item_id, outcome in result.settled.items():
            if item_id in offered and item_id not in self._settled:
                self._settled[item_id] = outcome
        for item_id, outcome in result.retry.items():
            if item_id in offered and item_id not in self._settled:
                self._temporary[item_id] = outcome

    def _next_host(self) -> None:
        self._host += 1
        self._address = 0

    def _done(self) -> HopDone[Id]:
        outcomes = dict(self._settled)
        for item_id in self.open_ids:
            outcomes[item_id] = self._temporary.get(item_id, deferred(self._last_error))
        return HopDone(outcomes)
