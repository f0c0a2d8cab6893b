"""Pickup: the runner takes the maildrop's files into the spool (SPEC 8.2).

Root only.  Under the maildrop's lock, each finished file is opened and checked
(adapters/maildrop.py: a regular file with one link, owned by a user, within the
size limit, a head and recipients that parse), its envelope checked again with
submission's own checks (core/maildrop.check_envelope), and its message committed
into the spool as a direct submission commits one (shell/submit.spool_message): our
Received line first, built for the file's owner (uid from the kernel, name from the
password database; nothing the file says about a user counts), one queue item per
recipient, recording the owner as ``X-Uid``.  Only once the spool holds the items
durably is the maildrop file unlinked: a crash in between delivers the message
twice at worst, never loses it (the file is still there, and the next pass queues it
again), which is the order SPEC 3.8 asks of every hand-over.

A file that fails a check goes to ``SPOOLDIR/quarantine/`` with one log line and the
pass goes on.  A failure of our own side (the spool full, the aliases unreadable)
leaves the file where it is for the next pass.

A deletion request (a user's ``dma -Qd``, core/maildrop.py's second record kind) is
carried out in the pass: each named item whose Q file's ``X-Uid`` is the request
file's owner is deleted as root's ``-Qd`` deletes it; any other id is refused with a
log line that reads the same whether the item exists or not; then the request file
is removed.

Users cannot read the spool, so root keeps each one's view of the queue
(``refresh_user_views``: core/user_views.py, adapters/user_views.py): after a pass
that changed the spool, and at the end of every queue run (shell/delivery.py).
"""

from __future__ import annotations

from dma.adapters import system
from dma.adapters.maildrop import DropFile, MaildropDirectory, Refusal, RequestFile
from dma.adapters.spool import Spool
from dma.core.errors import DataError, DmaError
from dma.core.headers import received_header
from dma.core.lines import normalise_lines
from dma.core.maildrop import check_envelope
from dma.shell.settings import Settings, load_aliases
from dma.shell.submit import make_stamp, queue_items, spool_message

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.adapters.log import Logger
    from dma.adapters.system import UserEntry
    from dma.adapters.user_views import UserViews
    from dma.core.aliases import AliasTable


def maildrop_ready(settings: Settings) -> bool:
    """True when this process should pick up: it is root and the spool has a maildrop."""
    return system.euid() == 0 and MaildropDirectory(settings.config.spooldir).exists()


def pick_up(settings: Settings, log: Logger) -> list[str]:
    """Take every acceptable maildrop file into the spool; return the new item ids to
    deliver now (those of ``-bq`` submissions wait for the next queue run).

    Returns [] when there is no maildrop or we are not root.  Raises DmaError when
    the aliases cannot be read (every file stays for the next pass) and OSError when
    the maildrop cannot be listed.  A pass that queued or deleted anything refreshes
    the users' views of the queue.
    """
    if not maildrop_ready(settings):
        return []
    aliases = load_aliases(settings.config.aliases)
    spool = Spool(settings.config.spooldir)
    new: list[str] = []
    changed = False
    with MaildropDirectory(settings.config.spooldir) as maildrop:
        for name in maildrop.names():
            taken = _one_file(maildrop, name, settings, aliases, spool, log)
            if taken is not None:
                changed = True
                new += taken
    if changed:
        refresh_user_views(settings, log)
    return new


def _one_file(maildrop: MaildropDirectory, name: str, settings: Settings,
              aliases: AliasTable, spool: Spool, log: Logger) -> list[str] | None:
    """Judge one name and take it, carry it out, refuse it, or leave it; the ids to
    deliver now, or None when the spool is as it was."""
    try:
        found = maildrop.judge(name, system.epoch())
    except OSError as error:
        log.warning("maildrop file left for the next pass", file=name,
                    reason=error.strerror or str(error))
        return None
    if found is None:
        return None
    if isinstance(found, Refusal):
        _refuse(maildrop, found, log)
        return None
    if isinstance(found, RequestFile):
        _carry_out(maildrop, found, spool, log)
        return []
    with found:
        try:
            ids = _commit(found, settings, aliases, spool, log)
        except DataError as error:
            _refuse(maildrop, Refusal(name, error.message, found.info), log)
            return None
        except (DmaError, OSError) as error:
            log.warning("maildrop file left for the next pass", file=name,
                        uid=found.info.st_uid, reason=_said(error))
            return None
    try:
        maildrop.remove(found)
    except OSError as error:  # queued already: the next pass would queue it twice
        log.error("maildrop file queued but not removed", file=name, reason=_said(error),
                  hint="remove it by hand, or its message is delivered again")
    return [] if found.head.queue_only else ids


def _said(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def _commit(drop: DropFile, settings: Settings, aliases: AliasTable, spool: Spool,
            log: Logger) -> list[str]:
    """Queue one checked maildrop file as its owner's message; the new item ids.

    DataError when its envelope or message is refused (nothing is queued then).
    """
    from dma.core.maildrop import envelope_of

    envelope = envelope_of(drop.head, drop.recipients)
    recipients = check_envelope(
        envelope, mailname=settings.mailname, aliases=aliases, is_user=system.user_exists,
        nullclient=settings.config.nullclient,
    )
    owner = drop.owner
    spool.prepare()
    message_id = spool.new_message_id()
    stamp = make_stamp(settings, message_id, envelope.sender, owner.name, owner.uid)
    items = queue_items(
        message_id, envelope.sender, recipients, dsn_notify=envelope.dsn_notify,
        dsn_ret=envelope.dsn_ret, dsn_envid=envelope.dsn_envid, uid=owner.uid,
    )
    pieces = normalise_lines(drop.message_chunks(), ignore_dots=True)
    spool_message(spool, message_id, received_header(stamp), pieces, None, lambda: items)
    log.info("new mail", id=message_id, user=owner.name, uid=owner.uid,
             envelope_from=f"<{envelope.sender}>", maildrop=drop.name)
    for item in items:
        log.info("queued", id=item.id, to=f"<{item.recipient}>")
    return [item.id for item in items]


def _refuse(maildrop: MaildropDirectory, refusal: Refusal, log: Logger) -> None:
    """Move a refused file to the quarantine, with its one log line."""
    try:
        moved = maildrop.refuse(refusal)
    except OSError as error:
        log.error("maildrop file refused, and it cannot be moved aside", file=refusal.name,
                  uid=refusal.info.st_uid, reason=refusal.reason,
                  error=error.strerror or str(error))
        return
    if moved is None:
        return  # changed since it was judged: the next pass looks again
    log.error("maildrop file refused; moved to the quarantine", file=refusal.name,
              uid=refusal.info.st_uid, reason=refusal.reason, path=moved.path,
              delete=f"dma -Qd {moved.name}")



# --- deletion requests -------------------------------------------------------------------


def _carry_out(maildrop: MaildropDirectory, found: RequestFile, spool: Spool,
               log: Logger) -> None:
    """Delete the request's items that are its owner's, refuse the rest, remove the file."""
    for item_id in found.request.item_ids:
        _delete_own(spool, item_id, found.owner, found.name, log)
    try:
        maildrop.remove(found)
    except OSError as error:  # carried out: a second time deletes nothing more
        log.error("deletion request carried out but not removed", file=found.name,
                  reason=_said(error), hint="remove it by hand")


def _delete_own(spool: Spool, item_id: str, owner: UserEntry, request: str,
                log: Logger) -> None:
    """Delete ``item_id`` if it is queued and ``owner``'s (its X-Uid), as ``-Qd`` does.

    A refusal logs the same line whether the item is someone else's, gone, never was,
    or being delivered right now: a request must not be a way to learn what is queued.
    """
    from dma.adapters.quarantine import DamagedItem

    try:
        claim = spool.claim(item_id)
    except DamagedItem as damaged:
        from dma.shell.queue_ops import report_quarantined

        report_quarantined(log, damaged.moved)
        claim = None
    except DmaError as error:
        log.warning("deletion request: item left", id=item_id, uid=owner.uid,
                    reason=str(error))
        return
    if claim is not None:
        with claim:
            if claim.item.uid == owner.uid:
                claim.delete()
                log.info("deleted by request", id=item_id, uid=owner.uid, user=owner.name,
                         request=request)
                return
    log.warning("deletion by request refused: no queued item of this user by that id, "
                "or it is being delivered", id=item_id, uid=owner.uid, user=owner.name,
                request=request)


# --- the users' views of the queue -------------------------------------------------------


def refresh_user_views(settings: Settings, log: Logger) -> None:
    """Write every user's view of the queue again from one listing of the spool (root,
    system mode): one file per uid with queued items, removed for a uid with none.
    ``SPOOLDIR/users`` is made for the first view, not before.  A failure is logged,
    never raised: the views are a convenience, the queue is not."""
    from dma.adapters.user_views import UserViews, users_path

    spool_directory = settings.config.spooldir
    try:
        views = UserViews(spool_directory)
        if not views.present() and not _listing(spool_directory, log):
            return  # nothing to show anyone, and nothing shown before
        with views:
            _refresh(views, spool_directory, log)
    except (OSError, DmaError) as error:
        log.error("users' queue views not refreshed", reason=_said(error),
                  path=users_path(spool_directory))


def _listing(spool_directory: str, log: Logger) -> dict[int, bytes]:
    """Every uid's view of the queue as it is now: {uid: its view file's octets}."""
    from dma.core.user_views import user_views
    from dma.shell.queue_ops import report_quarantined

    written = system.epoch()  # before the listing: the view is as of then, or later
    spool = Spool(spool_directory, on_quarantine=lambda moved: report_quarantined(log, moved))
    return user_views(spool.scan(probe_locks=False).entries, written)


def _refresh(views: UserViews, spool_directory: str, log: Logger) -> None:
    from dma.core.user_views import views_to_remove

    new = _listing(spool_directory, log)
    for uid, data in new.items():
        try:
            views.write(uid, data)
        except OSError as error:
            log.error("queue view not written", uid=uid, reason=_said(error))
    for name in views_to_remove(views.names(), new):
        try:
            views.remove(name)
        except OSError as error:
            log.error("queue view not removed", uid=name, reason=_said(error))
