"""Remote delivery: route claimed items, and work each next hop (SPEC 5.3-5.6).

Claims are grouped by next hop; each hop gets one connection at a time carrying one
transaction per message (all of that message's recipients for the hop).  At most
MAXCONNECTIONS hops are worked on at once, in threads of this process, and every
connection holds one of the spool's MAXCONNECTIONS slots (``adapters/slots.py``),
so that all dma processes together stay within the limit (SPEC 5.1).

Which address to try next and what the connections add up to is decided in core
(``dma.core.hop_attempts``); this module looks the hosts up, takes the slot and
logs, ``shell/smtp_connection.py`` drives each connection, and
``shell/comma_lists.py`` folds the outcomes of a comma list's addresses together.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dma.adapters.hosts import system_smarthost_targets
from dma.adapters.slots import Slot, SlotError, Slots
from dma.adapters.spool import Claim
from dma.core.authconf import AuthTable, lookup, parse_auth
from dma.core.config import nameserver_address
from dma.core.errors import DmaError
from dma.core.hop_attempts import HopAttempts, HopDone, HopTarget, LeaveHost, SkipHost
from dma.core.outcomes import Outcome, deferred, failed
from dma.core.routing import (
    DnsOutcome,
    DnsPermanent,
    DnsTemporary,
    NextHop,
    Target,
    Targets,
    next_hop,
)
from dma.core.transport import QueuedRecipient, plan_transactions
from dma.shell.comma_lists import ItemOutcomes, Work
from dma.shell.guard import describe
from dma.shell.outgoing_message import OutgoingMessage, logged_ids, narrowed
from dma.shell.queue_run import Report, is_local
from dma.shell.settings import Settings, read_text
from dma.shell.smtp_connection import SmtpDriver

if TYPE_CHECKING:
    from dma.adapters.dns import Resolver as DnsResolver
    from dma.adapters.log import Logger


class RemoteDelivery:
    """Deliver claimed remote items; return an outcome per item id."""

    def __init__(self, settings: Settings, log: Logger, *, verbose: bool = False) -> None:
        self.settings = settings
        self.config = settings.config
        self.log = log
        self.verbose = verbose
        self.auth = self._load_auth()
        self.items = ItemOutcomes(log, None)
        self.driver = SmtpDriver(settings, log, self._settled, verbose=verbose)
        self._resolver: DnsResolver | None = None
        self.slots = Slots(self.config.spooldir, max(1, self.config.maxconnections))
        self.slot_wait = float(self.config.timeout)
        """Seconds a hop waits for a free connection slot before its items are deferred."""
        self._refused: set[tuple[str, str]] = set()  # logins a server refused this run
        self._refused_lock = threading.Lock()  # hops run in threads

    def _targets(self, hop: NextHop) -> DnsOutcome:
        """Where to connect for ``hop``; dnspython is loaded only when DNS must be asked."""
        nameserver = nameserver_address(self.config)
        if hop.kind == "literal":
            return Targets((Target(hop.host, (hop.host,), 0),))
        if hop.kind == "smarthost" and nameserver is None:
            return system_smarthost_targets(hop.host, hop.port)
        if self._resolver is None:
            from dma.adapters.dns import Resolver

            self._resolver = Resolver(nameserver, timeout=min(30.0, float(self.config.timeout)))
        return self._resolver.targets_for(hop)

    def _load_auth(self) -> AuthTable:
        path = self.config.authpath
        if not path:
            return AuthTable()
        text = read_text(path, "auth file", "fix its permissions or the AUTHPATH setting")
        if text is None:
            self.log.warning("auth file missing; delivering without AUTH", path=path)
            return AuthTable()
        try:
            mode = os.stat(path).st_mode
            if mode & 0o004:
                self.log.warning("auth file is readable by everyone; restrict it (chmod 640)",
                                 path=path)
        except OSError:
            pass
        return parse_auth(text, path)

    def __call__(self, claims: Sequence[Claim], report: Report | None = None
                 ) -> dict[str, Outcome]:
        """Deliver ``claims``; ``report`` hears each outcome as soon as it is final."""
        self.items = items = ItemOutcomes(self.log, report)
        hops: dict[NextHop, list[Work]] = {}
        local: list[tuple[Work, str]] = []
        for claim in claims:
            works = items.works(claim)
            for work in works:
                user = is_local(work.recipient, self.settings) if len(works) > 1 else None
                if user is not None:  # a local name in a comma list
                    local.append((work, user))
                    continue
                try:
                    hop = next_hop(work.recipient, smarthost=self.config.smarthost,
                                   port=self.config.port)
                except DmaError as error:
                    items.record(work.id, failed(str(error), "5.1.3"))
                    continue
                hops.setdefault(hop, []).append(work)
        for work, user in local:
            from dma.shell.local import deliver_local

            self.log.info("trying delivery", id=work.claim.item.id, to=user, via="local")
            items.record(work.id, deliver_local(work.claim, user, self.settings))
        if len(hops) == 1:  # one connection: no thread needed
            ((hop, works),) = hops.items()
            for work_id, outcome in self._deliver_hop_safely(hop, works).items():
                items.record(work_id, outcome)
        elif hops:
            workers = max(1, min(self.config.maxconnections, len(hops)))
            from concurrent.futures import ThreadPoolExecutor  # only for several hops

            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = pool.map(lambda pair: self._deliver_hop_safely(*pair), hops.items())
                for result in results:
                    for work_id, outcome in result.items():
                        items.record(work_id, outcome)
        return items.finish()

    def _settled(self, work_id: str, outcome: Outcome) -> None:
        """A transaction ended: tell the run at once, before anything else can fail."""
        self.items.record(work_id, outcome, now=True)

    # --- one hop -------------------------------------------------------------------

    def _deliver_hop_safely(self, hop: NextHop, works: list[Work]) -> dict[str, Outcome]:
        """``_deliver_hop``, but a bug met on one hop defers that hop's open items alone
        (the others' hops go on, SPEC 5.1); what it settled before stays settled."""
        try:
            return self._deliver_hop(hop, works)
        except Exception as error:
            reason = f"internal error: {describe(error)}"
            self.log.error("internal error while delivering to this hop; its items stay "
                           "queued", id=logged_ids([work.id for work in works]),
                           host=hop.host, error=reason)
            return {work.id: deferred(reason) for work in works}

    def _deliver_hop(self, hop: NextHop, works: list[Work]) -> dict[str, Outcome]:
        """Look the hop's hosts up, then connect where core says until it is done."""
        by_id = {work.id: work for work in works}
        if hop.kind == "smarthost":
            self.log.info("using smarthost", id=logged_ids(list(by_id)), host=hop.host,
                          port=hop.port)
        lookup_result = self._targets(hop)
        if isinstance(lookup_result, DnsPermanent):
            return {i: failed(lookup_result.reason, "5.1.2") for i in by_id}
        if isinstance(lookup_result, DnsTemporary):
            return {i: deferred(lookup_result.reason) for i in by_id}
        messages = self._messages(works)
        if not messages:
            return {}
        item_ids = [i for m in messages for i in m.plan.item_ids]
        slot = self._take_slot(item_ids)
        if isinstance(slot, str):
            return {i: deferred(slot) for i in item_ids}
        with self._refused_lock:
            refused = tuple(self._refused)
        attempts = HopAttempts(
            [HopTarget(target, self._credentials(hop, target))
             for target in lookup_result.targets],
            item_ids,
            refused,
        )
        try:
            while not isinstance(step := attempts.next_step(), HopDone):
                if isinstance(step, SkipHost):
                    self.log.warning("not trying this host: its auth.conf credentials were "
                                     "just refused elsewhere", id=logged_ids(step.item_ids),
                                     host=step.target.name)
                elif isinstance(step, LeaveHost):
                    self.log.warning("authentication failed; not trying the host's "
                                     "other addresses", id=logged_ids(step.item_ids),
                                     host=step.target.name)
                else:
                    offered = [left for m in messages
                               if (left := narrowed(m, step.item_ids)) is not None]
                    credentials = self._credentials(hop, step.target)
                    attempts.session_ended(self.driver.session(
                        hop, step.target, step.address, offered, credentials))
        finally:
            slot.release()
            with self._refused_lock:  # later hops and batches of this run skip them too
                self._refused.update(attempts.refused)
        return dict(step.outcomes)

    def _messages(self, works: list[Work]) -> list[OutgoingMessage]:
        """The hop's transactions, one per message; an item whose M file is gone is left out."""
        by_id = {work.id: work for work in works}
        plans = plan_transactions([
            QueuedRecipient(w.id, w.claim.item.sender, w.recipient, w.claim.item.dsn_notify,
                            w.claim.item.dsn_ret, w.claim.item.dsn_envid)
            for w in works
        ])
        messages = []
        for plan in plans:
            path = by_id[plan.item_ids[0]].claim.message_path
            try:
                if not os.path.exists(path):
                    raise FileNotFoundError(2, "No such file or directory", path)
                paths = tuple(by_id[item_id].claim.message_path for item_id in plan.item_ids)
                messages.append(OutgoingMessage(plan, paths, 0, False))
            except OSError as unreadable:
                self.log.error("cannot read queued message", id=logged_ids(plan.item_ids),
                               path=path, error=unreadable.strerror)
        return messages

    def _take_slot(self, item_ids: list[str]) -> Slot | str:
        """One of the spool's MAXCONNECTIONS slots, held while this hop has a connection.

        Returns the reason to defer when none came free within ``slot_wait``.  When
        the slot directory cannot be used the hop goes on without the cross-process
        limit (the thread pool still bounds this process): a permission problem
        must not stop all mail.
        """
        try:
            slot = self.slots.acquire(self.slot_wait)
        except SlotError as error:
            self.log.warning("connection slots unusable; connecting without the limit "
                             "across processes", error=str(error))
            return Slot(-1, None)
        if slot is None:
            reason = (f"all {self.slots.count} connection slots (MAXCONNECTIONS) stayed "
                      f"busy for {self.slot_wait:g}s; will try again later")
            self.log.warning("no free connection slot; deferred", id=logged_ids(item_ids),
                             wait=self.slot_wait, maxconnections=self.slots.count)
            return reason
        return slot

    def _credentials(self, hop: NextHop, target: Target) -> tuple[str, str] | None:
        """The auth.conf entry for the smarthost, or for the MX host (SPEC 5.6)."""
        names = [hop.host] if hop.kind == "smarthost" else [target.name]
        for name in names:
            entry = lookup(self.auth, name)
            if entry is not None:
                return entry.login, entry.password
        return None
