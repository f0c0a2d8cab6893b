"""Deliver queue items: claim each, route it, deliver, then act on the outcome.

Delivered items leave the queue; deferred ones get their attempts, next try and last
error written into the Q file (the arrival time, its mtime, is kept); failed and
expired ones bounce to their sender.  One process handles every item it is given:
never a process per recipient.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dma.adapters import system
from dma.adapters.spool import Claim, Spool
from dma.core.envelope import local_name
from dma.core.errors import DmaError
from dma.core.outcomes import Outcome, deferred, failed
from dma.core.queuefile import QueueItem
from dma.core.retry import after_temporary_failure, is_expired
from dma.core.routing import recipient_parts
from dma.shell.guard import describe
from dma.shell.settings import Settings

if TYPE_CHECKING:
    from dma.adapters.log import Logger

MAX_CLAIM_BATCH = 5000
MAX_OPEN_FILES = 2 * MAX_CLAIM_BATCH + 64
RESERVED_DESCRIPTORS = 32

Report = Callable[[str, Outcome], None]
DeliverRemote = Callable[[Sequence[Claim], Report], dict[str, Outcome]]


@dataclass
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


def is_local(recipient: str, settings: Settings) -> str | None:
    """The local user an item goes to, or None when it is remote (current config rules).

    A comma list (``a@x.org,root``, as the C dma queues it) is None: remote delivery
    routes each of its parts, local ones included (shell/comma_lists.py keeps count).
    """
    if settings.config.nullclient or len(recipient_parts(recipient)) > 1:
        return None
    return local_name(recipient, settings.mailname)


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
        local_claims: list[tuple[Claim, str]] = []
        remote_claims: list[Claim] = []
        try:
            for item_id in item_ids:
                claim = self._claim(item_id)
                if claim is None:
                    continue
                try:
                    user = is_local(claim.item.recipient, self.settings)
                except Exception as error:
                    self._finish_safely(claim, self._crashed(claim.item.id, error))
                    continue
                if user is not None:
                    local_claims.append((claim, user))
                else:
                    remote_claims.append(claim)
            for claim, user in local_claims:
                self.log.info("trying delivery", id=claim.item.id, to=user, via="local")
                try:
                    outcome = self.deliver_local(claim, user)
                except Exception as error:
                    outcome = self._crashed(claim.item.id, error)
                self._finish_safely(claim, outcome)
            if remote_claims:
                self.run_remote(remote_claims)
        finally:
            for claim, _ in local_claims:
                claim.release()
            for claim in remote_claims:
                claim.release()

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

    def _crashed(self, item_id: str, error: Exception) -> Outcome:
        """The outcome of an item whose handling raised: deferred, with the error as the
        reason (a DmaError says what it is; anything else is our bug, named with where)."""
        if isinstance(error, DmaError):
            return deferred(str(error))
        reason = f"internal error: {describe(error)}"
        self.log.error("internal error while delivering; the item stays queued",
                       id=item_id, error=reason)
        return deferred(reason)

    def run_remote(self, claims: list[Claim]) -> None:
        if self.settings.config.localonly:
            for claim in claims:
                self._finish_safely(claim, failed(
                    "remote delivery is disabled on this host (LOCALONLY)", "5.3.2"))
            return
        by_id = {claim.item.id: claim for claim in claims}
        finished: set[str] = set()
        lock = threading.Lock()

        def report(item_id: str, outcome: Outcome) -> None:
            # called from delivery threads as each transaction ends: act at once, so a
            # crash later in the run cannot send what was already accepted again
            with lock:
                if item_id in by_id and item_id not in finished:
                    finished.add(item_id)
                    self._finish_safely(by_id[item_id], outcome, sync=False)

        try:
            deliver = self._remote()  # a broken auth.conf stops the run (78), mail untouched
            try:
                outcomes = deliver(claims, report)
            except Exception as error:  # a bug in remote delivery: every open item keeps it
                outcomes = {claim.item.id: self._crashed(claim.item.id, error)
                            for claim in claims}
            for claim in claims:
                with lock:
                    if claim.item.id in finished:
                        continue
                    finished.add(claim.item.id)
                outcome = outcomes.get(claim.item.id, deferred("no outcome reported"))
                self._finish_safely(claim, outcome, sync=False)
        finally:
            self.spool.sync_directory()

    def _remote(self) -> DeliverRemote:
        """The remote delivery, made on first use.  It reads auth.conf: an error there is
        the administrator's to fix, so it ends the run with its file:line and exit 78 and
        leaves the items as they are, rather than count an attempt against each."""
        if self.remote is None:
            from dma.shell.remote import RemoteDelivery

            self.remote = RemoteDelivery(self.settings, self.log, verbose=self.verbose)
        return self.remote

    def deliver_local(self, claim: Claim, user: str) -> Outcome:
        from dma.shell.local import deliver_local

        return deliver_local(claim, user, self.settings, self.busy_mailboxes)

    def _finish_safely(self, claim: Claim, outcome: Outcome, *, sync: bool = True) -> None:
        """finish(), but an error on one item is logged, not raised into the caller (a
        delivery thread would take it for a lost connection and resend the rest).

        When acting on the outcome fails for a bug (a bounce that cannot be built, say),
        the item stays queued with that error as its last one, so mailq shows it.
        """
        try:
            self.finish(claim, outcome, sync=sync)
            return
        except DmaError as error:
            reason = str(error)
        except Exception as error:
            reason = f"internal error: {describe(error)}"
        self.log.error("cannot record outcome; the item stays queued", id=claim.item.id,
                       outcome=outcome.kind, error=reason)
        self.summary.errors.append(f"{claim.item.id}: {reason}")
        if outcome.kind != "delivered":
            self._record_error(claim, reason)

    def _record_error(self, claim: Claim, reason: str) -> None:
        """Write ``reason`` into the item's Q file as its last error (best effort)."""
        try:
            claim.update(after_temporary_failure(
                claim.item, now=int(system.epoch()), error=reason, jitter=_jitter()))
            self.summary.deferred += 1
        except Exception as error:
            self.log.error("cannot write the last error into the queue file",
                           id=claim.item.id, error=describe(error))

    def finish(self, claim: Claim, outcome: Outcome, *, sync: bool = True) -> None:
        """Act on an outcome: delete, reschedule, or bounce."""
        item = claim.item
        if outcome.kind == "delivered":
            claim.delete(sync=sync)
            self.summary.delivered += 1
            self.log.info("delivered", id=item.id, to=item.recipient, detail=outcome.detail)
            return
        now = system.epoch()
        if outcome.kind == "deferred" and outcome.parts_of("failed"):
            item = self._bounce_failed_parts(claim, outcome)
        if outcome.kind == "deferred":
            lifetime = self.settings.config.queuelifetime
            if not is_expired(claim.arrival, now, lifetime):
                updated = after_temporary_failure(
                    item, now=int(now), error=outcome.detail, jitter=_jitter()
                )
                claim.update(updated)
                self.summary.deferred += 1
                self.log.warning("deferred", id=item.id, to=item.recipient,
                                 reason=outcome.detail, next_try=updated.next_try,
                                 attempts=updated.attempts)
                return
            from dma.core.bounce import expiry_failure

            expiry = expiry_failure(item.recipient, outcome.detail, lifetime)
            outcome = failed(expiry.reason, expiry.status, expiry.diagnostic,
                             expiry.remote_mta)
        from dma.shell.bouncing import bounce

        bounce_ids = bounce(claim, outcome, self.settings, self.log)
        if bounce_ids is None:
            self.summary.deferred += 1
        else:
            self.summary.bounced += 1
            self.followups.extend(bounce_ids)

    def _bounce_failed_parts(self, claim: Claim, outcome: Outcome) -> QueueItem:
        """Bounce the addresses of a comma-list item refused for good and keep only the
        deferred ones in it; the item as it is now (unchanged when no bounce was made)."""
        from dma.core.routing import join_recipient_parts
        from dma.shell.bouncing import bounce_parts

        bounce_ids = bounce_parts(claim, outcome, self.settings, self.log)
        if bounce_ids is None:
            return claim.item
        self.followups.extend(bounce_ids)
        waiting = [part for part, own in outcome.parts if own.kind != "failed"]
        claim.update(dataclasses.replace(claim.item, recipient=join_recipient_parts(waiting)))
        return claim.item


def _jitter() -> float:
    return int.from_bytes(os.urandom(4), "big") / 2**32
