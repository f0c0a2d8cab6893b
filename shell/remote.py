"""Remote delivery: route claimed items, and work each next hop (SPEC 5.3-5.6).

Claims are grouped by next hop, one transaction per message (all of that message's
recipients for the hop).  At most MAXCONNECTIONS hops are worked on at once, in
threads of this process; each address core names for a hop gets up to MAXCONNECTIONS
connections that share its messages (``shell/lanes.py``, fewer for the rest of the run
once a server turns one away), and every connection holds one of the spool's
MAXCONNECTIONS slots (``adapters/slots.py``), so that all dma processes together stay
within the limit (SPEC 5.1).

Which address to try next and what the connections add up to is decided in core
(``dma.core.hop_attempts``); this module looks the hosts up, takes the slot and
logs, and ``shell/smtp_connection.py`` drives each connection.  Every outcome goes
out through one ``Report`` (the queue run's ledger): a settled one as soon as its
transaction ends, the others when the hop is done.
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
from dma.core.credentials import Credentials
from dma.core.errors import DmaError
from dma.core.hop_attempts import (
    HopAttempts,
    HopDone,
    HopTarget,
    LeaveHost,
    SessionResult,
    SkipHost,
    TryAddress,
)
from dma.core.ledger import Address, AddressId, Report
from dma.core.outcomes import Outcome, deferred, failed
from dma.core.routing import (
    DnsOutcome,
    DnsPermanent,
    DnsTemporary,
    NextHop,
    Target,
    Targets,
    account_hop,
    group_by_next_hop,
)
from dma.core.transport import QueuedRecipient, Security, plan_transactions, security_for
from dma.core.values import field, frozen
from dma.shell.guard import describe
from dma.shell.lanes import LaneRun
from dma.shell.outgoing_message import OutgoingMessage, logged_ids, narrowed
from dma.shell.settings import Settings, load_accounts, read_text
from dma.shell.smtp_connection import SmtpDriver

if TYPE_CHECKING:  # accounts and their secrets load only with an ACCOUNTS file
    from dma.adapters.dns import Resolver as DnsResolver
    from dma.adapters.log import Logger
    from dma.adapters.secrets import Secrets
    from dma.core.accounts import Account


_DNS_RECORDS = ("ANY.MX", "ANY.CNAME", "ANY.SOA", "ANY.NS", "IN.A", "IN.AAAA")
"""The record types an MX lookup meets (answers, authority, additional sections)."""


@frozen
class Parcel:
    """One address to deliver by SMTP, and the claim on its queue item (its M file)."""

    address: Address
    claim: Claim


@frozen
class _AccountUse:
    """What a hop through an account connects with: its TLS policy and login."""

    security: Security
    credentials: Credentials | None = field(repr=False)


def _ignore(_address: AddressId, _outcome: Outcome) -> None:
    """The report before a run gives its own."""


class RemoteDelivery:
    """Deliver addresses of claimed items by SMTP; report the outcome of each."""

    def __init__(self, settings: Settings, log: Logger, *, verbose: bool = False) -> None:
        self.settings = settings
        self.config = settings.config
        self.log = log
        self.verbose = verbose
        self.auth = self._load_auth()
        self.accounts = load_accounts(settings)  # an error ends the run (78), mail untouched
        self.secrets = self._secrets()
        self.report: Report = _ignore
        self.driver = SmtpDriver(settings, log, self._settled, verbose=verbose)
        self._resolver: DnsResolver | None = None
        self.slots = Slots(self.config.spooldir, max(1, self.config.maxconnections))
        self.slot_wait = float(self.config.timeout)
        """Seconds a hop waits for a free connection slot before its items are deferred."""
        self._refused: set[Credentials] = set()  # logins a server refused this run
        self._run_lock = threading.Lock()  # hops run in threads: refused logins, hop limits
        self._limits: dict[NextHop, int] = {}  # hops whose servers turned connections away

    def preload(self) -> None:
        """Import now what delivery imports on demand: a child that has given up root
        may no longer read the installation (a venv or Python under /root).  Only what
        this configuration can use (each costs milliseconds): TLS with SECURETRANSFER;
        threads for several hops and DNS (dnspython, and the record types it loads as
        answers come) without a smarthost, or with NAMESERVER."""
        import importlib

        names = ["encodings.idna"]  # host names given to getaddrinfo
        if self.config.securetransfer:
            names.append("ssl")
        if not self.config.smarthost:
            names.append("concurrent.futures.thread")
        if not self.config.smarthost or nameserver_address(self.config) is not None:
            names += ["dma.adapters.dns", *(f"dns.rdtypes.{kind}" for kind in _DNS_RECORDS)]
        accounts = self.accounts.accounts.values() if self.accounts else ()
        if self.auth.entries or accounts:  # AUTH's modules load when a session logs in
            names += ["dma.core.sasl", "dma.core.smtp_auth"]
        if any(account.tls != "none" for account in accounts):
            names.append("ssl")
        if any(account.oauth2 is not None for account in accounts):
            names += ["dma.adapters.oauth2", "http.client", "json", "urllib.parse"]
        for name in names:
            importlib.import_module(name)

    def _secrets(self) -> Secrets | None:
        """The accounts' credentials, fetched once per run; OAuth2 tokens by our own
        refresh (adapters/oauth2), loaded only when an account uses OAuth2.  None without
        accounts."""
        if self.accounts is None:
            return None
        from dma.adapters.secrets import Secrets

        accounts = self.accounts.accounts.values()
        if not any(account.oauth2 is not None for account in accounts):
            return Secrets(log=self.log)
        from dma.adapters.oauth2 import AccessTokens

        tokens = AccessTokens(cafile=self.config.cafile, log=self.log)
        return Secrets(log=self.log, oauth2_token=tokens.account_token)

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

    def __call__(self, parcels: Sequence[Parcel], report: Report) -> None:
        """Deliver ``parcels``; ``report`` hears each address's outcome once it is final
        for this run (thread-safe: hops are worked on at once)."""
        self.report = report
        hops = self._hops(parcels)
        if len(hops) == 1:  # one connection: no thread needed
            self._deliver_hop_safely(*hops[0])
        elif hops:
            workers = max(1, min(self.config.maxconnections, len(hops)))
            from concurrent.futures import ThreadPoolExecutor  # only for several hops

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(lambda pair: self._deliver_hop_safely(*pair), hops):
                    pass

    def _hops(self, parcels: Sequence[Parcel]) -> list[tuple[NextHop, list[Parcel]]]:
        """The parcels grouped by next hop: an account's smarthost when the sender routes
        to one (SPEC 2.4), else by recipient (an unroutable one fails alone)."""
        by_account: dict[NextHop, list[Parcel]] = {}
        default: list[Parcel] = []
        for parcel in parcels:
            account = self._account_of(parcel.claim.item.sender)
            if account is None:
                default.append(parcel)
            else:
                hop = account_hop(account.host, account.port, account.name)
                by_account.setdefault(hop, []).append(parcel)
        routes = group_by_next_hop(((n, parcel.address.recipient)
                                    for n, parcel in enumerate(default)),
                                   smarthost=self.config.smarthost, port=self.config.port)
        for n, error in routes.unroutable:
            self.report(default[n].address.id, failed(str(error), "5.1.3"))
        return [*((hop, [default[n] for n in keys]) for hop, keys in routes.groups),
                *by_account.items()]

    def _account_of(self, sender: str) -> Account | None:
        """The account the sender's mail goes through, or None for the default route."""
        if self.accounts is None:
            return None
        from dma.core.accounts import route_for

        return route_for(sender, self.accounts.routes, self.accounts.accounts)

    def _settled(self, address: AddressId, outcome: Outcome) -> None:
        """A transaction ended: tell the run at once, before anything else can fail."""
        self.report(address, outcome)

    # --- one hop -------------------------------------------------------------------

    def _deliver_hop_safely(self, hop: NextHop, parcels: list[Parcel]) -> None:
        """``_deliver_hop``, but a bug met on one hop defers that hop's open addresses
        alone (the others' hops go on, SPEC 5.1); what it settled before stays settled."""
        try:
            self._deliver_hop(hop, parcels)
        except Exception as error:
            reason = f"internal error: {describe(error)}"
            ids = [parcel.address.id for parcel in parcels]
            self.log.error("internal error while delivering to this hop; its items stay "
                           "queued", id=logged_ids(ids), host=hop.host, error=reason)
            self._report_all(ids, deferred(reason))  # the ledger keeps what was settled

    def _report_all(self, ids: Sequence[AddressId], outcome: Outcome) -> None:
        for address in ids:
            self.report(address, outcome)

    def _deliver_hop(self, hop: NextHop, parcels: list[Parcel]) -> None:
        """Look the hop's hosts up, then connect where core says until it is done."""
        ids = [parcel.address.id for parcel in parcels]
        try:
            account = self._hop_account(hop)
        except DmaError as error:  # a password command that failed, a revoked token
            self.log.warning("cannot get the account's credentials; deferred",
                             id=logged_ids(ids), account=hop.account, error=str(error))
            self._report_all(ids, deferred(str(error)))
            return
        if hop.kind == "smarthost":
            self.log.info("using smarthost", id=logged_ids(ids), host=hop.host, port=hop.port,
                          account=hop.account)
        lookup_result = self._targets(hop)
        if isinstance(lookup_result, DnsPermanent):
            self._report_all(ids, failed(lookup_result.reason, "5.1.2"))
            return
        if isinstance(lookup_result, DnsTemporary):
            self._report_all(ids, deferred(lookup_result.reason))
            return
        messages = self._messages(parcels)
        if not messages:
            return
        planned = [i for m in messages for i in m.plan.item_ids]
        slot = self._take_slot(planned)
        if isinstance(slot, str):
            self._report_all(planned, deferred(slot))
            return
        with self._run_lock:
            refused = tuple(self._refused)
        attempts = HopAttempts(
            [HopTarget(target, account.credentials if account else
                       self._credentials(hop, target))
             for target in lookup_result.targets],
            planned,
            refused,
            security=account.security if account else security_for(self.config, hop.kind),
        )
        try:
            while not isinstance(step := attempts.next_step(), HopDone):
                if isinstance(step, SkipHost):
                    self.log.warning("not trying this host: its credentials were "
                                     "just refused elsewhere", id=logged_ids(step.item_ids),
                                     host=step.target.name)
                elif isinstance(step, LeaveHost):
                    self.log.warning("authentication failed; not trying the host's "
                                     "other addresses", id=logged_ids(step.item_ids),
                                     host=step.target.name)
                else:
                    still_open = frozenset(step.item_ids)  # once: a hop may carry thousands
                    offered = [left for m in messages
                               if (left := narrowed(m, still_open)) is not None]
                    attempts.session_ended(self._session(hop, step, offered))
        finally:
            slot.release()
            with self._run_lock:  # later hops and batches of this run skip them too
                self._refused.update(attempts.refused)
        for address in attempts.open_ids:  # settled ones were reported as they settled
            self.report(address, step.outcomes[address])

    def _session(self, hop: NextHop, step: TryAddress[AddressId],
                 offered: list[OutgoingMessage]) -> SessionResult[AddressId]:
        """The connections to ``step``'s address: up to the hop's limit at once."""
        with self._run_lock:
            limit = self._limits.get(hop, max(1, self.config.maxconnections))
        lanes = LaneRun(self.driver, hop, step, offered, limit=limit, slots=self.slots)
        try:
            return lanes.run()
        finally:
            if lanes.limit < limit:
                self.log.info("server turned a connection away; fewer connections to it for "
                              "the rest of this run", host=hop.host, connections=lanes.limit)
                with self._run_lock:
                    self._limits[hop] = min(lanes.limit, self._limits.get(hop, limit))

    def _hop_account(self, hop: NextHop) -> _AccountUse | None:
        """The account a hop goes through, with its TLS policy and credentials (raises
        when its secret cannot be had); None for the default route."""
        if hop.account is None or self.accounts is None or self.secrets is None:
            return None
        from dma.core.accounts import account_security

        account = self.accounts.accounts[hop.account]
        credentials = self.secrets.credentials(account)
        if not account.verify and account.tls != "none":
            self.log.warning("the account's server certificate is not verified (verify = "
                             "false)", account=account.name, host=account.host)
        return _AccountUse(account_security(account), credentials)

    def _messages(self, parcels: list[Parcel]) -> list[OutgoingMessage]:
        """The hop's transactions, one per message; an item whose M file is gone is left
        out (the run defers it: no outcome reported), one whose M file we may not read
        (the delivery user, in a spool not shared with its group) is deferred saying so."""
        claims = {parcel.address.id: parcel.claim for parcel in parcels}
        plans = plan_transactions([
            QueuedRecipient(p.address.id, p.claim.item.sender, p.address.recipient,
                            p.claim.item.dsn_notify, p.claim.item.dsn_ret,
                            p.claim.item.dsn_envid)
            for p in parcels
        ])
        messages = []
        for plan in plans:
            path = claims[plan.item_ids[0]].message_path
            try:
                os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK))
                paths = tuple(claims[address].message_path for address in plan.item_ids)
                messages.append(OutgoingMessage(plan, paths, 0, False))
            except OSError as unreadable:
                self.log.error("cannot read queued message", id=logged_ids(plan.item_ids),
                               path=path, error=unreadable.strerror)
                if isinstance(unreadable, PermissionError):
                    self._report_all(plan.item_ids, deferred(
                        f"cannot read queued message {path}: {unreadable.strerror} (remote "
                        f"delivery runs as uid {os.getuid()}: the spool's files must be "
                        "readable by its group)"))
        return messages

    def _take_slot(self, item_ids: list[AddressId]) -> Slot | str:
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

    def _credentials(self, hop: NextHop, target: Target) -> Credentials | None:
        """The auth.conf entry for the smarthost, or for the MX host (SPEC 5.6)."""
        names = [hop.host] if hop.kind == "smarthost" else [target.name]
        for name in names:
            entry = lookup(self.auth, name)
            if entry is not None:
                return Credentials(entry.login, entry.password)
        return None
