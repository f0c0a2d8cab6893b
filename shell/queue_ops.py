"""Queue management and checks: mailq, deletion, newaliases, -bv."""

from __future__ import annotations

import os
import sys

from dma.adapters import system
from dma.adapters.spool import Spool
from dma.core.cmdline import Invocation
from dma.core.envelope import Recipient
from dma.core.errors import NoInputError
from dma.shell.settings import Settings


def list_queue(settings: Settings, *, json_lines: bool) -> int:
    """Print the queue, in the C dma's text form plus ours, or as JSON lines."""
    from dma.core.mailq import render_mailq, render_mailq_json

    spool = Spool(settings.config.spooldir)
    if os.path.isdir(settings.config.spooldir):
        scan = spool.scan()
        entries, problems = list(scan.entries), list(scan.problems)
    else:
        entries, problems = [], []
    now = system.epoch()
    render = render_mailq_json if json_lines else render_mailq
    sys.stdout.write(render(entries, now))
    for problem in problems:  # a damaged Q file must never be silently invisible
        print(f"mailq: damaged queue item {problem.name}: {problem.error} "
              "(move it out of the spool to look at it)", file=sys.stderr)
    return 0


def _chosen_items(settings: Settings, invocation: Invocation) -> list[str]:
    """The item ids that -Qd/-Qb name: item ids, message ids, or ALL (-Qd only)."""
    spool = Spool(settings.config.spooldir)
    entries = spool.entries() if os.path.isdir(settings.config.spooldir) else []
    targets = set(invocation.recipients)
    every = "ALL" in targets
    chosen = [
        entry.item.id for entry in entries
        if every or entry.item.id in targets or entry.item.id.rsplit(".", 1)[0] in targets
    ]
    unknown = sorted(
        t for t in targets - {"ALL"}
        if not any(i == t or i.rsplit(".", 1)[0] == t for i in chosen)
    )
    if unknown:
        raise NoInputError(
            f"no such queue item: {', '.join(unknown)}", hint="list the queue with mailq"
        )
    return chosen


def delete_items(settings: Settings, invocation: Invocation) -> int:
    """-Qd: delete the named items; items being delivered right now are skipped (exit 75)."""
    from dma.adapters.log import light_logger

    log = light_logger(invocation.syslog_tag, stderr=True)
    spool = Spool(settings.config.spooldir)
    busy = 0
    for item_id in _chosen_items(settings, invocation):
        claim = spool.claim(item_id)
        if claim is None:
            busy += 1
            print(f"{item_id}: being delivered right now; not deleted", file=sys.stderr)
            continue
        with claim:
            claim.delete()
        log.info("deleted by request", id=item_id, uid=os.getuid())
        print(f"{item_id}: deleted")
    return 75 if busy else 0


def bounce_items(settings: Settings, invocation: Invocation) -> int:
    """-Qb: bounce the named items to their senders now (RFC 3464), as if they had failed."""
    from dma.adapters.log import configure_structlog, structlog_logger
    from dma.shell.delivery import remote_delivery
    from dma.shell.outcomes import failed
    from dma.shell.queue_run import QueueRun

    chosen = _chosen_items(settings, invocation)
    configure_structlog(invocation.syslog_tag, stderr=True)
    log = structlog_logger()
    run = QueueRun(settings, log, remote=remote_delivery(settings, log, invocation))
    reason = f"returned to the sender by the mail administrator (uid {os.getuid()})"
    busy = 0
    for item_id in chosen:
        claim = run.spool.claim(item_id)
        if claim is None:
            busy += 1
            print(f"{item_id}: being delivered right now; not bounced", file=sys.stderr)
            continue
        before = run.summary.bounced
        with claim:
            run.finish(claim, failed(reason, "5.0.0"))
        if run.summary.bounced > before:
            print(f"{item_id}: bounced")
        else:
            busy += 1
            print(f"{item_id}: the bounce could not be made; it stays queued (see mailq)",
                  file=sys.stderr)
    if run.followups:  # deliver the bounces now, as a queue run would
        run.run(run.followups)
    return 75 if busy else 0


def check_aliases(settings: Settings) -> int:
    """newaliases: check the aliases file as mail would use it; there is no database to build.

    Exits 65 when an alias would fail mail (refused target, loop, unknown user).
    """
    from dma.adapters import system
    from dma.core.aliases import table_problems
    from dma.core.envelope import local_name
    from dma.shell.submit import load_aliases

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
    from dma.shell.submit import load_aliases

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
