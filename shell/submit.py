"""The submission workflow: command line and stdin in, a durably spooled message out.

Reads through adapters, asks the core for every decision, writes through the spool
adapter.  The message is streamed: at most one header field is ever held in memory.

In system mode (SPEC 8.2) a caller that is not root cannot write the spool: when
``SPOOLDIR/maildrop`` exists, its message goes there instead (adapters/maildrop.py),
after the same checks, without our Received line; the runner's pickup
(shell/pickup.py) adds that from the file's owner and commits the message into the
spool with ``spool_message``, the function a direct submission uses.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator

from dma.adapters import system
from dma.adapters.spool import Spool, SpoolWriter
from dma.core.addresses import parse_envelope_address, parse_recipient_argument
from dma.core.cmdline import Invocation, Mode
from dma.core.dates import rfc5322_date
from dma.core.envelope import Recipient, envelope_sender, merge_recipients, resolve_recipients
from dma.core.errors import CantCreateError, NoInputError
from dma.core.headers import HeaderStep, Stamp, make_message_id, received_header
from dma.core.lines import MAX_LINE_OCTETS, normalise_blocks, normalise_lines
from dma.core.queuefile import QueueItem, make_item_id
from dma.core.values import frozen
from dma.shell.settings import Settings, load_aliases, read_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO, Protocol

    from dma.adapters.log import Logger

    class _Output(Protocol):
        """Where ``_copy`` writes: a spool temp file, or the maildrop writer's counter."""

        def write(self, data: bytes, /) -> int: ...
        def writelines(self, lines: tuple[bytes, ...], /) -> None: ...

CHUNK = 64 * 1024


def read_chunks(fd: int) -> Iterator[bytes]:
    """Stdin as a stream of chunks, never the whole message at once.

    A read error is the C dma's "can not read mail": NoInputError (exit 66), so that
    it is not mistaken for a spool that cannot be written.
    """
    while True:
        try:
            chunk = os.read(fd, CHUNK)
        except OSError as error:
            raise _unreadable(error.strerror or str(error)) from None
        if not chunk:
            return
        yield chunk


def _unreadable(reason: str) -> NoInputError:
    return NoInputError(
        f"cannot read the message from standard input: {reason}",
        hint="give dma the message on stdin; nothing was queued",
    )


def _check_auth_file(path: str) -> None:
    """Refuse a broken auth.conf before spooling, so that a caller who retries on the
    error does not queue the message twice (delivery would fail on it anyway)."""
    from dma.core.authconf import parse_auth

    text = read_text(path, "auth file", "fix its permissions or the AUTHPATH setting")
    if text is not None:
        parse_auth(text, path)


def maildrop_for(settings: Settings) -> str | None:
    """``SPOOLDIR/maildrop`` when a submission must go there (SPEC 8.2): the caller is not
    root and the maildrop exists.  Root, and a user with a spool of their own (the
    embedded default), write the spool itself."""
    if system.euid() == 0:
        return None
    from dma.core.system_layout import MAILDROP

    path = os.path.join(settings.config.spooldir, MAILDROP)
    return path if os.path.isdir(path) else None


def submit(
    invocation: Invocation,
    settings: Settings,
    log: Logger,
    chunks: Iterable[bytes] | None = None,
) -> list[str]:
    """Spool one message read from ``chunks`` (default: stdin); return the new item ids.

    In system mode, for a caller that is not root, the message goes into the maildrop
    instead (``maildrop_for``) and the one id returned is the message's, which its
    Message-Id holds; the runner queues it under ids of its own.
    Raises DmaError on bad input; nothing is queued then.
    """
    config = settings.config
    aliases = load_aliases(config.aliases)
    login = system.login_name()
    sender = envelope_sender(
        invocation.sender, system.environment().get("EMAIL"), login, settings.mailname,
        config.masquerade,
    )
    if sender:
        parse_envelope_address(sender)

    def resolve(addresses: tuple[str, ...]) -> tuple[Recipient, ...]:
        return resolve_recipients(
            addresses,
            mailname=settings.mailname,
            aliases=aliases,
            is_user=system.user_exists,
            nullclient=config.nullclient,
        )

    recipients = resolve(_named_recipients(invocation))
    if not invocation.recipients and not invocation.headers_recipients:
        raise NoInputError(
            "no recipients from command line",
            hint="name the recipients as arguments, or use -t to take them from To:, Cc: and Bcc:",
        )

    if chunks is None and sys.stdin is None:
        # Python found fd 0 closed at start-up (`dma a@b <&-`).  Refuse before opening
        # any file: the first one opened would become fd 0 and be read as the message.
        raise _unreadable("it is closed")
    source = read_chunks(0) if chunks is None else chunks
    maildrop = maildrop_for(settings)
    if maildrop is not None:
        draft = _Draft(invocation, settings, login, sender, recipients, resolve)
        return _into_maildrop(maildrop, draft, source, log)
    if config.authpath and not (config.defer or invocation.queue_only):
        _check_auth_file(config.authpath)
    spool = Spool(config.spooldir)
    spool.prepare()
    message_id = spool.new_message_id()
    stamp = _stamp(invocation, settings, message_id, sender, login)
    step = HeaderStep(stamp, collect_recipients=invocation.headers_recipients)

    def items() -> list[QueueItem]:
        every = _with_header_recipients(invocation, step, recipients, resolve)
        return _queue_items(invocation, message_id, sender, every)

    pieces = normalise_blocks(source, ignore_dots=invocation.ignore_dots)
    try:
        made = spool_message(spool, message_id, received_header(stamp), pieces, step, items)
    except OSError as error:  # the file system failed us: a clear message, not a traceback
        raise CantCreateError(
            f"cannot write the message into the spool {config.spooldir}: {error.strerror}",
            hint="check free space, quotas and file size limits; nothing was queued",
        ) from None
    log.info("new mail", id=message_id, user=login, uid=system.uid(), envelope_from=f"<{sender}>")
    for item in made:
        log.info("queued", id=item.id, to=f"<{item.recipient}>")
    return [item.id for item in made]


def spool_message(
    spool: Spool,
    message_id: str,
    received: bytes,
    pieces: Iterable[bytes],
    step: HeaderStep | None,
    items: Callable[[], list[QueueItem]],
) -> list[QueueItem]:
    """Write ``received``, then the message's ``pieces`` (what ``normalise_blocks`` or
    ``normalise_lines`` yields; through the header ``step`` when given) to a new spool
    file, and commit it
    for the ``items()`` (asked once the message is written: -t finds recipients on
    the way).  Lines over 998 octets are re-encoded first (SPEC 3.2).  Submission and
    the maildrop's pickup both queue through here.  OSError when the file system fails.
    """
    with spool.begin() as writer:
        out = writer.file
        out.write(received)
        long_lines = _copy(pieces, step, out)
        made = items()
        if long_lines:
            out.flush()
            with spool.begin() as fixed:
                _reencode(writer.path, fixed)
                spool.commit(fixed, message_id, made)
        else:
            spool.commit(writer, message_id, made)
    return made


@frozen
class _Draft:
    """What submission knows before it reads the message: for the maildrop's branch."""

    invocation: Invocation
    settings: Settings
    login: str
    sender: str
    recipients: tuple[Recipient, ...]
    resolve: Callable[[tuple[str, ...]], tuple[Recipient, ...]]


def _into_maildrop(directory: str, draft: _Draft, source: Iterable[bytes], log: Logger
                   ) -> list[str]:
    """Write the message into the maildrop (headers processed, no Received line) with
    its envelope; return its message id once the file is durably there."""
    from dma.adapters.maildrop import MaildropWriter
    from dma.core.maildrop import MaildropEnvelope

    invocation = draft.invocation
    message_id = Spool(draft.settings.config.spooldir).new_message_id()
    stamp = _stamp(invocation, draft.settings, message_id, draft.sender, draft.login)
    step = HeaderStep(stamp, collect_recipients=invocation.headers_recipients)
    envelope = MaildropEnvelope(
        sender=draft.sender, recipients=(), dsn_notify=invocation.dsn_notify,
        dsn_ret=invocation.dsn_ret, dsn_envid=invocation.dsn_envid,
        queue_only=invocation.queue_only,
    )
    pieces = normalise_blocks(source, ignore_dots=invocation.ignore_dots)
    try:
        with MaildropWriter(directory, envelope) as drop:
            _copy(pieces, step, drop.file)  # long lines: the pickup re-encodes them
            every = _with_header_recipients(invocation, step, draft.recipients, draft.resolve)
            _require_recipients(invocation, every)
            name = drop.finish(tuple(recipient.address for recipient in every))
    except OSError as error:
        raise CantCreateError(
            f"cannot write the message into the maildrop {directory}: {error.strerror}",
            hint="check free space and quotas; nothing was queued",
        ) from None
    log.info("handed to the maildrop", id=message_id, user=draft.login, uid=system.uid(),
             envelope_from=f"<{draft.sender}>", maildrop=name)
    return [message_id]


def _with_header_recipients(
    invocation: Invocation, step: HeaderStep, recipients: tuple[Recipient, ...],
    resolve: Callable[[tuple[str, ...]], tuple[Recipient, ...]],
) -> tuple[Recipient, ...]:
    """With -t, the recipients that the header step found, checked and resolved, merged
    after the command line's."""
    if not invocation.headers_recipients:
        return recipients
    for address in step.recipients:
        parse_envelope_address(address)
    return merge_recipients(recipients, resolve(step.recipients))


def _named_recipients(invocation: Invocation) -> tuple[str, ...]:
    """The command line's recipients: each argument an address list, as in sendmail;
    with -bs each RCPT names one address."""
    if invocation.mode is Mode.SEND:
        return tuple(a for word in invocation.recipients for a in parse_recipient_argument(word))
    for address in invocation.recipients:
        parse_envelope_address(address)
    return invocation.recipients


def _stamp(invocation: Invocation, settings: Settings, message_id: str, sender: str,
           login: str) -> Stamp:
    """What the Received line and the added headers say about this submission."""
    return make_stamp(settings, message_id, sender, login, system.uid(),
                      full_name=invocation.full_name)


def make_stamp(settings: Settings, message_id: str, sender: str, username: str, uid: int,
               *, full_name: str | None = None) -> Stamp:
    """The stamp for a message queued now as ``message_id`` for the user ``username``
    (``uid``): submission's, and the pickup's for a maildrop file's owner."""
    moment = system.now()
    return Stamp(
        queue_id=message_id,
        sender=sender,
        username=username,
        uid=uid,
        mailname=settings.mailname,
        system_hostname=settings.system_hostname,
        date=rfc5322_date(moment),
        message_id=make_message_id(
            int(moment.timestamp()), message_id, system.random_hex(4), settings.mailname
        ),
        full_name=full_name,
    )


def _require_recipients(invocation: Invocation, recipients: tuple[Recipient, ...]) -> None:
    """None at all is the C dma's "no recipients" (66)."""
    if not recipients:
        raise NoInputError(
            "no recipients from headers" if invocation.headers_recipients
            else "no recipients from command line",
            hint="the message has no To:, Cc: or Bcc: addresses dma could use",
        )


def _queue_items(invocation: Invocation, message_id: str, sender: str,
                 recipients: tuple[Recipient, ...]) -> list[QueueItem]:
    """One queue item per recipient; none at all is the C dma's "no recipients" (66)."""
    _require_recipients(invocation, recipients)
    return queue_items(message_id, sender, recipients, dsn_notify=invocation.dsn_notify,
                       dsn_ret=invocation.dsn_ret, dsn_envid=invocation.dsn_envid)


def queue_items(message_id: str, sender: str, recipients: tuple[Recipient, ...], *,
                dsn_notify: str | None, dsn_ret: str | None, dsn_envid: str | None,
                uid: int | None = None) -> list[QueueItem]:
    """One queue item per recipient, ids ``<message id>.<n>``: submission's, and the
    pickup's (which records the maildrop file's owner as ``uid``)."""
    return [
        QueueItem(
            id=make_item_id(message_id, index), sender=sender, recipient=recipient.address,
            dsn_notify=dsn_notify, dsn_ret=dsn_ret, dsn_envid=dsn_envid, uid=uid,
        )
        for index, recipient in enumerate(recipients)
    ]


def _copy(pieces: Iterable[bytes], step: HeaderStep | None, out: _Output) -> bool:
    """Write the message through the header step (if any) to ``out``; True when a line is
    too long.

    ``pieces`` are what ``normalise_blocks`` yields (``normalise_lines``'s lines are a
    special case): a block of whole short lines goes out as it is, and only an item
    with one LF, at its end, or none (a piece) says anything about a long line.
    """
    too_long = MAX_LINE_OCTETS + 1
    long_lines = False
    carried = 0  # octets of a long line before this piece
    write = out.write
    for piece in pieces:
        if step is not None and not step.done:
            fed = step.feed_block(piece)
            out.writelines(fed.lines)
            piece = fed.body
            if not piece:
                continue
        write(piece)
        if piece[-1] != 0x0A:
            carried += len(piece)
        elif piece.find(b"\n") == len(piece) - 1:  # one line, or the end of one
            long_lines = long_lines or carried + len(piece) > too_long
            carried = 0
    if step is not None:
        out.writelines(step.finish())
    return long_lines


def _reencode(source: str, fixed: SpoolWriter) -> None:
    """Write the message in the spool temp file ``source`` to the second one, ``fixed``,
    with its long lines re-encoded (SPEC 3.2).

    Both passes read the first temp file in chunks and bounded pieces of lines, so a
    100 MB line never sits in memory.
    """
    from dma.core.longlines import find_long_parts, reencode

    def pieces(handle: BinaryIO) -> Iterator[bytes]:
        chunks = iter(lambda: handle.read(CHUNK), b"")
        return normalise_lines(chunks, ignore_dots=True)

    with open(source, "rb") as handle:
        long_parts = find_long_parts(pieces(handle))
    with open(source, "rb") as handle:
        fixed.file.writelines(reencode(pieces(handle), long_parts))
