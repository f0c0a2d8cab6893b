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
- at the end every item has one outcome: the one it settled with, else the last
  temporary outcome a server gave it, else deferred with the last failure seen.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dma.core.errors import SoftwareError
from dma.core.outcomes import Outcome, deferred
from dma.core.routing import Target

NO_HOST_REACHED = "no host for this destination could be reached"
"""The deferral reason when no connection said why it failed."""
CREDENTIALS_REFUSED = (
    "the auth.conf login for this host was refused earlier in this run; not tried again"
    " (fix auth.conf, then run the queue)"
)
"""The deferral reason when a host was skipped because its login was just refused."""


@dataclass(frozen=True, slots=True)
class HopTarget:
    """One host of the hop, with the auth.conf credentials that apply to it (or None)."""

    target: Target
    credentials: tuple[str, str] | None = field(default=None, repr=False)  # login, password


@dataclass(frozen=True, slots=True)
class TryAddress:
    """Connect to ``address`` of ``target`` and offer it ``item_ids``, the items still open."""

    target: Target
    address: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SkipHost:
    """``target`` is passed over: another host of this hop just refused its credentials."""

    target: Target
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LeaveHost:
    """Authentication failed at ``target``: its other addresses are not tried."""

    target: Target
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class HopDone:
    """Nothing more to try: the final outcome of every item, settled ones first."""

    outcomes: Mapping[str, Outcome]


Step = TryAddress | SkipHost | LeaveHost | HopDone


@dataclass(frozen=True, slots=True)
class SessionResult:
    """What one connection did, as the shell reports it back.

    ``settled``: delivered or failed for good; ``retry``: temporary outcomes (another
    address or host may still take those items); ``failure``: the host's own failure,
    if any; ``auth``: set when that failure was authentication.
    """

    settled: Mapping[str, Outcome] = field(default_factory=dict)
    retry: Mapping[str, Outcome] = field(default_factory=dict)
    failure: str | None = None
    auth: Literal["refused", "unusable"] | None = None


class HopAttempts:
    """The attempt to deliver some items over one hop, step by step (see the module doc)."""

    def __init__(
        self,
        targets: Sequence[HopTarget],
        item_ids: Iterable[str],
        refused: Iterable[tuple[str, str]] = (),
    ) -> None:
        """``refused``: credentials a server turned down earlier in this run (other
        hops): hosts that take them are skipped, lest the account be locked."""
        self._targets = tuple(targets)
        self._ids = tuple(dict.fromkeys(item_ids))
        self._settled: dict[str, Outcome] = {}
        self._temporary: dict[str, Outcome] = {}
        self._refused: list[tuple[str, str]] = list(refused)  # credentials turned down
        self._last_error = NO_HOST_REACHED
        self._host = 0        # index of the host being worked on
        self._address = 0     # index of its next address
        self._awaiting: TryAddress | None = None
        self._leaving: Target | None = None  # auth failed there; LeaveHost not given yet

    @property
    def refused(self) -> tuple[tuple[str, str], ...]:
        """Every credential pair turned down so far, those given at the start included."""
        return tuple(self._refused)

    @property
    def open_ids(self) -> tuple[str, ...]:
        """The items not settled yet, in the order given."""
        return tuple(item_id for item_id in self._ids if item_id not in self._settled)

    def next_step(self) -> Step:
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
        while self._host < len(self._targets):
            host = self._targets[self._host]
            if self._address == 0 and host.credentials is not None \
                    and host.credentials in self._refused:
                self._host += 1
                if self._last_error == NO_HOST_REACHED:
                    self._last_error = CREDENTIALS_REFUSED
                return SkipHost(host.target, open_ids)
            if self._address < len(host.target.addresses):
                address = host.target.addresses[self._address]
                self._address += 1
                self._awaiting = TryAddress(host.target, address, open_ids)
                return self._awaiting
            self._next_host()
        return self._done()

    def session_ended(self, result: SessionResult) -> None:
        """Take in what the connection of the last ``TryAddress`` did."""
        tried = self._awaiting
        if tried is None:
            raise SoftwareError("session_ended() without a TryAddress to answer",
                                hint="call next_step() and connect where it says first")
        self._awaiting = None
        offered = set(tried.item_ids)
        for item_id, outcome in result.settled.items():
            if item_id in offered and item_id not in self._settled:
                self._settled[item_id] = outcome
        for item_id, outcome in result.retry.items():
            if item_id in offered and item_id not in self._settled:
                self._temporary[item_id] = outcome
        if result.failure:
            self._last_error = result.failure
        if result.auth is not None:
            host = self._targets[self._host]
            if result.auth == "refused" and host.credentials is not None:
                self._refused.append(host.credentials)
            self._leaving = host.target
            self._next_host()

    def _next_host(self) -> None:
        self._host += 1
        self._address = 0

    def _done(self) -> HopDone:
        outcomes = dict(self._settled)
        for item_id in self.open_ids:
            outcomes[item_id] = self._temporary.get(item_id, deferred(self._last_error))
        return HopDone(outcomes)
