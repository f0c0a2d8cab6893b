"""Remote delivery: drive the sans-I/O SMTP client over real connections (SPEC 5.3-5.6).

Claims are grouped by next hop; each hop gets one connection at a time carrying one
transaction per message (all of that message's recipients for the hop).  At most
MAXCONNECTIONS hops are worked on at once, in threads of this process, and every
connection holds one of the spool's MAXCONNECTIONS slots (``adapters/slots.py``),
so that all dma processes together stay within the limit (SPEC 5.1).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dma.adapters import net
from dma.adapters.hosts import system_smarthost_targets
from dma.adapters.slots import Slot, SlotError, Slots
from dma.adapters.spool import Claim
from dma.core.authconf import AuthTable, lookup, parse_auth
from dma.core.config import nameserver_address
from dma.core.errors import DmaError, IOFailure
from dma.core.routing import (
    DnsOutcome,
    DnsPermanent,
    DnsTemporary,
    NextHop,
    Target,
    Targets,
    join_recipient_parts,
    next_hop,
    recipient_parts,
)
from dma.core.smtp import (
    Closed,
    Envelope,
    MessageDone,
    Ready,
    ReadyForData,
    RecipientResult,
    SessionFailed,
    SessionPolicy,
    SmtpClient,
    Stage,
    StartTls,
    Transmit,
)
from dma.core.smtp import (
    Outcome as SmtpOutcome,
)
from dma.core.transport import (
    QueuedRecipient,
    Security,
    Transaction,
    plan_transactions,
    security_for,
)
from dma.shell.outcomes import Outcome, deferred, delivered, failed
from dma.shell.queue_run import Report, is_local
from dma.shell.settings import Settings, read_text

if TYPE_CHECKING:
    from dma.adapters.dns import Resolver as DnsResolver

CONNECT_TIMEOUT = 30.0
FINAL_DOT_FACTOR = 2.0  # RFC 5321 4.5.3.2: 10 minutes for the final dot, 5 for the rest


PART = "/"
"""Joins an item id and a part number: the work id of one address of a comma list."""


@dataclass(frozen=True, slots=True)
class _Work:
    """One address to deliver: a queue item, or one part of an item's comma list."""

    id: str  # the item id, or "<item id>/<n>" for part n of its Recipient list
    recipient: str
    claim: Claim


@dataclass
class _ListItem:
    """A queue item whose Recipient is a comma list: the outcome of each part so far."""

    claim: Claim
    parts: tuple[str, ...]
    outcomes: dict[int, Outcome] = dataclasses.field(default_factory=dict)
    final: Outcome | None = None


def _list_outcome(listed: _ListItem) -> Outcome:
    """The item's outcome once every part has one (see RemoteDelivery._record)."""
    results = [(part, listed.outcomes[n]) for n, part in enumerate(listed.parts)]
    if all(outcome.kind == "delivered" for _, outcome in results):
        return delivered("; ".join(f"{part}: {outcome.detail}" for part, outcome in results))
    failures = [(part, outcome) for part, outcome in results if outcome.kind == "failed"]
    waiting = [part for part, outcome in results if outcome.kind == "deferred"]
    if failures:
        first = failures[0][1]
        detail = "; ".join(f"{part}: {outcome.detail}" for part, outcome in failures)
        if waiting:
            detail += f" (not delivered either: {', '.join(waiting)})"
        return failed(detail, first.status, first.diagnostic, first.remote_mta)
    reasons: dict[str, list[str]] = {}
    for part, outcome in results:
        if outcome.kind == "deferred":
            reasons.setdefault(outcome.detail, []).append(part)
    if len(reasons) == 1 and len(waiting) == len(results):
        return deferred(next(iter(reasons)))  # one reason for the whole list
    return deferred("; ".join(f"{', '.join(parts)}: {reason}"
                              for reason, parts in reasons.items()))


@dataclass(frozen=True, slots=True)
class _SessionResult:
    """What one connection did.

    ``settled``: delivered or failed (already reported); ``retry``: temporary
    outcomes (the next address or host may still take those recipients);
    ``failure``: the host's own failure, if any; ``auth``: set when that failure
    was authentication (SessionFailed.auth); ``tls_failed``: why the STARTTLS
    handshake failed, when OPPORTUNISTIC_TLS may go on without TLS.
    """

    settled: dict[str, Outcome]
    retry: dict[str, Outcome]
    failure: str | None
    auth: Literal["refused", "unusable"] | None = None
    tls_failed: str | None = None  # OPPORTUNISTIC_TLS: the STARTTLS handshake failed


@dataclass
class _Message:
    """A transaction with what the driver needs to send it."""

    plan: Transaction
    paths: tuple[str, ...]  # each item's M file (links of one message), as plan.item_ids
    size: int
    eight_bit: bool
    body: bytes | None = None  # a small message read once, for the 8-bit check and DATA

    @property
    def path(self) -> str:
        """The M file to read: one of an item still being sent (a delivered one's is gone)."""
        return self.paths[0]


def _without(message: _Message, settled: dict[str, Outcome]) -> _Message | None:
    """The message narrowed to its items not settled yet; None when all are."""
    plan = message.plan
    keep = [i for i, item_id in enumerate(plan.item_ids) if item_id not in settled]
    if not keep:
        return None
    if len(keep) == len(plan.item_ids):
        return message
    items = tuple(plan.item_ids[i] for i in keep)
    item_recipients = tuple(plan.item_recipients[i] for i in keep)
    recipients = tuple(r for r in plan.recipients if r in item_recipients)
    narrowed = dataclasses.replace(
        plan, item_ids=items, recipients=recipients, item_recipients=item_recipients
    )
    paths = tuple(message.paths[i] for i in keep)
    return _Message(narrowed, paths, message.size, message.eight_bit)


def _too_many_recipients(message: _Message, done: MessageDone) -> _Message | None:
    """The message narrowed to the recipients refused with "452 too many recipients".

    None unless the server also took at least one recipient in this transaction:
    each further transaction then makes progress, so this ends.
    """
    limited = {
        result.recipient for result in done.results
        if result.stage is Stage.RCPT and result.reply is not None
        and result.reply.code == 452 and result.reply.enhanced in (None, "4.5.3")
    }
    if not limited or not done.delivered:
        return None
    plan = message.plan
    keep = {item_id for item_id, recipient in zip(plan.item_ids, plan.item_recipients,
                                                  strict=True) if recipient not in limited}
    return _without(message, dict.fromkeys(keep, deferred("")))


MAX_LOGGED_IDS = 20


def _message_ids(messages: Sequence[_Message]) -> str:
    """The ``id`` field for a connection: every item of every transaction it carries."""
    return _ids([item_id for message in messages for item_id in message.plan.item_ids])


def _verification(security: Security) -> str:
    """How the server's certificate will be checked: verified, pinned, unverified, or none."""
    if not security.implicit_tls and security.starttls == "no":
        return "none"
    if security.fingerprint is not None:
        return "pinned"
    return "verified" if security.verify else "unverified"


def _verified(info: net.TlsInfo) -> str:
    """How the certificate of a TLS session was checked."""
    if info.pinned:
        return "pinned"
    return "verified" if info.verified else "unverified"


def _ids(item_ids: Sequence[str]) -> str:
    """Item ids for the ``id`` field of a log line: comma separated, a long list cut short.

    Work ids of comma-list parts (``<item id>/<n>``) are shown as their item's id.
    """
    unique = list(dict.fromkeys(item_id.partition(PART)[0] for item_id in item_ids))
    if len(unique) <= MAX_LOGGED_IDS:
        return ",".join(unique)
    return ",".join(unique[:MAX_LOGGED_IDS]) + f",+{len(unique) - MAX_LOGGED_IDS} more"


SMALL_MESSAGE = 1 << 16
"""Messages up to this size are read once into memory while they are in flight."""


def _load(message: _Message) -> _Message:
    """Size on the wire, 8-bit check and, for a small message, its content: one open.

    SIZE= counts the octets as sent (RFC 1870): the spool holds LF line ends, the wire
    CRLF, so each line adds one octet to the file's size.
    """
    with open(message.path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size <= SMALL_MESSAGE:
            body = handle.read()
            return dataclasses.replace(message, size=size + body.count(b"\n"),
                                       eight_bit=not body.isascii(), body=body)
        eight_bit = False
        lines = 0
        while chunk := handle.read(1 << 16):
            lines += chunk.count(b"\n")
            eight_bit = eight_bit or not chunk.isascii()
    return dataclasses.replace(message, size=size + lines, eight_bit=eight_bit)


class RemoteDelivery:
    """Deliver claimed remote items; return an outcome per item id."""

    def __init__(self, settings: Settings, log: Any, *, verbose: bool = False) -> None:
        self.settings = settings
        self.config = settings.config
        self.log = log
        self.verbose = verbose
        self.auth = self._load_auth()
        self.report: Report | None = None
        self._lists: dict[str, _ListItem] = {}
        self._lists_lock = threading.Lock()
        self._resolver: DnsResolver | None = None
        self.slots = Slots(self.config.spooldir, max(1, self.config.maxconnections))
        self.slot_wait = float(self.config.timeout)
        """Seconds a hop waits for a free connection slot before its items are deferred."""

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
        self.report = report
        self._lists = {}
        outcomes: dict[str, Outcome] = {}
        hops: dict[NextHop, list[_Work]] = {}
        local: list[tuple[_Work, str]] = []
        for claim in claims:
            parts = recipient_parts(claim.item.recipient)
            if len(parts) == 1:
                works = [_Work(claim.item.id, claim.item.recipient, claim)]
            else:
                self._lists[claim.item.id] = _ListItem(claim, parts)
                works = [_Work(f"{claim.item.id}{PART}{n}", part, claim)
                         for n, part in enumerate(parts)]
            for work in works:
                user = is_local(work.recipient, self.settings) if len(works) > 1 else None
                if user is not None:  # a local name in a comma list
                    local.append((work, user))
                    continue
                try:
                    hop = next_hop(work.recipient, smarthost=self.config.smarthost,
                                   port=self.config.port)
                except DmaError as error:
                    self._record(outcomes, work.id, failed(str(error), "5.1.3"))
                    continue
                hops.setdefault(hop, []).append(work)
        for work, user in local:
            from dma.shell.local import deliver_local

            self.log.info("trying delivery", id=work.claim.item.id, to=user, via="local")
            self._record(outcomes, work.id, deliver_local(work.claim, user, self.settings))
        if len(hops) == 1:  # one connection: no thread needed
            ((hop, works),) = hops.items()
            for work_id, outcome in self._deliver_hop(hop, works).items():
                self._record(outcomes, work_id, outcome)
        elif hops:
            workers = max(1, min(self.config.maxconnections, len(hops)))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(lambda pair: self._deliver_hop(*pair), hops.items()):
                    for work_id, outcome in result.items():
                        self._record(outcomes, work_id, outcome)
        for item_id, listed in self._lists.items():
            for n in range(len(listed.parts)):  # parts nobody answered for (none known)
                self._record(outcomes, f"{item_id}{PART}{n}", deferred("no outcome reported"))
            if listed.final is not None:  # also when it was reported during the run
                outcomes[item_id] = listed.final
        return outcomes

    # --- comma lists (one Q file, several addresses) --------------------------------

    def _record(self, outcomes: dict[str, Outcome] | None, work_id: str,
                outcome: Outcome) -> None:
        """Note ``outcome`` for an item, or for one part of a comma list.

        ``outcomes`` None means "final now, tell the run at once" (a transaction
        ended).  A list item's outcome is decided when each part has one: it is
        delivered when every part is, bounces when a part failed for good (naming
        the parts not delivered), else it is deferred.  Each delivered part is
        taken out of the Q file's Recipient at once, so no part is ever sent twice.
        """
        item_id, part, index = work_id.partition(PART)
        if not part:
            if outcomes is None:
                if self.report is not None:
                    self.report(item_id, outcome)
            else:
                outcomes[item_id] = outcome
            return
        with self._lists_lock:
            listed = self._lists[item_id]
            if int(index) in listed.outcomes or listed.final is not None:
                return
            listed.outcomes[int(index)] = outcome
            if outcome.kind == "delivered":
                self._drop_delivered(listed)
            if len(listed.outcomes) < len(listed.parts):
                return
            listed.final = final = _list_outcome(listed)
            if outcomes is not None:
                outcomes[item_id] = final
            if self.report is not None:
                self.report(item_id, final)

    def _drop_delivered(self, listed: _ListItem) -> None:
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

    # --- one hop -------------------------------------------------------------------

    def _deliver_hop(self, hop: NextHop, works: list[_Work]) -> dict[str, Outcome]:
        by_id = {work.id: work for work in works}
        if hop.kind == "smarthost":
            self.log.info("using smarthost", id=_ids(list(by_id)), host=hop.host, port=hop.port)
        lookup_result = self._targets(hop)
        if isinstance(lookup_result, DnsPermanent):
            return {i: failed(lookup_result.reason, "5.1.2") for i in by_id}
        if isinstance(lookup_result, DnsTemporary):
            return {i: deferred(lookup_result.reason) for i in by_id}
        plans = plan_transactions([
            QueuedRecipient(w.id, w.claim.item.sender, w.recipient, w.claim.item.dsn_notify,
                            w.claim.item.dsn_ret, w.claim.item.dsn_envid)
            for w in works
        ])
        pending = []
        for plan in plans:
            path = by_id[plan.item_ids[0]].claim.message_path
            try:
                if not os.path.exists(path):
                    raise FileNotFoundError(2, "No such file or directory", path)
                paths = tuple(by_id[item_id].claim.message_path for item_id in plan.item_ids)
                pending.append(_Message(plan, paths, 0, False))
            except OSError as unreadable:
                for item_id in plan.item_ids:
                    by_id.pop(item_id, None)
                self.log.error("cannot read queued message", id=_ids(plan.item_ids), path=path,
                               error=unreadable.strerror)
        final: dict[str, Outcome] = {}
        temporary: dict[str, Outcome] = {}
        last_error = "no host for this destination could be reached"
        if not pending:
            return final
        slot = self._take_slot([i for m in pending for i in m.plan.item_ids])
        if isinstance(slot, str):
            return {i: deferred(slot) for m in pending for i in m.plan.item_ids}
        try:
            refused: list[tuple[str, str]] = []  # credentials a server turned down
            for target in lookup_result.targets:
                credentials = self._credentials(hop, target)
                if credentials is not None and credentials in refused:
                    self.log.warning("not trying this host: its auth.conf credentials were "
                                     "just refused elsewhere", id=_message_ids(pending),
                                     host=target.name)
                    continue
                for address in target.addresses:
                    if not pending:
                        return final
                    result = self._session(hop, target, address, pending)
                    final.update(result.settled)
                    temporary.update(result.retry)
                    pending = [left for m in pending if (left := _without(m, final)) is not None]
                    if result.failure:
                        last_error = result.failure
                    if result.auth is not None:
                        # the host's other addresses take the same credentials (and offer
                        # the same mechanisms): trying them could lock the account
                        if result.auth == "refused" and credentials is not None:
                            refused.append(credentials)
                        if pending:
                            self.log.warning("authentication failed; not trying the host's "
                                             "other addresses", id=_message_ids(pending),
                                             host=target.name)
                        break
        finally:
            slot.release()
        for message in pending:
            for item_id in message.plan.item_ids:
                final[item_id] = temporary.get(item_id, deferred(last_error))
        return final

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
            self.log.warning("no free connection slot; deferred", id=_ids(item_ids),
                             wait=self.slot_wait, maxconnections=self.slots.count)
            return reason
        return slot

    # --- one connection ------------------------------------------------------------

    def _tls_policy(self, hop: NextHop, target: Target, verify: bool) -> net.TlsPolicy:
        return net.TlsPolicy(
            verify=verify,
            server_name=hop.host if hop.kind == "smarthost" else target.name,
            cafile=self.config.cafile,
            certfile=self.config.certfile,
            fingerprint=self.config.fingerprint,
        )

    def _credentials(self, hop: NextHop, target: Target) -> tuple[str, str] | None:
        names = [hop.host] if hop.kind == "smarthost" else [target.name]
        for name in names:
            entry = lookup(self.auth, name)
            if entry is not None:
                return entry.login, entry.password
        return None

    def _session(
        self, hop: NextHop, target: Target, address: str, messages: list[_Message]
    ) -> _SessionResult:
        """Deliver what one connection to ``address`` can (see _SessionResult).

        With OPPORTUNISTIC_TLS a failed STARTTLS handshake (not a refused
        certificate) ends that connection; the next one, to the same address,
        stays in plain text, as Postfix's "may" level does.  Once per address.
        """
        security = security_for(self.config, hop.kind)
        result = self._attempt(hop, target, address, messages, security)
        if result.tls_failed is None:
            return result
        self.log.warning("TLS handshake failed; reconnecting to go on without TLS "
                         "(OPPORTUNISTIC_TLS)", id=_message_ids(messages),
                         host=f"{target.name} [{address}]:{hop.port}",
                         error=result.tls_failed)
        plain = dataclasses.replace(security, starttls="no")
        return self._attempt(hop, target, address, messages, plain, fallback=True)

    def _attempt(
        self, hop: NextHop, target: Target, address: str, messages: list[_Message],
        security: Security, *, fallback: bool = False,
    ) -> _SessionResult:
        """One connection: connect, talk, close."""
        tls = self._tls_policy(hop, target, security.verify)
        host = f"{target.name} [{address}]:{hop.port}"
        timeout = float(self.config.timeout)
        ids = _message_ids(messages)
        if fallback:
            mode = "no (TLS handshake failed)"
        else:
            mode = "implicit" if security.implicit_tls else security.starttls
        self.log.info("trying remote delivery", id=ids, host=target.name, address=address,
                      port=hop.port, preference=target.preference, tls=mode,
                      verification=_verification(security))
        try:
            connection = net.connect(
                address, hop.port, host_name=target.name,
                connect_timeout=min(CONNECT_TIMEOUT, timeout), io_timeout=timeout,
                implicit_tls=tls if security.implicit_tls else None,
            )
        except DmaError as refused:
            self.log.warning("connection failed", id=ids, host=host, error=str(refused))
            return _SessionResult({}, {}, str(refused))
        credentials = self._credentials(hop, target)
        client = SmtpClient(SessionPolicy(
            helo_name=self.settings.mailname,
            starttls=security.starttls,
            tls_active=security.implicit_tls,
            credentials=credentials,
            insecure=self.config.insecure,
        ))
        outcomes: dict[str, Outcome] = {}
        retry: dict[str, Outcome] = {}
        queue = list(messages)
        inflight: list[_Message] = []  # sent, MessageDone not yet seen; [0] is current
        failure: str | None = None
        auth_failure: Literal["refused", "unusable"] | None = None
        try:
            while True:
                event = client.next_event()
                if event is None:
                    wait = timeout * FINAL_DOT_FACTOR if inflight else timeout
                    data = connection.receive(timeout=wait)
                    self._trace("<<<", data)
                    client.receive_data(data)
                elif isinstance(event, Transmit):
                    self._trace(">>>", "\r\n".join(event.commands).encode())
                    connection.send(event.data)
                elif isinstance(event, StartTls):
                    try:
                        info = connection.start_tls(tls)
                    except net.TlsHandshakeFailed as broken:
                        if security.starttls != "opportunistic":
                            raise
                        # nothing was in flight: STARTTLS comes before any message
                        return _SessionResult({}, {}, str(broken), tls_failed=str(broken))
                    self.log.info("TLS started", id=ids, host=host, version=info.version,
                                  cipher=info.cipher, verification=_verified(info))
                    connection.send(client.tls_established())
                elif isinstance(event, Ready):
                    for notice in event.notices:
                        self.log.info(notice, id=ids, host=host)
                    if connection.tls is not None and security.implicit_tls:
                        self.log.info("TLS on connect", id=ids, host=host,
                                      version=connection.tls.version,
                                      cipher=connection.tls.cipher,
                                      verification=_verified(connection.tls))
                    self._next(client, connection, queue, inflight)
                elif isinstance(event, ReadyForData) and inflight:
                    body = inflight[0].body
                    if body is not None:
                        for chunk in client.send_data_lines((body,)):
                            connection.send(chunk)
                    else:
                        with open(inflight[0].path, "rb") as handle:
                            chunks = iter(lambda: handle.read(1 << 16), b"")
                            for chunk in client.send_data_lines(chunks):
                                connection.send(chunk)
                    self._trace(">>>", b"(message data)\r\n.")
                    if queue and client.can_pipeline_next:
                        # the next message rides behind the dot: one round trip a message
                        self._send(client, connection, queue.pop(0), inflight)
                elif isinstance(event, RecipientResult):
                    if self.verbose:
                        self.log.info("recipient", id=ids, to=event.recipient,
                                      result=event.reason)
                elif isinstance(event, MessageDone) and inflight:
                    settled = {}
                    done = inflight.pop(0)
                    for item_id, outcome in self._outcomes(done, event, host).items():
                        if outcome.kind == "deferred":
                            retry[item_id] = outcome
                        else:
                            settled[item_id] = outcome
                    outcomes.update(settled)  # recorded before anything else can fail
                    for item_id, outcome in settled.items():
                        self._record(None, item_id, outcome)
                    rest = _too_many_recipients(done, event)
                    if rest is not None:
                        # RFC 5321 4.5.3.1.10: the rest go in another transaction, now
                        self.log.info("server takes fewer recipients per message; sending "
                                      "the others in another transaction",
                                      id=_ids(rest.plan.item_ids), host=host)
                        queue.insert(0, rest)
                    if not inflight:
                        self._next(client, connection, queue, inflight)
                elif isinstance(event, SessionFailed):
                    failure = f"{host}: {event.reason}"
                    auth_failure = event.auth
                    self.log.warning("session failed", id=ids, host=host,
                                     stage=event.stage.value,
                                     reason=event.reason)
                    data = client.quit()
                    self._trace(">>>", data)
                    connection.send(data)
                elif isinstance(event, Closed):
                    break
        except DmaError as error:
            # keep the server's own words (e.g. a 554 greeting) over the hang-up after it
            if failure is None:
                text = str(error)
                failure = text if text.startswith(target.name) else f"{host}: {text}"
                self.log.warning("connection lost", id=ids, host=host, error=text)
        finally:
            connection.close()
        return _SessionResult(outcomes, retry, failure, auth_failure)

    def _next(self, client: SmtpClient, connection: net.Connection,
              queue: list[_Message], inflight: list[_Message]) -> None:
        """Start the next message, or end the session when there is none (or it failed)."""
        if not queue or not client.can_send_message:
            data = client.quit()
            self._trace(">>>", data)
            connection.send(data)
            return
        self._send(client, connection, queue.pop(0), inflight)

    def _send(self, client: SmtpClient, connection: net.Connection, message: _Message,
              inflight: list[_Message]) -> None:
        try:
            message = _load(message)
        except OSError as error:  # we hold its claim: this is the disk failing
            raise IOFailure(f"cannot read queued message {message.path}: {error.strerror}",
                            hint="check the spool file system") from None
        envelope = Envelope(
            sender=message.plan.sender, recipients=message.plan.recipients,
            size=message.size, eight_bit=message.eight_bit,
            dsn_notify=message.plan.dsn_notify, dsn_ret=message.plan.dsn_ret,
            dsn_envid=message.plan.dsn_envid,
        )
        inflight.append(message)
        data = client.send_message(envelope)
        if data:
            self._trace(">>>", data)
            connection.send(data)

    def _outcomes(self, message: _Message, done: MessageDone, host: str) -> dict[str, Outcome]:
        by_recipient: dict[str, Outcome] = {}
        for result in done.results:
            reply = str(result.reply) if result.reply is not None else result.reason
            if result.outcome is SmtpOutcome.DELIVERED:
                outcome = delivered(f"{host} said: {reply}")
            elif result.outcome is SmtpOutcome.PERMANENT:
                from dma.core.bounce import status_from_reply

                status = status_from_reply(
                    result.reply.code if result.reply else 554,
                    result.reply.enhanced if result.reply else None, permanent=True)
                outcome = failed(f"{host} did not like our {result.stage.value}: {reply}",
                                 status, f"smtp; {reply}", host.split(" ")[0])
            else:
                outcome = deferred(f"{host} failed after {result.stage.value}: {reply}")
            by_recipient[result.recipient] = outcome
        plan = message.plan
        return {
            item_id: by_recipient.get(recipient, deferred("no reply for this recipient"))
            for item_id, recipient in zip(plan.item_ids, plan.item_recipients, strict=True)
        }

    def _trace(self, direction: str, data: bytes) -> None:
        if not self.verbose:
            return
        for line in data.decode("utf-8", "replace").splitlines():
            if line.upper().startswith("AUTH ") and direction == ">>>":
                line = " ".join(line.split(" ")[:2]) + " ***"
            print(f"{direction} {line}", file=sys.stderr, flush=True)
