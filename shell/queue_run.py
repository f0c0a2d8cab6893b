"""Deliver queue items: claim each, deliver its addresses, then act on the decisions.

Every outcome, local or remote, goes to one ``core/ledger.Ledger``, which says what to
do: delivered items leave the queue; deferred ones get their attempts, next try and
last error written into the Q file (the arrival time, its mtime, is kept); failed and
expired ones bounce to their sender.  One process handles every item it is given:
never a process per recipient.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from dma.adapters import system
from dma.adapters.privileges import delivery_identity
from dma.adapters.spool import Claim, Spool
from dma.core.envelope import local_user
from dma.core.errors import DmaError
from dma.core.ledger import (
    Address,
    AddressId,
    Change,
    Deferred,
    Delivered,
    Failed,
    Ledger,
    Moment,
    Narrowed,
    Report,
)
from dma.core.outcomes import Outcome, failed
from dma.core.retry import after_temporary_failure
from dma.core.values import field, mutable
from dma.shell.guard import describe
from dma.shell.settings import Settings

if TYPE_CHECKING:
    from dma.adapters.log import Logger
    from dma.shell.remote import Parcel

MAX_CLAIM_BATCH = 5000
MAX_OPEN_FILES = 2 * MAX_CLAIM_BATCH + 64
RESERVED_DESCRIPTORS = 32

DeliverRemote = Callable[[Sequence["Parcel"], Report], None]
"""Remote delivery: it reports the outcome of each address it is given as it has it."""


@mutable
class RunSummary:
    """Counts of one run, for the exit status of -D and the log."""

    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def exit_code(self) -> int:
        if self.bounced:
            return 69
        if self.deferred or self.skipped:
            return 75
        return 0


def claim_batch_size() -> int:
    """How many items one batch may claim: half the descriptors we may open.

    The soft open-file limit is first raised to the hard one (as far as
    ``MAX_OPEN_FILES``), so that a big queue still goes out in few batches, each
    over its own connections.  The other half is for connections, TLS, M files,
    mailboxes and the log.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass  # keep the limit we have; smaller batches still work
    if soft == resource.RLIM_INFINITY:
        return MAX_CLAIM_BATCH
    return max(1, min(MAX_CLAIM_BATCH, (soft - RESERVED_DESCRIPTORS) // 2))


class QueueRun:
    """One pass over some items of one spool."""

    def __init__(
        self, settings: Settings, log: Logger, *, remote: DeliverRemote | None = None,
        verbose: bool = False,
    ) -> None:
        self.settings = settings
        self.spool = Spool(settings.config.spooldir)
        self.log = log
        self.remote = remote  # made on first use: a local-only run never loads it
        self.verbose = verbose
        self.summary = RunSummary()
        self.followups: list[str] = []
        self.busy_mailboxes: set[str] = set()
        self.ledger = Ledger(lifetime=settings.config.queuelifetime)
        self._claims: dict[str, Claim] = {}
        self._lock = threading.Lock()  # remote delivery reports from its threads
        self._sync = True

    def run(self, item_ids: Sequence[str]) -> RunSummary:
        """Deliver the named items, then the bounces that they caused.

        Items are claimed a batch at a time: every claim holds its Q file open, so a
        queue of thousands claimed at once would run out of file descriptors.
        """
        pending = list(item_ids)
        size = claim_batch_size()
        while pending:
            self.followups = []
            for start in range(0, len(pending), size):
                self._run_batch(pending[start:start + size])
            pending = self.followups
        return self.summary

    def _run_batch(self, item_ids: Sequence[str]) -> None:
        """Deliver the named items (already chosen by the caller); skip locked ones.

        Whatever goes wrong with one item (SPEC 5.1), be it our own error or a bug,
        is that item's alone: it is logged with the item's id, written into its Q
        file as the last error when we hold it, and the run goes on.
        """
        claims: list[Claim] = []
        local: list[tuple[Address, str]] = []
        remote: list[Parcel] = []
        try:
            for item_id in item_ids:
                claim = self._claim(item_id)
                if claim is None:
                    continue
                claims.append(claim)
                try:
                    self._sort(claim, local, remote)
                except Exception as error:
                    self._give_up(claim.item.id, error)
            for address, user in local:
                self._deliver_local(address, user)
            if remote:
                self._run_remote(remote)
            for claim in claims:  # nobody reported on these: deferred, and said why
                self._apply(self.ledger.defer_open(claim.item.id, "no outcome reported",
                                                   self._moment()))
        finally:
            for claim in claims:
                claim.release()
                self._claims.pop(claim.item.id, None)
                self.ledger.forget(claim.item.id)  # decided by now: a big queue stays small

    def _sort(self, claim: Claim, local: list[tuple[Address, str]],
              remote: list[Parcel]) -> None:
        """Put the claimed item's addresses in the book, each as local or remote."""
        from dma.shell.remote import Parcel

        self._claims[claim.item.id] = claim
        config = self.settings.config
        for address in self.ledger.add(claim.item, claim.arrival):
            user = local_user(address.recipient, mailname=self.settings.mailname,
                              nullclient=config.nullclient)
            if user is not None:
                local.append((address, user))
            else:
                remote.append(Parcel(address, claim))

    def _deliver_local(self, address: Address, user: str) -> None:
        claim = self._claims[address.id.item_id]
        self.log.info("trying delivery", id=claim.item.id, to=user, via="local")
        try:
            outcome = self.deliver_local(claim, user)
        except Exception as error:
            self._give_up(claim.item.id, error)
            return
        self.report(address.id, outcome)

    def _claim(self, item_id: str) -> Claim | None:
        """The claim on ``item_id``, or None (counted as skipped) when it cannot be had."""
        try:
            claim = self.spool.claim(item_id)
        except Exception as error:  # one broken item must not stop the others
            reason = str(error) if isinstance(error, DmaError) else describe(error)
            self.log.error("cannot take queue item", id=item_id, error=reason)
            self.summary.errors.append(f"{item_id}: {reason}")
            self.summary.skipped += 1
            return None
        if claim is None:
            self.summary.skipped += 1
        return claim

    def _give_up(self, item_id: str, error: Exception) -> None:
        """The item's handling raised: its open addresses are deferred, with the error as
        the reason (a DmaError says what it is; anything else is our bug, named with where)."""
        if isinstance(error, DmaError):
            reason = str(error)
        else:
            reason = f"internal error: {describe(error)}"
            self.log.error("internal error while delivering; the item stays queued",
                           id=item_id, error=reason)
        with self._lock:
            self._apply(self.ledger.defer_open(item_id, reason, self._moment()))

    def report(self, address: AddressId, outcome: Outcome) -> None:
        """The one way in for an outcome: the ledger decides, and the decision is acted on
        at once, so that a crash later in the run cannot send what was accepted again.
        Delivery threads call this as each transaction ends."""
        with self._lock:
            self._apply(self.ledger.record(address, outcome, self._moment()))

    def settle_claimed(self, claim: Claim, outcome: Outcome) -> None:
        """Give every address of an item claimed by the caller ``outcome`` and act on it
        (the mail administrator's -Qb: failed, so bounced)."""
        self._claims[claim.item.id] = claim
        try:
            for address in self.ledger.add(claim.item, claim.arrival):
                self.report(address.id, outcome)
        finally:
            self._claims.pop(claim.item.id, None)

    def _moment(self) -> Moment:
        return Moment(system.epoch(), system.jitter())

    def _run_remote(self, parcels: list[Parcel]) -> None:
        if self.settings.config.localonly:
            for parcel in parcels:
                self.report(parcel.address.id, failed(
                    "remote delivery is disabled on this host (LOCALONLY)", "5.3.2"))
            return
        deliver = self._remote()  # a broken auth.conf stops the run (78), mail untouched
        self._sync = False  # one directory sync for the whole batch, below
        try:
            self._deliver_remote(deliver, parcels)
        except Exception as error:  # a bug in remote delivery: every open item keeps it
            for item_id in dict.fromkeys(p.address.id.item_id for p in parcels):
                self._give_up(item_id, error)
        finally:
            self._sync = True
            self.spool.sync_directory()

    def _deliver_remote(self, deliver: DeliverRemote, parcels: list[Parcel]) -> None:
        """Here, or, when we are root in system mode, in a child as the delivery user
        (SPEC 8.2): DNS, SMTP and TLS never run as root.  Either way each outcome comes
        to ``report`` as it is had, and this process acts on it."""
        identity = delivery_identity()
        if identity is None:
            deliver(parcels, self.report)
            return
        from dma.shell.remote_child import deliver_as

        deliver_as(identity, deliver, parcels, self.report, self.log,
                   claims=tuple(self._claims.values()), spooldir=self.settings.config.spooldir,
                   preload=getattr(deliver, "preload", None))

    def _remote(self) -> DeliverRemote:
        """The remote delivery, made on first use, in this process (as root in system
        mode: auth.conf is read here, and its secrets reach the unprivileged child in
        memory).  An error in auth.conf is the administrator's to fix, so it ends the run
        with its file:line and exit 78 and leaves the items as they are, rather than
        count an attempt against each."""
        if self.remote is None:
            from dma.shell.remote import RemoteDelivery

            self.remote = RemoteDelivery(self.settings, self.log, verbose=self.verbose)
        return self.remote

    def deliver_local(self, claim: Claim, user: str) -> Outcome:
        from dma.shell.local import deliver_local

        return deliver_local(claim, user, self.settings, self.busy_mailboxes)

    # --- acting on the ledger's changes ----------------------------------------------

    def _apply(self, changes: Sequence[Change]) -> None:
        """Act on each change; an error on one item is logged, not raised into the caller
        (a delivery thread would take it for a lost connection and resend the rest).

        When acting fails (a bounce that cannot be built, say), the item stays queued
        with that error as its last one, so mailq shows it.
        """
        for change in changes:
            claim = self._claims.get(change.item.id)
            if claim is None:
                continue
            try:
                self._act(claim, change)
                continue
            except DmaError as error:
                reason = str(error)
            except Exception as error:
                reason = f"internal error: {describe(error)}"
            self.log.error("cannot record outcome; the item stays queued", id=claim.item.id,
                           outcome=type(change).__name__.lower(), error=reason)
            self.summary.errors.append(f"{claim.item.id}: {reason}")
            if not isinstance(change, Delivered):
                self._record_error(claim, reason)

    def _act(self, claim: Claim, change: Change) -> None:
        if isinstance(change, Narrowed):
            self._narrow(claim, change)
        elif isinstance(change, Delivered):
            claim.delete(sync=self._sync)
            self.summary.delivered += 1
            self.log.info("delivered", id=claim.item.id, to=claim.item.recipient,
                          detail=change.detail)
        elif isinstance(change, Deferred):
            self._defer(claim, change)
        else:
            self._bounce(claim, change)

    def _narrow(self, claim: Claim, change: Narrowed) -> None:
        """Delivered addresses of a list leave its Q file at once."""
        try:
            claim.update(change.item)
        except DmaError as error:
            self.log.error("cannot remove delivered addresses from the queue item; "
                           "they may be sent again", id=claim.item.id, error=str(error))

    def _defer(self, claim: Claim, change: Deferred) -> None:
        rescheduled = change.rescheduled
        if change.bounce is not None:
            from dma.shell.bouncing import bounce_parts

            bounce_ids = bounce_parts(claim, change.bounce, self.settings, self.log)
            if bounce_ids is None and change.unbounced is not None:
                rescheduled = change.unbounced
            else:
                self.followups.extend(bounce_ids or ())
        claim.update(rescheduled)
        self.summary.deferred += 1
        self.log.warning("deferred", id=claim.item.id, to=rescheduled.recipient,
                         reason=change.reason, next_try=rescheduled.next_try,
                         attempts=rescheduled.attempts)

    def _bounce(self, claim: Claim, change: Failed) -> None:
        from dma.shell.bouncing import bounce

        bounce_ids = bounce(claim, change.outcome, self.settings, self.log)
        if bounce_ids is None:
            self.summary.deferred += 1
        else:
            self.summary.bounced += 1
            self.followups.extend(bounce_ids)

    def _record_error(self, claim: Claim, reason: str) -> None:
        """Write ``reason`` into the item's Q file as its last error (best effort)."""
        try:
            claim.update(after_temporary_failure(
                claim.item, now=int(system.epoch()), error=reason, jitter=system.jitter()))
            self.summary.deferred += 1
        except Exception as error:
            self.log.error("cannot write the last error into the queue file",
                           id=claim.item.id, error=describe(error))


