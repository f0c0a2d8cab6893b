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
"""

from __future__ import annotations

from dma.adapters import system
from dma.adapters.maildrop import DropFile, MaildropDirectory, Refusal
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
    from dma.core.aliases import AliasTable


def maildrop_ready(settings: Settings) -> bool:
    """True when this process should pick up: it is root and the spool has a maildrop."""
    return system.euid() == 0 and MaildropDirectory(settings.config.spooldir).exists()


def pick_up(settings: Settings, log: Logger) -> list[str]:
    """Take every acceptable maildrop file into the spool; return the new item ids to
    deliver now (those of ``-bq`` submissions wait for the next queue run).

    Returns [] when there is no maildrop or we are not root.  Raises DmaError when
    the aliases cannot be read (every file stays for the next pass) and OSError when
    the maildrop cannot be listed.
    """
    if not maildrop_ready(settings):
        return []
    aliases = load_aliases(settings.config.aliases)
    spool = Spool(settings.config.spooldir)
    new: list[str] = []
    with MaildropDirectory(settings.config.spooldir) as maildrop:
        for name in maildrop.names():
            new += _one_file(maildrop, name, settings, aliases, spool, log)
    return new


def _one_file(maildrop: MaildropDirectory, name: str, settings: Settings,
              aliases: AliasTable, spool: Spool, log: Logger) -> list[str]:
    """Judge one name and take it, refuse it, or leave it; the ids to deliver now."""
    try:
        found = maildrop.judge(name, system.epoch())
    except OSError as error:
        log.warning("maildrop file left for the next pass", file=name,
                    reason=error.strerror or str(error))
        return []
    if found is None:
        return []
    if isinstance(found, Refusal):
        _refuse(maildrop, found, log)
        return []
    with found:
        try:
            ids = _commit(found, settings, aliases, spool, log)
        except DataError as error:
            _refuse(maildrop, Refusal(name, error.message, found.info), log)
            return []
        except (DmaError, OSError) as error:
            log.warning("maildrop file left for the next pass", file=name,
                        uid=found.info.st_uid, reason=_said(error))
            return []
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

