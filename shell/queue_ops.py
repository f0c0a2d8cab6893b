"""Queue management and checks: mailq, deletion, bounces, the quarantine, newaliases, -bv.

In system mode (SPEC 8.2) a user who may not read the spool lists their own view of
the queue, which root keeps (shell/pickup.refresh_user_views), and nobody else's; a
user's ``-Qd`` (anyone's but root's: the spool is root's to write) is a deletion
request dropped into the maildrop, which the runner carries out for the user's own
items only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from dma.adapters import system
from dma.adapters.spool import Spool, SpoolProblem
from dma.core.cmdline import DELETE_ALL, Invocation
from dma.core.envelope import Recipient
from dma.core.errors import DataError, DmaError, NoInputError
from dma.core.queuefile import message_id_of
from dma.core.system_layout import MAILDROP
from dma.shell.settings import Settings, load_aliases

TYPE_CHECKING = False
if TYPE_CHECKING:

    from collections.abc import Iterator

    from dma.adapters.log import Logger
    from dma.adapters.quarantine import Quarantined
    from dma.core.mailq import QuarantinedEntry, QueueEntry
    from dma.core.user_views import UserView

DELETION_WAIT_SECONDS = 5.0
"""How long a user's ``-Qd`` waits to see the runner carry out its request."""

_POLL_SECONDS = 0.05


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
    listed from there, with the reason, like every item already quarantined.  A user
    who may not read the spool (system mode) gets their own items only.  Each item's
    lines are written as they are made: the listing is never held whole as text.
    """
    from dma.core.mailq import mailq_json_lines, mailq_pieces

    if _own_view_only(settings):
        return _list_own(settings, json_lines=json_lines)
    spool = _spool(settings, syslog_tag)
    trouble: list[str] = []
    there = os.path.isdir(settings.config.spooldir)

    def entries() -> Iterator[QueueEntry]:
        """The spool's items as they are read, oldest first; problems go to ``trouble``."""
        if not there:
            return
        for found in spool.listing():
            if isinstance(found, SpoolProblem):
                trouble.append(f"damaged queue item {found.name}: {found.error}")
            else:
                yield found

    def held() -> list[QuarantinedEntry]:
        if not there:
            return []
        try:
            return spool.quarantine().entries()
        except DmaError as error:  # the queue itself is still worth listing
            trouble.append(str(error))
            return []

    pieces = mailq_json_lines if json_lines else mailq_pieces
    write = sys.stdout.write
    for piece in pieces(entries(), system.epoch(), held):
        write(piece)
    for line in trouble:  # a damaged Q file must never be silently invisible
        print(f"mailq: {line}", file=sys.stderr)
    return 0


# --- a user's own items (system mode) -------------------------------------------------------


def _system_mode_user(settings: Settings) -> bool:
    """True for a caller other than root where the spool has a maildrop (SPEC 8.2)."""
    return system.euid() != 0 and os.path.isdir(
        os.path.join(settings.config.spooldir, MAILDROP))


def _own_view_only(settings: Settings) -> bool:
    """True for a user in system mode who may not read the spool (not in the delivery
    group): they list their own view of the queue."""
    return _system_mode_user(settings) and not os.access(settings.config.spooldir,
                                                         os.R_OK | os.X_OK)


def _own_view(settings: Settings) -> UserView | None:
    """The caller's view of the queue, as root last wrote it; None when there is none
    (nothing of theirs is queued, or no runner has written it yet)."""
    from dma.adapters.user_views import read_view, view_path
    from dma.core.user_views import parse_view

    uid = system.uid()
    data = read_view(settings.config.spooldir, uid)
    if data is None:
        return None
    path = view_path(settings.config.spooldir, uid)
    view = parse_view(data, path)
    if view.uid != uid:
        raise DataError(f"your queue view {path} is uid {view.uid}'s, not yours ({uid})",
                        hint="the queue runner writes it again at its next pass")
    return view


def _list_own(settings: Settings, *, json_lines: bool) -> int:
    """mailq for a user who may not read the spool: their own items, in the usual
    formats, and one line on stderr saying so."""
    from dma.core.durations import format_duration
    from dma.core.mailq import render_mailq, render_mailq_json

    view = _own_view(settings)
    now = system.epoch()
    render = render_mailq_json if json_lines else render_mailq
    sys.stdout.write(render(view.entries if view is not None else (), now))
    when = "as the queue runner last listed them"
    if view is not None and now - view.written >= 1:
        when = f"as of {format_duration(int(now - view.written))} ago"
    print(f"mailq: only your own queued items are shown ({when}); mail you sent in the "
          "last seconds is listed once the queue runner has taken it from the maildrop",
          file=sys.stderr)
    return 0


def _request_deletion(settings: Settings, invocation: Invocation) -> int:
    """-Qd by a user in system mode: hand the runner a deletion request naming the
    user's own items that the words name (exit 66 for a word that names none), then
    wait a few seconds to see it carried out.  Exit 0 once the request is durable;
    75 when the runner took it but an item is still queued (being delivered)."""
    from dma.adapters.maildrop import drop_request, maildrop_path
    from dma.core.maildrop import MAX_REQUEST_ITEMS, DeleteRequest
    from dma.core.user_views import choose_own

    view = _own_view(settings)
    chosen, unknown = choose_own(view.entries if view is not None else (),
                                 invocation.recipients, DELETE_ALL)
    if unknown:
        raise NoInputError(
            f"no queued item of yours: {', '.join(unknown)}",
            hint="mailq lists your items (mail sent in the last seconds is listed once "
            "the queue runner has taken it from the maildrop)",
        )
    if not chosen:
        print("dma: nothing of yours is queued")
        return 0
    directory = maildrop_path(settings.config.spooldir)
    names = [drop_request(directory, DeleteRequest(tuple(chosen[at:at + MAX_REQUEST_ITEMS])))
             for at in range(0, len(chosen), MAX_REQUEST_ITEMS)]
    print(f"dma: asked the queue runner to delete {len(chosen)} item"
          f"{'' if len(chosen) == 1 else 's'} of yours: {' '.join(chosen)}")
    return _await_deletion(settings, directory, names, chosen)


def _await_deletion(settings: Settings, directory: str, names: list[str],
                    chosen: list[str]) -> int:
    """Watch the request files go and the items leave the caller's view, for at most
    ``DELETION_WAIT_SECONDS``; say what became of them."""
    import time

    from dma.adapters.maildrop import still_there

    deadline = time.monotonic() + DELETION_WAIT_SECONDS
    taken = False
    left = chosen
    while True:
        taken = taken or not any(still_there(directory, name) for name in names)
        if taken:
            view = _own_view(settings)
            listed = {e.item.id for e in view.entries} if view is not None else set()
            left = [item_id for item_id in chosen if item_id in listed]
            if not left:
                break
        if time.monotonic() >= deadline:
            break
        time.sleep(_POLL_SECONDS)
    return _report_deletion(chosen, left if taken else None)


def _report_deletion(chosen: list[str], left: list[str] | None) -> int:
    """Say what became of a user's deletion request (``left`` None: not taken yet)."""
    if left is None:
        print("dma: no queue runner has taken the request yet (none is running?); it "
              "waits in the maildrop, and the next queue run deletes the items",
              file=sys.stderr)
        return 0
    for item_id in chosen:
        if item_id not in left:
            print(f"{item_id}: deleted")
    for item_id in left:
        print(f"{item_id}: still queued (being delivered right now?); not deleted",
              file=sys.stderr)
    return 75 if left else 0


def _refresh_views(settings: Settings, tag: str) -> None:
    """After root changed the queue by hand: the users' views follow (system mode)."""
    from dma.shell.pickup import maildrop_ready, refresh_user_views

    if maildrop_ready(settings):
        from dma.adapters.log import light_logger

        refresh_user_views(settings, light_logger(tag, stderr=True))


# --- what -Qd, -Qb and -Qr name -------------------------------------------------------------


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
    are skipped (exit 75).  In system mode a user's -Qd is a request to the runner, for
    their own items only (``_request_deletion``)."""
    from dma.adapters.log import light_logger

    if _system_mode_user(settings):
        return _request_deletion(settings, invocation)
    log = light_logger(invocation.syslog_tag, stderr=True)
    try:
        return _delete_chosen(settings, invocation, log)
    finally:
        _refresh_views(settings, invocation.syslog_tag)


def _delete_chosen(settings: Settings, invocation: Invocation, log: Logger) -> int:
    """Root's (or the embedded spool owner's) -Qd."""
    from dma.adapters.quarantine import DamagedItem

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
    _refresh_views(settings, invocation.syslog_tag)
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
    by_sender = _sender_route(invocation, settings)
    for argument in invocation.recipients:
        for address in parse_recipient_argument(argument):
            for recipient in resolve_recipients(
                (address,), mailname=settings.mailname, aliases=aliases,
                is_user=system.user_exists, nullclient=config.nullclient,
            ):
                print(f"{address}: {recipient.address}: "
                      f"{_route(recipient, settings, by_sender)}")
    return 0


@dataclass(frozen=True, slots=True)
class _SenderRoute:
    """What -bv says of the envelope sender when ACCOUNTS is set (SPEC 2.4)."""

    via_account: str | None  # the whole route when an account takes the sender's mail
    note: str = ""  # else, added to the default route


def _route(recipient: Recipient, settings: Settings, by_sender: _SenderRoute | None = None
           ) -> str:
    """Where -bv says a resolved recipient's mail would go."""
    config = settings.config
    if recipient.local:
        return f"local mailbox {os.path.join(config.maildir, recipient.address)}"
    if config.localonly:
        return "remote, refused (LOCALONLY is set: it would bounce)"
    if by_sender is not None and by_sender.via_account is not None:
        return by_sender.via_account
    if config.smarthost:
        where = f"remote via smarthost {config.smarthost} port {config.port}"
    else:
        domain = recipient.address.rsplit("@", 1)[-1]
        where = f"remote via the MX hosts of {domain} port {config.port}"
    return where + (by_sender.note if by_sender is not None else "")


def _sender_route(invocation: Invocation, settings: Settings) -> _SenderRoute | None:
    """The route and account the ACCOUNTS file gives the envelope sender (``-f``, else
    $EMAIL, else login@mailname, as a submission computes it), for -bv.

    None without ACCOUNTS, or (said on stderr) when this user may not read the file.
    """
    from dma.core.accounts import describe_account, matching_route
    from dma.core.envelope import envelope_sender
    from dma.shell.settings import load_accounts

    path = settings.config.accounts
    if path and os.path.exists(path) and not os.access(path, os.R_OK):
        print(f"-bv: the accounts file {path} is not readable by uid {system.uid()}: routes"
              " per sender are not shown (run -bv as root to see them)", file=sys.stderr)
        return None
    accounts = load_accounts(settings)
    if accounts is None:
        return None
    sender = envelope_sender(invocation.sender, system.environment().get("EMAIL"),
                             system.login_name(), settings.mailname, settings.config.masquerade)
    route = matching_route(sender, accounts.routes)
    if route is None:
        return _SenderRoute(None, f"; sender <{sender}> takes the default route")
    key, name = route
    return _SenderRoute(f"remote via account {name} ({describe_account(accounts.accounts[name])})"
                        f" for sender <{sender}> by route {key}")
