"""How many connections one next hop gets at once, and what they add up to (SPEC 5.1).

``HopAttempts`` says which address to try; this module decides how many connections
to that address share the hop's messages, each one a *lane* that takes the next
message from one shared queue, reuses its connection and pipelines.  A steppable
object like ``HopAttempts``: the shell tells it what each lane did and asks how many
lanes to open; nothing here touches a socket, a thread or the clock.

The rules:

- the first lane opens at once; more open only once a lane has had the answer to a
  message (so the host works: a dead or refusing host costs one connection, not
  MAXCONNECTIONS of them); the answers say how long the server takes;
- at most ``limit`` lanes are open at once, and each one opened must have at least
  ``LANE_SHARE`` waiting messages to carry: a connection's greeting, EHLO, TLS and AUTH
  cost about as many round trips as that many pipelined messages;
- a server gets at most ``FAST_SERVER_LANES`` until ``CONFIRM_ANSWERS`` answers have
  all taken ``SLOW_REPLY`` or more; one that answered faster keeps that cap: the time
  is ours then, not the server's, and more threads only share our CPU (a loopback sink
  that answers at once: 4 connections 0.41 s for 1000 messages, 32 connections 0.49 s;
  bench/README.md).  The fastest answer counts, as a pause of ours only lengthens one;
- a lane that ends in a failure (refused, a 421 greeting, a lost connection) while
  other lanes are open lowers the hop's limit to those others, for the rest of the
  run (``limit`` is what the shell keeps for the hop's next batches): the server said
  it has enough of us.  The lane is not replaced, its unfinished messages go back to
  the shared queue for the others, and its failure is not the hop's;
- when the last lane has ended, what the lanes did adds up to one ``SessionResult``
  for ``HopAttempts``: settled outcomes of every lane; temporary ones of items no lane
  settled; the failure of the last lane that failed, which becomes the reason of what
  stays open; the authentication and handshake failures only when no lane was ever
  ready (a host that took one lane's login is not left for another's).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from dma.core.errors import SoftwareError
from dma.core.hop_attempts import SessionResult
from dma.core.outcomes import Outcome
from dma.core.values import field, frozen, mutable

Id = TypeVar("Id", bound=Hashable)

LANE_SHARE = 4
"""Messages waiting per open lane before one more is worth opening."""
SLOW_REPLY = 0.001
"""Seconds: a server slower than this to answer the end of a message gets every lane."""
FAST_SERVER_LANES = 4
"""Lanes at most for a server that answers within SLOW_REPLY, or not yet known slow."""
CONFIRM_ANSWERS = 3
"""Answers that must all be slow before a server gets more than FAST_SERVER_LANES."""


@frozen
class LaneEnded(Generic[Id]):
    """What one lane's connection did: its result, and whether it was ever ready."""

    result: SessionResult[Id]
    was_ready: bool


@mutable
class _Tally(Generic[Id]):
    settled: dict[Id, Outcome] = field(default_factory=dict)
    retry: dict[Id, Outcome] = field(default_factory=dict)
    failure: str | None = None
    first: SessionResult[Id] | None = None  # the first lane's, for auth and TLS


class HopLanes(Generic[Id]):
    """The lanes of one hop's connections to one address (see the module doc)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise SoftwareError(f"a hop's connection limit must be at least 1, not {limit}",
                                hint="MAXCONNECTIONS is checked to be positive")
        self._limit = limit
        self._starting = 0  # open, not ready yet
        self._ready = 0     # open and ready
        self._opened = 0    # every lane opened so far
        self._ever_ready = False
        self._answers = 0  # answers to the end of a message, timed
        self._fastest: float | None = None  # the quickest of them, seconds
        self._tally: _Tally[Id] = _Tally()

    @property
    def limit(self) -> int:
        """The most lanes this hop may have at once: the shell keeps it for the run."""
        return self._limit

    @property
    def open(self) -> int:
        """Lanes opened and not ended."""
        return self._starting + self._ready

    @property
    def done(self) -> bool:
        """True once lanes were opened and every one has ended."""
        return self._opened > 0 and self.open == 0

    def answered(self, seconds: float) -> None:
        """A lane's server answered the end of a message ``seconds`` after it was sent."""
        self._answers += 1
        self._fastest = seconds if self._fastest is None else min(self._fastest, seconds)

    @property
    def wants_timing(self) -> bool:
        """True while answers are still needed to know the server's speed."""
        return self._answers < CONFIRM_ANSWERS

    def to_open(self, waiting: int) -> int:
        """How many lanes to open now, with ``waiting`` messages in the shared queue."""
        if self._opened == 0:
            return 1 if waiting > 0 else 0
        if self._fastest is None or not self._ever_ready or self._starting > 0:
            return 0  # open more only from a lane known to work, and only one wave at once
        slow = self._answers >= CONFIRM_ANSWERS and self._fastest >= SLOW_REPLY
        limit = self._limit if slow else min(self._limit, FAST_SERVER_LANES)
        return max(0, min(limit - self.open, waiting // LANE_SHARE - self.open))

    def opened(self, count: int = 1) -> None:
        """``count`` lanes are connecting."""
        self._starting += count
        self._opened += count

    def ready(self) -> None:
        """A lane can send: the server greeted it, TLS and AUTH are done."""
        if self._starting < 1:
            raise SoftwareError("a lane became ready that was not connecting",
                                hint="call opened() for each lane first")
        self._starting -= 1
        self._ready += 1
        self._ever_ready = True

    def ended(self, lane: LaneEnded[Id]) -> None:
        """A lane's connection is closed; take in what it did."""
        if lane.was_ready:
            if self._ready < 1:
                raise SoftwareError("a ready lane ended that was not counted",
                                    hint="call ready() when a lane becomes ready")
            self._ready -= 1
        else:
            if self._starting < 1:
                raise SoftwareError("a lane ended that was not opened",
                                    hint="call opened() for each lane first")
            self._starting -= 1
        result = lane.result
        tally = self._tally
        if tally.first is None:
            tally.first = result
        for item_id, outcome in result.settled.items():
            tally.settled.setdefault(item_id, outcome)
            tally.retry.pop(item_id, None)
        for item_id, outcome in result.retry.items():
            if item_id not in tally.settled:
                tally.retry[item_id] = outcome
        if result.failure is not None:
            tally.failure = result.failure
            if self.open > 0:
                self._limit = max(1, min(self._limit, self.open))

    def result(self) -> SessionResult[Id]:
        """What the lanes did together, for ``HopAttempts.session_ended``."""
        if not self.done:
            raise SoftwareError("the result of a hop's lanes was asked before they ended",
                                hint="wait for every lane to end")
        tally = self._tally
        first = tally.first
        alone = not self._ever_ready and first is not None
        return SessionResult(
            dict(tally.settled),
            dict(tally.retry),
            tally.failure,
            first.auth if alone and first is not None else None,
            first.tls_handshake_failed if alone and first is not None else None,
        )
