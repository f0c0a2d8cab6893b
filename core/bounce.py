"""Bounces as RFC 3464 delivery status notifications (SPEC 5.7).

The C dma bounces with a plain-text message and a bare ``From: MAILER-DAEMON <>``
that some relays refuse (dma-behaviour.md 5.8, issue #75).  We send a
multipart/report instead: a readable explanation, a message/delivery-status part a
program can act on, and the original's headers (or the whole original with
FULLBOUNCE).  The output is streamed line by line so a large original is never
held in memory, and every line stays within RFC 5322's 998 octets.

Every text that reaches a header or a report field (recipients, server replies,
host names) is first made one line, so nothing a remote server says can add a
header or a report field of its own.
"""

from __future__ import annotations

import re
import textwrap
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

from dma.core.durations import format_duration
from dma.core.errors import SoftwareError
from dma.core.values import frozen

MAX_LINE_OCTETS = 998
"""RFC 5322's limit on a line, without its line end."""

FOLD_OCTETS = 78
"""Header fields are folded at spaces to stay within this when the words allow."""

TEXT_COLUMNS = 76
"""Width of the readable explanation."""

EXPIRED_STATUS = "4.4.7"
"""RFC 3463: delivery time expired."""

SUBJECT = "Undelivered Mail Returned to Sender"

_STATUS = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_DIAGNOSTIC_TYPE = re.compile(r"(smtp|x400|[Xx]-[A-Za-z0-9-]+);\s*", re.IGNORECASE)
_SMTP_REPLY = re.compile(r"[2-5][0-9][0-9](?:[ -]|$)")

# RFC 3463 subject.detail for a basic SMTP reply code when the server sent no
# enhanced code; the class digit comes from whether the failure is permanent.
_SUBJECT_DETAIL = {
    421: "3.2",  # service not available: system not accepting network messages
    450: "2.0",  # mailbox unavailable (busy)
    451: "3.0",  # local error in processing
    452: "3.1",  # insufficient system storage: mail system full
    550: "0.0",  # mailbox unavailable: unknown user and policy alike, so nothing finer
    551: "1.6",  # user not local: destination mailbox has moved
    552: "2.2",  # exceeded storage allocation: mailbox full
    553: "1.3",  # mailbox name not allowed: bad destination mailbox address syntax
    554: "0.0",  # transaction failed
}


class BoundaryClash(SoftwareError):
    """The MIME boundary occurs in the text being wrapped: pick another and build again."""


@frozen
class Failure:
    """Why one recipient of the message could not be delivered."""

    recipient: str  # as queued
    status: str  # RFC 3463 code, e.g. "5.1.1", "4.4.7" for expiry
    diagnostic: str | None  # server reply text as "smtp; 550 5.1.1 unknown", or None
    remote_mta: str | None  # host name of the server that answered, or None
    reason: str  # one human sentence for the readable part


@frozen
class BounceContext:
    """Everything about a bounce that is not the original message or its failures."""

    mailname: str  # for From: MAILER-DAEMON@mailname and Reporting-MTA
    queue_id: str  # the failed message's id
    arrival_date: str  # RFC 5322 date of arrival
    date: str  # RFC 5322 date now
    message_id: str  # complete "<...>" for the bounce
    boundary: str  # random, from the caller; see boundary_is_safe
    original_sender: str  # the bounce's To:
    full: bool  # FULLBOUNCE: include the whole message, else headers only


def status_from_reply(code: int, enhanced: str | None, *, permanent: bool) -> str:
    """The RFC 3463 status for a failure whose last reply was ``code`` (and ``enhanced``).

    A well-formed enhanced code from the server wins; otherwise the basic code is
    mapped as RFC 3463 suggests.  The class always says what we did: 5 when we gave
    up for good, 4 when the failure was temporary, whatever the server's digit
    (a 4xx reply can end in a permanent failure, e.g. on expiry).
    """
    klass = "5" if permanent else "4"
    if enhanced is not None:
        match = _STATUS.fullmatch(enhanced.strip())
        if match is not None:
            return f"{klass}.{int(match.group(2))}.{int(match.group(3))}"
    return f"{klass}.{_SUBJECT_DETAIL.get(code, '0.0')}"


def expiry_failure(recipient: str, last_error: str | None, lifetime: int) -> Failure:
    """The failure of a recipient still queued after ``lifetime`` seconds (status 4.4.7).

    The last temporary error becomes the Diagnostic-Code: an SMTP reply as
    ``smtp;``, anything else (a DNS failure, a refused connection) as ``X-Dma;``.
    """
    return Failure(
        recipient=recipient,
        status=EXPIRED_STATUS,
        diagnostic=_diagnostic_from_error(last_error),
        remote_mta=None,
        reason=(
            f"The message could not be delivered within {format_duration(lifetime)}"
            " and was given up."
        ),
    )


def boundary_is_safe(
    original: Iterable[bytes], failures: Sequence[Failure], context: BounceContext
) -> bool:
    """Whether ``context.boundary`` occurs nowhere in the bounce's parts.

    Reads ``original`` as ``build_bounce`` would (only its headers unless
    ``context.full``), so the caller can check with one pass over the M file, and on
    False draw another boundary.  ``build_bounce`` itself raises BoundaryClash if
    it meets the boundary anyway.
    """
    try:
        for _ in build_bounce(original, failures, context):
            pass
    except BoundaryClash:
        return False
    return True


def build_bounce(
    original: Iterable[bytes], failures: Sequence[Failure], context: BounceContext
) -> Iterator[bytes]:
    """The LF-terminated lines of the RFC 3464 report on ``failures`` of ``original``.

    ``original`` is the spooled message's lines; it is read lazily, and only up to
    the end of its headers unless ``context.full``.  Raises SoftwareError at once
    for a report that cannot be right (no failures, an empty sender: a bounce of a
    bounce, a bad status or boundary), and BoundaryClash, possibly mid-stream, when
    the boundary occurs in the content.
    """
    if not failures:
        raise SoftwareError("a bounce needs at least one failed recipient")
    if not _one_line(context.original_sender):
        raise SoftwareError(
            "cannot bounce a message with an empty sender",
            hint="a bounce that fails is logged and dropped, never bounced",
        )
    mailname = _one_line(context.mailname)
    if not mailname:
        raise SoftwareError("a bounce needs a mail name", hint="set MAILNAME or the host name")
    for failure in failures:
        if _STATUS.fullmatch(failure.status.strip()) is None or failure.status.strip()[0] == "2":
            raise SoftwareError(
                f"bad delivery status {_one_line(failure.status)[:20]!r}"
                f" for {_one_line(failure.recipient)[:80]!r}",
                hint="use status_from_reply or expiry_failure",
            )
    if _BOUNDARY.fullmatch(context.boundary) is None:
        raise SoftwareError(
            f"bad MIME boundary {context.boundary[:80]!r}",
            hint="use 1 to 70 letters, digits or '()+_,-./:=? (RFC 2046)",
        )
    marker = b"--" + context.boundary.encode("ascii")
    text = _explanation(failures, context, mailname)
    report = _report(failures, context, mailname)
    for line in (*text, *report):
        if marker in line:
            raise BoundaryClash("the MIME boundary occurs in the report text")
    return _stream(original, context, mailname, text, report)


def _stream(
    original: Iterable[bytes],
    context: BounceContext,
    mailname: str,
    text: tuple[bytes, ...],
    report: tuple[bytes, ...],
) -> Iterator[bytes]:
    """Yield the whole bounce; the generator behind ``build_bounce``."""
    marker = b"--" + context.boundary.encode("ascii")
    yield from _field("From", f"Mail Delivery System <MAILER-DAEMON@{mailname}>")
    yield from _field("To", f"<{_one_line(context.original_sender)}>")
    yield from _field("Subject", SUBJECT)
    yield from _field("Date", _one_line(context.date))
    yield from _field("Message-Id", _one_line(context.message_id))
    yield b"Auto-Submitted: auto-replied\n"
    yield b"MIME-Version: 1.0\n"
    yield b"Content-Type: multipart/report; report-type=delivery-status;\n"
    yield b'\tboundary="' + context.boundary.encode("ascii") + b'"\n'
    yield b"Content-Transfer-Encoding: 8bit\n"
    yield b"\n"
    yield b"This is a MIME-encapsulated message.\n"
    yield b"\n"

    yield marker + b"\n"
    yield b"Content-Description: Notification\n"
    yield b"Content-Type: text/plain; charset=utf-8\n"
    eight_bit = any(not line.isascii() for line in text)
    yield b"Content-Transfer-Encoding: " + (b"8bit" if eight_bit else b"7bit") + b"\n"
    yield b"\n"
    yield from text
    yield b"\n"

    yield marker + b"\n"
    yield b"Content-Description: Delivery report\n"
    yield b"Content-Type: message/delivery-status\n"
    yield b"\n"
    yield from report
    yield b"\n"

    yield marker + b"\n"
    if context.full:
        yield b"Content-Description: Undelivered message\n"
        yield b"Content-Type: message/rfc822\n"
    else:
        yield b"Content-Description: Undelivered message headers\n"
        yield b"Content-Type: text/rfc822-headers\n"
    # The original may hold 8-bit text; we cannot know before streaming it.
    yield b"Content-Transfer-Encoding: 8bit\n"
    yield b"\n"
    for line in _original(original, full=context.full):
        if marker in line:
            raise BoundaryClash("the MIME boundary occurs in the original message")
        yield line
    # The LF before a delimiter belongs to the delimiter: this one keeps the
    # original's last line end (and ends a header block with its empty line).
    yield b"\n"
    yield marker + b"--\n"


def _explanation(
    failures: Sequence[Failure], context: BounceContext, mailname: str
) -> tuple[bytes, ...]:
    """The readable part: who could not be reached and why, wrapped for people."""
    lines = [
        f"This is the mail delivery system at {mailname}.",
        "",
        "Your message could not be delivered to the recipients below.",
        f"(Queue id {_one_line(context.queue_id)}, arrived {_one_line(context.arrival_date)}.)",
    ]
    for failure in failures:
        lines.append("")
        lines.append(f"<{_one_line(failure.recipient)}>")
        lines.extend(_wrapped(failure.reason))
        diagnostic = _one_line(failure.diagnostic or "")
        if diagnostic:
            kind, said = _split_diagnostic(diagnostic)
            remote = _one_line(failure.remote_mta or "")
            if kind.lower() == "smtp":
                lines.extend(_wrapped(f"{remote or 'The mail server'} said: {said}"))
            else:
                lines.extend(_wrapped(f"Details: {said}"))
        elif failure.remote_mta:
            lines.extend(_wrapped(f"The mail server was {_one_line(failure.remote_mta)}."))
    lines.append("")
    attached = "your message" if context.full else "the headers of your message"
    lines.append(f"A delivery status report and {attached} are attached.")
    return tuple(_cut(line, MAX_LINE_OCTETS) + b"\n" for line in lines)


def _report(
    failures: Sequence[Failure], context: BounceContext, mailname: str
) -> tuple[bytes, ...]:
    """The message/delivery-status fields (RFC 3464 2.2 and 2.3), all US-ASCII."""
    lines: list[bytes] = []
    lines.extend(_field("Reporting-MTA", f"dns; {_ascii(mailname)}"))
    lines.extend(_field("X-Queue-ID", _ascii(_one_line(context.queue_id))))
    lines.extend(_field("Arrival-Date", _ascii(_one_line(context.arrival_date))))
    for failure in failures:
        lines.append(b"\n")
        lines.extend(_field("Final-Recipient", _address_type_and_value(failure.recipient)))
        lines.append(b"Action: failed\n")
        lines.extend(_field("Status", failure.status.strip()))
        remote = _one_line(failure.remote_mta or "")
        if remote:
            lines.extend(_field("Remote-MTA", f"dns; {_ascii(remote)}"))
        diagnostic = _one_line(failure.diagnostic or "")
        if diagnostic:
            kind, said = _split_diagnostic(diagnostic)
            lines.extend(_field("Diagnostic-Code", f"{kind}; {_ascii(said)}"))
    return tuple(lines)


def _original(chunks: Iterable[bytes], *, full: bool) -> Iterator[bytes]:
    """The original's lines as they go into part 3, each within MAX_LINE_OCTETS.

    Stops at the end of the headers unless ``full``.  A CRLF becomes LF and a
    missing last line end is added.  Lines over the limit (never written by our own
    spooler) are split, header lines by folding so the header block stays one.
    """
    in_headers = True
    for line in _lines(chunks):
        body = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if in_headers and not body:
            if not full:
                return
            in_headers = False
        if len(body) <= MAX_LINE_OCTETS:
            yield body + b"\n"
            continue
        yield body[:MAX_LINE_OCTETS] + b"\n"
        rest = body[MAX_LINE_OCTETS:]
        step = MAX_LINE_OCTETS - 1 if in_headers else MAX_LINE_OCTETS
        lead = b" " if in_headers else b""
        for start in range(0, len(rest), step):
            yield lead + rest[start : start + step] + b"\n"


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """LF-terminated lines from ``chunks`` however they are cut, read no further than needed."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        if b"\n" not in chunk:
            continue
        *complete, rest = bytes(pending).split(b"\n")
        for line in complete:
            yield line + b"\n"
        pending = bytearray(rest)
    if pending:
        yield bytes(pending) + b"\n"


def _field(name: str, value: str) -> tuple[bytes, ...]:
    """A header field, folded at spaces near FOLD_OCTETS, no line over MAX_LINE_OCTETS.

    ``value`` is one line already; a single word too long for a line is cut.
    """
    room = MAX_LINE_OCTETS - len(name) - 2
    lines: list[bytes] = []
    current = name.encode("ascii") + b":"
    first = True
    for word in value.split(" ") if value else ():
        piece = _cut(word, room)
        if first or len(current) + 1 + len(piece) <= FOLD_OCTETS:
            current += b" " + piece
        else:
            lines.append(current + b"\n")
            current = b" " + piece
        first = False
    lines.append(current + b"\n")
    return tuple(lines)


def _wrapped(sentence: str) -> list[str]:
    """``sentence`` as indented lines of the readable part."""
    return textwrap.wrap(
        _one_line(sentence),
        width=TEXT_COLUMNS,
        initial_indent="    ",
        subsequent_indent="    ",
        break_on_hyphens=False,
    )


def _one_line(text: str) -> str:
    """``text`` on one line: control characters and line breaks become single spaces.

    Lone surrogates become U+FFFD so the text always encodes as UTF-8.
    """
    chars = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Zl", "Zp"):
            chars.append(" ")
        elif category == "Cs":
            chars.append("\ufffd")
        else:
            chars.append(char)
    return " ".join("".join(chars).split())


def _ascii(text: str) -> str:
    """``text`` with every non-ASCII character written as ``\\x{HEX}`` (RFC 6533's escape)."""
    return "".join(char if char.isascii() else f"\\x{{{ord(char):X}}}" for char in text)


def _address_type_and_value(recipient: str) -> str:
    """A Final-Recipient value: ``rfc822;`` for ASCII, RFC 6533's ``utf-8;`` xtext otherwise."""
    address = _one_line(recipient)
    if address.isascii():
        return f"rfc822; {address}"
    escaped = "".join(
        char if "!" <= char <= "~" and char not in "+=\\" else f"\\x{{{ord(char):X}}}"
        for char in address
    )
    return f"utf-8; {escaped}"


def _split_diagnostic(diagnostic: str) -> tuple[str, str]:
    """``("smtp", "550 ...")`` from ``"smtp; 550 ..."``; untyped text is typed by its look."""
    match = _DIAGNOSTIC_TYPE.match(diagnostic)
    if match is not None:
        return match.group(1), diagnostic[match.end() :]
    return ("smtp" if _SMTP_REPLY.match(diagnostic) else "X-Dma"), diagnostic


def _diagnostic_from_error(error: str | None) -> str | None:
    """A Diagnostic-Code value for a stored last error, or None when there is none."""
    text = _one_line(error or "")
    if not text:
        return None
    kind, said = _split_diagnostic(text)
    return f"{kind}; {said}"


def _cut(text: str, octets: int) -> bytes:
    """``text`` in UTF-8, cut to at most ``octets`` with ``...`` and never mid-character."""
    data = text.encode("utf-8", "replace")
    if len(data) <= octets:
        return data
    head = data[: octets - 3].decode("utf-8", "ignore").encode("utf-8")
    return head + b"..."
