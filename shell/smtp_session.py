"""``sendmail -bs``: SMTP on stdin and stdout, each transaction submitted as one message.

Symfony Mailer and SwiftMailer start ``sendmail -bs`` and speak SMTP to it.  The
protocol lives in ``core.smtp_server``; this module only moves bytes and answers the
machine's questions:

- RCPT: the recipient is checked as submission checks it (address syntax, aliases,
  local users), so a bad one is refused at once with 550/553 instead of failing the
  whole message at the end of the data.
- DATA: the message is streamed into the normal submission path
  (``shell.submit.submit``) while it arrives; a submission error becomes a 4xx/5xx
  reply and the session goes on.
- SMTP smuggling: only ``<CRLF>.<CRLF>`` ends the data (``core.smtp_server``); a lone
  dot next to a bare LF stays in the message as text and is logged as a warning, and
  when the input ends inside a message that held one, the log says why it never ended.
- After each queued message we start its delivery at once (``after_submission``),
  not when the session ends: a mailer worker may keep one session open for hours,
  and its first message must not wait for the last.

Replies are written when the input runs dry, so a pipelined batch of commands gets
its replies in one write, in order.  Nothing but SMTP replies ever goes to stdout;
logs go to syslog (and stderr with -v).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, BinaryIO

from dma.adapters import system
from dma.core import sysexits
from dma.core.addresses import parse_envelope_address
from dma.core.aliases import AliasTable
from dma.core.cmdline import Invocation
from dma.core.envelope import resolve_recipients
from dma.core.errors import DmaError, IOFailure, NoInputError, SoftwareError, TempFailure
from dma.core.smtp_server import (
    Closed,
    Event,
    Hello,
    MailFrom,
    MessageData,
    MessageEnd,
    MessageStart,
    NeedData,
    RcptTo,
    Reset,
    SmtpServer,
    Transmit,
    message_refusal,
    recipient_refusal,
)
from dma.core.values import replace
from dma.shell.settings import Settings, load_aliases

if TYPE_CHECKING:
    from dma.adapters.log import Logger

READ_OCTETS = 64 * 1024
BARE_LF_DOTS = (
    "a lone dot next to a bare LF is message text: only <CR><LF>.<CR><LF> ends the data "
    "(an SMTP smuggling attempt, or a client that ends lines in LF only)"
)


class _Channel:
    """stdin and stdout around the machine: replies wait until the input runs dry."""

    def __init__(self, server: SmtpServer, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self._server = server
        self._stdin = stdin
        self._stdout = stdout
        self._pending: list[bytes] = []

    def next_event(self) -> Event:
        """The machine's next event that needs the session's attention."""
        while True:
            event = self._server.next_event()
            if isinstance(event, Transmit):
                self._pending.append(event.data)
            elif isinstance(event, NeedData):
                self.flush()
                self._server.receive_data(self._read())
            else:
                return event

    def _read(self) -> bytes:
        """What stdin has now (at most READ_OCTETS), waiting only when it has nothing."""
        read1 = getattr(self._stdin, "read1", None)
        try:
            data = read1(READ_OCTETS) if read1 is not None else self._stdin.read(READ_OCTETS)
        except OSError:
            return b""  # a broken stdin is the end of the client's input
        return bytes(data or b"")

    def flush(self) -> None:
        """Write the waiting replies; IOFailure when the client no longer reads them."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self._stdout.write(data)
            self._stdout.flush()
        except OSError as error:
            raise IOFailure(
                f"cannot write SMTP replies to stdout: {error.strerror or error}",
                hint="the SMTP client went away",
            ) from error


class _MessageChunks:
    """The message as submission reads it: MessageData until MessageEnd, pulled on demand.

    When the input ends inside the message, it raises TempFailure, so the submission
    stops and nothing half-received is queued.
    """

    def __init__(self, channel: _Channel) -> None:
        self._channel = channel
        self.done = False  # MessageEnd or Closed was seen
        self.closed = False  # ... and it was Closed
        self.bare_lf_dots = 0  # from that MessageEnd or Closed

    def __iter__(self) -> _MessageChunks:
        return self

    def __next__(self) -> bytes:
        if self.done:
            raise StopIteration
        event = self._channel.next_event()
        if isinstance(event, MessageData):
            return event.data
        self.done = True
        if isinstance(event, MessageEnd):
            self.bare_lf_dots = event.bare_lf_dots
            raise StopIteration
        if isinstance(event, Closed):
            self.closed = True
            self.bare_lf_dots = event.bare_lf_dots
            raise TempFailure(
                "the SMTP input ended in the middle of a message",
                hint="nothing was queued; send the message again",
            )
        raise SoftwareError(f"SMTP server sent {event!r} inside a message")

    def drain(self) -> None:
        """Read and drop the rest of the message, after the submission gave up on it."""
        try:
            for _ in self:
                pass
        except TempFailure:
            pass


class _Session:
    """One -bs session: answers the machine's questions and submits its messages."""

    def __init__(
        self, invocation: Invocation, settings: Settings, log: Logger, channel: _Channel,
        server: SmtpServer,
    ) -> None:
        self._invocation = invocation
        self._settings = settings
        self._log = log
        self._channel = channel
        self._server = server
        self._aliases: AliasTable | None = None
        self.queued = 0

    def run(self) -> int:
        """Serve until QUIT or the end of input; the exit status."""
        while True:
            event = self._channel.next_event()
            if isinstance(event, Hello):
                self._log.info("smtp client", helo=event.name)
            elif isinstance(event, RcptTo):
                self._check_recipient(event.address)
            elif isinstance(event, MessageStart):
                self._take_message(event)
            elif isinstance(event, Closed):
                self._channel.flush()
                self._log.info(
                    "smtp session ended", messages=self.queued, quit=event.by_quit,
                )
                if event.mid_transaction:
                    return sysexits.EX_TEMPFAIL
                return sysexits.EX_OK
            elif not isinstance(event, MailFrom | Reset):
                raise SoftwareError(f"SMTP server sent {event!r} outside a message")

    def _alias_table(self) -> AliasTable:
        """The aliases, read once per session (at the first RCPT)."""
        if self._aliases is None:
            self._aliases = load_aliases(self._settings.config.aliases)
        return self._aliases

    def _check_recipient(self, address: str) -> None:
        """Accept or refuse ``address`` as submission would (syntax, aliases, users)."""
        try:
            parse_envelope_address(address)
            resolve_recipients(
                (address,),
                mailname=self._settings.mailname,
                aliases=self._alias_table(),
                is_user=system.user_exists,
                nullclient=self._settings.config.nullclient,
            )
        except DmaError as error:
            self._log.warning("smtp recipient refused", to=f"<{address}>", reason=str(error))
            self._server.refuse_recipient(*recipient_refusal(error))
            return
        self._server.accept_recipient()

    def _take_message(self, start: MessageStart) -> None:
        """Stream the message into the submission path, then answer the end of data."""
        from dma.shell.submit import submit

        invocation = replace(
            self._invocation,
            sender=start.sender,
            recipients=start.recipients,
            headers_recipients=False,
            ignore_dots=True,
            body_type=start.parameters.body or self._invocation.body_type,
        )
        chunks = _MessageChunks(self._channel)
        try:
            ids = submit(invocation, self._settings, self._log, chunks)
        except DmaError as error:
            chunks.drain()
            if chunks.closed:
                if chunks.bare_lf_dots:
                    self._log.warning(
                        "smtp message lost", reason=str(error), bare_lf_dots=chunks.bare_lf_dots,
                        hint=BARE_LF_DOTS,
                    )
                else:
                    self._log.warning("smtp message lost", reason=str(error))
                return
            self._warn_bare_lf_dots(chunks)
            self._log.warning("smtp message refused", reason=str(error))
            self._server.refuse_message(*message_refusal(error))
            return
        if not chunks.done:
            raise SoftwareError("submission stopped reading before the end of the message")
        self.queued += 1
        message_id = ids[0].rsplit(".", 1)[0] if ids else "?"
        self._warn_bare_lf_dots(chunks, message_id)
        self._start_delivery(invocation, ids, message_id)
        self._server.accept_message(message_id)

    def _warn_bare_lf_dots(self, chunks: _MessageChunks, message_id: str | None = None) -> None:
        """Log the lone dots next to a bare LF that a message held as text, if any."""
        if chunks.bare_lf_dots:
            fields = {"id": message_id} if message_id else {}
            self._log.warning(
                "smtp message held a lone dot next to a bare LF",
                **fields, bare_lf_dots=chunks.bare_lf_dots, hint=BARE_LF_DOTS,
            )

    def _start_delivery(self, invocation: Invocation, ids: list[str], message_id: str) -> None:
        """Detach a deliverer for this message (unless DEFER or -bq); it is queued either way."""
        from dma.shell.delivery import after_submission

        self._channel.flush()
        try:
            after_submission(invocation, self._settings, ids)
        except (DmaError, OSError) as error:
            self._log.warning(
                "delivery not started; the next queue run sends it",
                id=message_id,
                reason=str(error),
            )


def run_session(
    invocation: Invocation,
    settings: Settings,
    *,
    stdin: BinaryIO | None = None,
    stdout: BinaryIO | None = None,
    log: Logger | None = None,
) -> int:
    """Speak SMTP on ``stdin``/``stdout`` (default: the process's) until QUIT or end of input.

    Returns 0, or EX_TEMPFAIL when the input ended inside a mail transaction.  Raises
    IOFailure when stdout cannot be written.
    """
    if stdin is None and sys.stdin is None:  # fd 0 was closed (the guard left it so)
        raise NoInputError("cannot read SMTP commands from standard input: it is closed",
                           hint="sendmail -bs speaks SMTP on stdin and stdout")
    if log is None:
        from dma.adapters.log import light_logger

        log = light_logger(invocation.syslog_tag, stderr=invocation.verbose)
    server = SmtpServer(settings.mailname)
    channel = _Channel(
        server,
        stdin if stdin is not None else sys.stdin.buffer,
        stdout if stdout is not None else sys.stdout.buffer,
    )
    return _Session(invocation, settings, log, channel, server).run()
