"""Queue management and checks: mailq, deletion, bounces, the quarantine, newaliases, -bv."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from dma.adapters import system
from dma.adapters.spool import Spool
from dma.core.cmdline import DELETE_ALL, Invocation
from dma.core.envelope import Recipient
from dma.core.errors import DmaError, NoInputError
from dma.core.queuefile import message_id_of
from dma.shell.settings import Settings, load_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:

    from dma.adapters.log import Logger
    from dma.adapters.quarantine import Quarantined
    from dma.core.mailq import QuarantinedEntry


def report_quarantined(log: Logger, moved: Quarantined) -> None:
    """The one log line for a damaged item moved to the quarantine (SPEC 4)."""
    log.error("damaged; moved to the quarantine", id=moved.item_id, reason=moved.reason,
              path=moved.path, release=f"dma -Qr {moved.name}")


def _spool(settings: Settings, tag: str) -> Spool:
    """The spool, logging each damaged item a listing moves aside (syslog and stderr)."""
    from dma.adapters.log import light_logger

    def moved_aside(moved: Quarantined) -> None:
        report_quarantined(light_logger(tag, stderr=True), moved)

    return Spool(settings.config.spooldir, on_quarantine=moved_aside)


def list_queue(settings: Settings, *, json_lines: bool, syslog_tag: str = "dma") -> int:
    """Print the queue, in the C dma's text form plus ours, or as JSON lines.

    Damaged items found on the way are moved to the quarantine (when we may) and
    listed from there, with the reason, like every item already quarantined.
    """
    from dma.core.mailq import render_mailq, render_mailq_json

    spool = _spool(settings, syslog_tag)
    held: list[QuarantinedEntry] = []
    trouble: list[str] = []
    if os.path.isdir(settings.config.spooldir):
        scan = spool.scan()
        entries = list(scan.entries)
        trouble += [f"damaged queue item {p.name}: {p.error}" for p in scan.problems]
        try:
            held = spool.quarantine().entries()
        except DmaError as error:  # the queue itself is still worth listing
            trouble.append(str(error))
    else:
        entries = []
    now = system.epoch()
    render = render_mailq_json if json_lines else render_mailq
    sys.stdout.write(render(entries, now, held))
    for line in trouble:  # a damaged Q file must never be silently invisible
        print(f"mailq: {line}", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class _Chosen:
    """What -Qd, -Qb or -Qr name: queued item ids and quarantine names."""

    queued: list[str]
    quarantined: list[str]


def _chosen_items(settings: Settings, invocation: Invocation, *, with_queued: bool = True
                  ) -> _Chosen:
    """The items that -Qd/-Qb/-Qr name: item ids, message ids, quarantine names, or ALL
    (-Qd only); with ``with_queued`` False only quarantined items count."""
    spool = _spool(settings, invocation.syslog_tag)
    there = os.path.isdir(settings.config.spooldir)
    entries = spool.entries() if there and with_queued else []
    held = spool.quarantine().entries() if there else []
    targets = set(invocation.recipients)
    every = DELETE_ALL in targets

    def named(*words: str) -> set[str]:
        return {word for word in words if every or word in targets}

    found: set[str] = set()
    queued = []
    for entry in entries:
        hits = named(entry.item.id, message_id_of(entry.item.id))
        if hits:
            queued.append(entry.item.id)
            found |= hits
    quarantined = []
    for moved in held:
        hits = named(moved.name, moved.item_id, message_id_of(moved.item_id))
        if hits:
            quarantined.append(moved.name)
            found |= hits
    unknown = sorted(targets - found - {DELETE_ALL})
    if unknown:
        what = "queue item" if with_queued else "quarantined item"
        raise NoInputError(
            f"no such {what}: {', '.join(unknown)}", hint="list the queue with mailq"
        )
    return _Chosen(queued, quarantined)


def delete_items(settings: Settings, invocation: Invocation) -> int:
    """-Qd: delete the named items, quarantined ones too; items being delivered right now
    are skipped (exit 75)."""
    from dma.adapters.log import light_logger
    from dma.adapters.quarantine import DamagedItem

    log = light_logger(invocation.syslog_tag, stderr=True)
    chosen = _chosen_items(settings, invocation)
    spool = Spool(settings.config.spooldir)
    quarantine = spool.quarantine()
    busy = 0
    for item_id in chosen.queued:
        try:
            claim = spool.claim(item_id)
        except DamagedItem as damaged:  # found damaged just now: delete it from there
            report_quarantined(log, damaged.moved)
            chosen.quarantined.append(damaged.moved.name)
            continue
        if claim is None:
            busy += 1
            print(f"{item_id}: being delivered right now; not deleted", file=sys.stderr)
            continue
        with claim:
            claim.delete()
        log.info("deleted by request", id=item_id, uid=system.uid())
        print(f"{item_id}: deleted")
    for name in chosen.quarantined:
        item_id = quarantine.delete(name)
        log.info("deleted from the quarantine by request", id=item_id, uid=system.uid())
        print(f"{name}: deleted from the quarantine")
    return 75 if busy else 0


def release_items(settings: Settings, invocation: Invocation) -> int:
    """-Qr: put quarantined items back into the queue once they are whole again.

    Each is checked as a claim checks it (its Q parses and names it, Q and M are
    regular files); one still damaged stays where it is, with a message saying why
    (exit 65).  Released items are then delivered as new mail is: in the background,
    or at the next queue run with DEFER or -bq.
    """
    from dma.adapters.log import light_logger
    from dma.shell.delivery import after_submission

    log = light_logger(invocation.syslog_tag, stderr=True)
    chosen = _chosen_items(settings, invocation, with_queued=False)
    quarantine = Spool(settings.config.spooldir).quarantine()
    released: list[str] = []
    code = 0
    for name in chosen.quarantined:
        try:
            item_id = quarantine.release(name)
        except DmaError as error:
            code = code or error.exit_code
            print(f"{name}: {error}", file=sys.stderr)
            continue
        released.append(item_id)
        log.info("released from the quarantine by request", id=item_id, uid=system.uid())
        print(f"{name}: released as {item_id}")
    if released:
        after_submission(invocation, settings, released)
    return code


def bounce_items(settings: Settings, invocation: Invocation) -> int:
    """-Qb: bounce the named items to their senders now (RFC 3464), as if they had failed.

    Quarantined items are refused (exit 65): what they hold cannot be trusted; release
    them first.
    """
    from dma.adapters.log import configure_structlog, structlog_logger
    from dma.adapters.quarantine import DamagedItem
    from dma.core.outcomes import failed
    from dma.shell.queue_run import QueueRun

    chosen = _chosen_items(settings, invocation)
    configure_structlog(invocation.syslog_tag, stderr=True)
    log = structlog_logger()
    run = QueueRun(settings, log, verbose=invocation.verbose)
    reason = f"returned to the sender by the mail administrator (uid {system.uid()})"
    busy = 0
    damaged = 0
    for name in chosen.quarantined:
        damaged += 1
        print(f"{name}: quarantined as damaged; not bounced (fix it and release it with "
              f"dma -Qr {name}, or delete it with dma -Qd {name})", file=sys.stderr)
    for item_id in chosen.queued:
        try:
            claim = run.spool.claim(item_id)
        except DamagedItem as error:
            damaged += 1
            report_quarantined(log, error.moved)
            print(f"{item_id}: {error}; not bounced", file=sys.stderr)
            continue
        if claim is None:
            busy += 1
            print(f"{item_id}: being delivered right now; not bounced", file=sys.stderr)
            continue
        before = run.summary.bounced
        with claim:
            run.settle_claimed(claim, failed(reason, "5.0.0"))
        if run.summary.bounced > before:
            print(f"{item_id}: bounced")
        else:
            busy += 1
            print(f"{item_id}: the bounce could not be made; it stays queued (see mailq)",
                  file=sys.stderr)
    if run.followups:  # deliver the bounces now, as a queue run would
        run.run(run.followups)
    if damaged:
        return 65
    return 75 if busy else 0


def check_aliases(settings: Settings) -> int:
    """newaliases: check the aliases file as mail would use it; there is no database to build.

    Exits 65 when an alias would fail mail (refused target, loop, unknown user).
    """
    from dma.core.aliases import table_problems
    from dma.core.envelope import local_name

    path = settings.config.aliases
    table = load_aliases(path)
    if not os.path.exists(path):
        print(f"newaliases: {path} does not exist; no aliases defined")
        return 0
    problems = table_problems(
        table, is_user=system.user_exists,
        local_name=lambda address: local_name(address, settings.mailname),
    )
    for problem in problems:
        print(f"newaliases: {problem}", file=sys.stderr)
    print(f"newaliases: {path}: {len(table.entries)} aliases, {len(problems)} problems")
    return 65 if problems else 0


def verify(invocation: Invocation, settings: Settings) -> int:
    """-bv: say how each recipient would be routed; deliver nothing.

    An argument may name several recipients (``a@x,b@y``), as in a submission.
    """
    from dma.core.addresses import parse_recipient_argument
    from dma.core.envelope import resolve_recipients

    config = settings.config
    aliases = load_aliases(config.aliases)
    if not invocation.recipients:
        raise NoInputError("no recipients to verify", hint="name them as arguments")
    for argument in invocation.recipients:
        for address in parse_recipient_argument(argument):
            for recipient in resolve_recipients(
                (address,), mailname=settings.mailname, aliases=aliases,
                is_user=system.user_exists, nullclient=config.nullclient,
            ):
                print(f"{address}: {recipient.address}: {_route(recipient, settings)}")
    return 0


def _route(recipient: Recipient, settings: Settings) -> str:
    """Where -bv says a resolved recipient's mail would go."""
    config = settings.config
    if recipient.local:
        return f"local mailbox {os.path.join(config.maildir, recipient.address)}"
    if config.localonly:
        return "remote, refused (LOCALONLY is set: it would bounce)"
    if config.smarthost:
        return f"remote via smarthost {config.smarthost} port {config.port}"
    domain = recipient.address.rsplit("@", 1)[-1]
    return f"remote via the MX hosts of {domain} port {config.port}"
