"""Several connections to one address of a hop, sharing its messages (SPEC 5.1).

The first connection (a *lane*) runs in the calling thread, with the connection slot
the hop already holds.  When a lane has an answer to a message, ``dma.core.hop_lanes``
says how many more to open (given how long the answers took);
each gets a thread of its own and a slot taken without waiting (none free: it is not
opened; the slots bound every dma process of the spool together).  Lanes take messages
one at a time from one ``MessageQueue``, so a slow connection never holds messages
another could send.  What they did adds up to one ``SessionResult`` for
``HopAttempts``, and the hop's lowered limit, if a server turned a lane away, is
handed back for the rest of the run.

Threads, not processes: a lane spends its time waiting for the server, and two worker
processes (each half the items) were slower than one on the 2-core bench machine, where
the sink shares the cores (bench/README.md, flush.py).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from dma.adapters.slots import Slot, SlotError, Slots
from dma.core.hop_attempts import SessionResult, TryAddress
from dma.core.hop_lanes import HopLanes, LaneEnded
from dma.core.ledger import AddressId
from dma.core.routing import NextHop
from dma.shell.outgoing_message import MessageQueue, OutgoingMessage

if TYPE_CHECKING:
    from dma.shell.smtp_connection import SmtpDriver


class LaneRun:
    """One ``TryAddress`` carried out over up to ``limit`` connections at once."""

    def __init__(self, driver: SmtpDriver, hop: NextHop, step: TryAddress[AddressId],
                 messages: list[OutgoingMessage], *, limit: int, slots: Slots) -> None:
        self.driver = driver
        self.hop = hop
        self.step = step
        self.queue = MessageQueue(messages)
        self.lanes: HopLanes[AddressId] = HopLanes(limit)
        self.slots = slots
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None  # the first bug a lane met

    @property
    def limit(self) -> int:
        """The hop's connection limit after this attempt (lowered when turned away)."""
        return self.lanes.limit

    def run(self) -> SessionResult[AddressId]:
        """Open the first lane here and more as the lanes allow; return what they did
        once every one has ended.  A bug in a lane is raised again after that."""
        with self._changed:
            self.lanes.opened()
        self._lane(None)
        with self._changed:
            while not self.lanes.done:
                self._changed.wait()
        for thread in self._threads:
            thread.join()
        if self._error is not None:
            raise self._error
        return self.lanes.result()

    def _lane(self, slot: Slot | None) -> None:
        """One connection's life; ``slot``: its own, released when it closes."""
        was_ready = False

        def ready() -> None:
            nonlocal was_ready
            was_ready = True
            with self._changed:
                self.lanes.ready()

        result: SessionResult[AddressId]
        try:
            result = self.driver.session(self.hop, self.step, self.queue, ready,
                                         self._answered)
        except Exception as error:
            result = SessionResult(failure=f"internal error: {error}")
            with self._changed:
                self._error = self._error or error
        finally:
            if slot is not None:
                slot.release()
        with self._changed:
            self.lanes.ended(LaneEnded(result, was_ready))
            self._changed.notify_all()

    def _answered(self, server_wait: float) -> bool:
        """A lane's message was answered after ``server_wait`` seconds: open the lanes
        core allows, as slots are free.  False once core needs no more timings."""
        with self._changed:
            self.lanes.answered(server_wait)
            for _ in range(self.lanes.to_open(len(self.queue))):
                slot = self._free_slot()
                if slot is None:
                    break
                thread = threading.Thread(target=self._lane, args=(slot,), daemon=True,
                                          name=f"lane {len(self._threads) + 1} {self.hop.host}")
                try:
                    thread.start()  # it waits for this lock before it counts for anything
                except RuntimeError:  # no thread to be had: the lanes open do the work
                    slot.release()
                    break
                self.lanes.opened()
                self._threads.append(thread)
            return self.lanes.wants_timing

    def _free_slot(self) -> Slot | None:
        """A connection slot free now; None when all are held or they cannot be used."""
        try:
            return self.slots.try_acquire()
        except SlotError:
            return None  # the first lane goes on alone; it said so when it took its own
