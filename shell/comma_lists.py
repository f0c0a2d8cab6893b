"""Outcomes per queue item when one Q file names several addresses (a comma list).

The C dma queues ``dma 'a@x.org,b@y.org'`` as one item whose Recipient is the whole
list, and so do we.  Remote delivery routes each address on its own, as a piece of
work with an id of its own (``<item id>/<n>``); this module folds the outcomes of
those pieces back into one outcome per item, and takes each delivered address out
of the Q file at once, so that no address is ever sent twice.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dma.adapters.spool import Claim
from dma.core.errors import DmaError
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.routing import join_recipient_parts, recipient_parts
from dma.shell.queue_run import Report

if TYPE_CHECKING:
    from dma.adapters.log import Logger

PART = "/"
"""Joins an item id and a part number: the work id of one address of a comma list."""


@dataclass(frozen=True, slots=True)
class Work:
    """One address to deliver: a queue item, or one part of an item's comma list."""

    id: str  # the item id, or "<item id>/<n>" for part n of its Recipient list
    recipient: str
    claim: Claim


@dataclass
class ListItem:
    """A queue item whose Recipient is a comma list: the outcome of each part so far."""

    claim: Claim
    parts: tuple[str, ...]
    outcomes: dict[int, Outcome] = dataclasses.field(default_factory=dict)
    final: Outcome | None = None


def list_outcome(listed: ListItem) -> Outcome:
    """The item's outcome once every part has one (see ItemOutcomes.record).

    Delivered when every part is; otherwise the outcome carries each undelivered
    part with its own outcome: it fails (bounces) when every one of them failed for
    good, else it is deferred, and the queue run bounces the failed parts alone and
    keeps the deferred ones queued.
    """
    results = [(part, listed.outcomes[n]) for n, part in enumerate(listed.parts)]
    if all(outcome.kind == "delivered" for _, outcome in results):
        return delivered("; ".join(f"{part}: {outcome.detail}" for part, outcome in results))
    left = tuple((part, outcome) for part, outcome in results if outcome.kind != "delivered")
    failures = [(part, outcome) for part, outcome in left if outcome.kind == "failed"]
    if len(failures) == len(left):
        first = failures[0][1]
        detail = "; ".join(f"{part}: {outcome.detail}" for part, outcome in failures)
        return failed(detail, first.status, first.diagnostic, first.remote_mta, parts=left)
    reasons: dict[str, list[str]] = {}
    for part, outcome in left:
        reasons.setdefault(outcome.detail, []).append(part)
    if len(reasons) == 1 and len(left) == len(results):
        return deferred(next(iter(reasons)), parts=left)  # one reason for the whole list
    return deferred("; ".join(f"{', '.join(parts)}: {reason}"
                              for reason, parts in reasons.items()), parts=left)


class ItemOutcomes:
    """The outcome of each claimed item, collected from the outcomes of its work.

    Safe to call from the delivery threads: a list item's parts may be delivered
    over different hops at once.
    """

    def __init__(self, log: Logger, report: Report | None) -> None:
        self.log = log
        self.report = report
        self.outcomes: dict[str, Outcome] = {}
        self._lists: dict[str, ListItem] = {}
        self._lock = threading.Lock()

    def works(self, claim: Claim) -> list[Work]:
        """The work of one claimed item: itself, or one piece per address of its list."""
        parts = recipient_parts(claim.item.recipient)
        if len(parts) == 1:
            return [Work(claim.item.id, claim.item.recipient, claim)]
        self._lists[claim.item.id] = ListItem(claim, parts)
        return [Work(f"{claim.item.id}{PART}{n}", part, claim) for n, part in enumerate(parts)]

    def record(self, work_id: str, outcome: Outcome, *, now: bool = False) -> None:
        """Note ``outcome`` for an item, or for one part of a comma list.

        ``now`` means "final now, tell the run at once" (a transaction ended).  A
        list item's outcome is decided when each part has one (``list_outcome``).
        Each delivered part is taken out of the Q file's Recipient at once, so no
        part is ever sent twice.
        """
        item_id, part, index = work_id.partition(PART)
        if not part:
            if now:
                if self.report is not None:
                    self.report(item_id, outcome)
            else:
                self.outcomes[item_id] = outcome
            return
        with self._lock:
            listed = self._lists[item_id]
            if int(index) in listed.outcomes or listed.final is not None:
                return
            listed.outcomes[int(index)] = outcome
            if outcome.kind == "delivered":
                self._drop_delivered(listed)
            if len(listed.outcomes) < len(listed.parts):
                return
            listed.final = final = list_outcome(listed)
            if not now:
                self.outcomes[item_id] = final
            if self.report is not None:
                self.report(item_id, final)

    def finish(self) -> dict[str, Outcome]:
        """Every item's outcome; list parts nobody answered for are deferred."""
        for item_id, listed in self._lists.items():
            for n in range(len(listed.parts)):  # parts nobody answered for (none known)
                self.record(f"{item_id}{PART}{n}", deferred("no outcome reported"))
            if listed.final is not None:  # also when it was reported during the run
                self.outcomes[item_id] = listed.final
        return self.outcomes

    def _drop_delivered(self, listed: ListItem) -> None:
        """Rewrite the Q file's Recipient to the parts not delivered (none left: no rewrite)."""
        left = [part for n, part in enumerate(listed.parts)
                if n not in listed.outcomes or listed.outcomes[n].kind != "delivered"]
        if not left:
            return
        claim = listed.claim
        try:
            claim.update(dataclasses.replace(claim.item,
                                             recipient=join_recipient_parts(left)))
        except DmaError as error:
            self.log.error("cannot remove delivered addresses from the queue item; "
                           "they may be sent again", id=claim.item.id, error=str(error))
