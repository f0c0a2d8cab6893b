"""The header step of submission: fix up the headers, read -t recipients (SPEC 3.3-3.5).

``HeaderStep`` is a pure stepper: the shell feeds it the pieces that
``core.lines.normalise_lines`` yields, one at a time, and writes what each step
returns.  It holds one header field at most (``FIELD_LIMIT``), never the block, so a
header block of any length streams: ``Bcc:`` fields are dropped as they pass, -t
addresses are collected field by field, over-long lines are folded, and at the end
of the block the missing ``Date:``, ``Message-Id:`` and ``From:`` are added just
before the separator, as the C dma does.  The block lasts until the first empty
line (or the end of the input); a line in it that is no field is kept as it is.
When the first line is no header at all (plain text such as cron output), there is
no block: our headers and a blank line go before that line.  Where the C dma
differs (nothing added to a block without a blank line, a real RFC 5322
address-list parser for -t), SPEC 3 wins.
"""

from __future__ import annotations

from dma.core.errors import DataError, SoftwareError
from dma.core.lines import MAX_LINE_OCTETS
from dma.core.values import field_names, frozen
from dma.core.version import PRODUCT, VERSION

FIELD_LIMIT = 1 << 20
"""Bound on one header field (a line and its continuations), in octets: the most
the header step holds in memory.  A bigger field is refused (exit 65)."""

_FIELD_NAME_OCTETS = bytes(range(0x21, 0x7F))  # printable ASCII (the colon ends the name)
_BLANKS = b" \t"
_ATOM = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"  # compiled only when a full name is written
_ENCODED_WORD_OCTETS = 45  # 60 base64 characters: the word stays within RFC 2047's 75
_RECIPIENT_FIELDS = frozenset({"to", "cc", "bcc"})
_ADDED_FIELDS = frozenset({"date", "message-id", "from"})  # added when missing


@frozen
class Stamp:
    """Everything the header step needs from outside the message, as values."""

    queue_id: str
    sender: str  # envelope sender, "" for the null sender
    username: str
    uid: int
    mailname: str
    system_hostname: str
    date: str  # rfc5322_date(now)
    message_id: str  # the complete "<...>" value, from make_message_id
    full_name: str | None = None


@frozen
class Step:
    """What one ``HeaderStep.feed`` gives back: lines to spool, and maybe body."""

    lines: tuple[bytes, ...]  # header lines to spool now, LF-terminated
    body: bytes = b""  # the piece fed, when it turned out to start the body


def make_message_id(timestamp: int, queue_id: str, random_hex: str, mailname: str) -> str:
    """Return ``<hex time.queue id.random hex@mailname>``, the C dma's Message-Id form.

    The queue id makes it unique on this host, the random part across hosts that
    share a mail name; all parts come from the caller, so this stays pure.
    """
    if timestamp < 0:
        raise SoftwareError(f"negative timestamp {timestamp} for a Message-Id")
    if not random_hex or any(c not in "0123456789abcdefABCDEF" for c in random_hex):
        raise SoftwareError(f"random part {random_hex!r} of a Message-Id is not hex")
    for label, part in (("queue id", queue_id), ("mail name", mailname)):
        if not part or any(c in "<>@ \t\r\n\0" or not c.isprintable() for c in part):
            raise SoftwareError(f"{label} {part!r} cannot go into a Message-Id")
    return f"<{timestamp:x}.{queue_id}.{random_hex.lower()}@{mailname}>"


def _check_stamp(stamp: Stamp) -> None:
    """Refuse a stamp value that would break out of its header line (header injection)."""
    for name in field_names(stamp):
        value = getattr(stamp, name)
        if isinstance(value, str) and any(c in value for c in "\r\n\0"):
            raise DataError(
                f"{name.replace('_', ' ')} {value!r} contains a line break or NUL",
                hint="remove it: such a value could forge headers",
            )


def _encode(text: str, what: str) -> bytes:
    """UTF-8 bytes of ``text``, undecodable bytes from argv or the environment kept as they were."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise DataError(f"{what} {text!r} is not valid text", hint="use UTF-8") from None


def received_header(stamp: Stamp) -> bytes:
    """Return the Received header dma puts first in every message, LF line ends.

    The C dma's form, with our product in the comment; the null sender shows as ``<>``.
    """
    _check_stamp(stamp)
    text = (
        f"Received: from {stamp.username} (uid {stamp.uid})\n"
        f"\t(envelope-from {stamp.sender or '<>'})\n"
        f"\tid {stamp.queue_id}\n"
        f"\tby {stamp.mailname} ({PRODUCT} {VERSION} on {stamp.system_hostname});\n"
        f"\t{stamp.date}\n"
    )
    return _encode(text, "Received header")


def _field_name(line: bytes) -> bytes | None:
    """The name of the field ``line`` starts, None when it starts none: RFC 5322's
    printable ASCII but the colon, then the colon (the obsolete syntax allows blanks
    before it)."""
    colon = line.find(b":")
    name = line[:colon].rstrip(b" \t") if colon > 0 else b""
    return name if name and not name.translate(None, _FIELD_NAME_OCTETS) else None


def _is_header_line(line: bytes) -> bool:
    """True when ``line`` starts a header field (``name:``)."""
    return _field_name(line) is not None


def _is_continuation(line: bytes) -> bool:
    """True when ``line`` continues the field above it (starts with a blank)."""
    return line[:1] in (b" ", b"\t")


def _is_malformed(line: bytes) -> bool:
    """True for a line inside the block that is neither a field, a continuation nor
    the empty separator: readers take it for the first line of the body."""
    return line != b"\n" and not _is_continuation(line) and not _is_header_line(line)


def _is_from_line(line: bytes) -> bool:
    """True for an mbox ``From `` (or quoted ``>From ``) separator line."""
    head = line[:6].lower()
    return head.startswith(b"from ") or head == b">from "


def _fold(line: bytes, name: str) -> list[bytes]:
    """Split ``line`` (no LF) into pieces of at most 998 octets at blanks (RFC 5322 folding).

    Each later piece starts with the blank run it was split before, so unfolding
    (removing the line ends) gives ``line`` back.  A piece never is blanks only.
    ``name`` is "" for a line in the header block that is no field.
    """
    pieces: list[bytes] = []
    while len(line) > MAX_LINE_OCTETS:
        last_text = len(line.rstrip(_BLANKS)) - 1  # a piece after a fold needs text
        cut = 0
        for index in range(min(MAX_LINE_OCTETS, last_text - 1), 0, -1):
            if line[index] in _BLANKS and line[index - 1] not in _BLANKS:
                cut = index
                break
        if not cut:
            from dma.core.longlines import fold_header_line, is_unstructured

            continued = bool(pieces) or line[:1] in _BLANKS
            if not name:  # a line that is no field: cut it, there is no value to encode
                pieces.extend(fold_header_line(line, None, continuation=continued))
                return pieces
            if not is_unstructured(name.lower()):
                raise DataError(
                    f"the {name} header has a line of {len(line)} octets with no blank to "
                    "fold at",
                    hint=f"structured header lines may hold at most {MAX_LINE_OCTETS} octets",
                )
            # free text (Subject and the like): RFC 2047 encoded words keep the meaning
            pieces.extend(fold_header_line(line, name, continuation=continued))
            return pieces
        pieces.append(line[:cut])
        line = line[cut:]
    pieces.append(line)
    return pieces


def _phrase(name: str) -> bytes:
    """Render a display name as an RFC 5322 phrase: atoms, a quoted string, or encoded words."""
    if all(" " <= c <= "~" for c in name):
        words = name.split(" ")
        import re

        if all(re.fullmatch(_ATOM, w) and "=?" not in w for w in words):
            return name.encode("ascii")
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{quoted}"'.encode("ascii")
    import base64  # rare: kept off the start-up path of every submission (issue 2)

    encoded: list[bytes] = []
    run = b""
    for char in name:
        octets = char.encode("utf-8", "replace")
        if len(run) + len(octets) > _ENCODED_WORD_OCTETS:
            encoded.append(run)
            run = b""
        run += octets
    encoded.append(run)
    return b" ".join(b"=?utf-8?b?" + base64.b64encode(part) + b"?=" for part in encoded)


def _from_line(stamp: Stamp) -> bytes:
    """The ``From:`` line added when the message has none: the sender, with the -F name."""
    address = stamp.sender or f"MAILER-DAEMON@{stamp.mailname}"
    mailbox = b"<" + _encode(address, "sender") + b">"
    name = (stamp.full_name or "").strip()
    if name:
        return b"From: " + _phrase(name) + b" " + mailbox + b"\n"
    return b"From: " + mailbox + b"\n"


def _field_recipients(name: str, unfolded: bytes) -> tuple[str, ...]:
    """Parse the address list of one To:, Cc: or Bcc: field, given unfolded."""
    from dma.core.addresses import parse_address_list

    value = unfolded.split(b":", 1)[1].decode("utf-8", "replace")
    try:
        addresses = parse_address_list(value)
    except DataError as error:
        raise DataError(f"{name} header: {error.message}", hint=error.hint) from error
    for address in addresses:
        if "\ufffd" in address:
            raise DataError(
                f"{name} header: address {address!r} is not valid UTF-8",
                hint="write the address in ASCII or UTF-8",
            )
    return addresses


def _folded(line: bytes, name: str) -> list[bytes]:
    """``line`` (LF-terminated) as one or more lines of at most 998 octets."""
    if len(line) <= MAX_LINE_OCTETS + 1:
        return [line]
    return [piece + b"\n" for piece in _fold(line[:-1], name)]


class HeaderStep:
    """The header step as a stepper over the pieces of ``normalise_lines`` (pure, no I/O).

    ``feed`` each piece (``feed_block`` each item of ``normalise_blocks``) while
    ``done`` is False and spool what it returns; at the end
    of the input call ``finish`` (when not ``done``).  Once ``done``, every further
    piece is body, untouched.  ``recipients`` holds the -t addresses found (To:, Cc:,
    Bcc: in order) when ``collect_recipients``.  Memory is one field at most: a
    line or a collected field over ``field_limit`` octets is a DataError naming
    the line.  Bcc: fields go, with their continuations, with or without -t.

    A line inside the block that is neither a field nor a continuation ("the tail"):
    mail readers take it for the start of the body, so the block is closed before
    it (our fields, a blank line) and it and what follows go out as body, untouched
    and unfolded (long ones are re-encoded as body lines).  Up to the first empty
    line, though, Bcc: fields are still dropped and -t still reads To/Cc/Bcc, as in
    the C dma, whose header phase lasts until that empty line (SPEC 3.3, 3.4).
    """

    def __init__(
        self, stamp: Stamp, *, collect_recipients: bool, field_limit: int = FIELD_LIMIT
    ) -> None:
        _check_stamp(stamp)
        self._stamp = stamp
        self._collect = collect_recipients
        self._limit = field_limit
        self.done = False
        self._started = False  # a header line has opened the block
        self._number = 0  # input lines complete so far
        self._partial: list[bytes] = []  # the pieces of a line still arriving
        self._partial_size = 0
        self._skipping = False  # the rest of a leading From_ line is being dropped
        self._name: str | None = None  # the current field's name as written, "" for no field
        self._key = ""
        self._keep = True
        self._value: list[bytes] | None = None  # the unfolded field, when it is collected
        self._value_size = 0
        self._seen: set[str] = set()
        self._recipients: list[str] = []
        self._tail = False  # past a malformed line, before the first empty line
        self._midline = False  # in the tail: the last piece did not end its line

    @property
    def recipients(self) -> tuple[str, ...]:
        """The -t recipients found so far, in order."""
        return tuple(self._recipients)

    def feed(self, piece: bytes) -> Step:
        """Take the next piece of input; return what to spool now.

        A piece ending in LF ends its line; one without is the start or middle of a
        line longer than ``normalise_lines`` yields whole.
        """
        if self.done:
            raise SoftwareError("a body piece was fed to the header step")
        if self._tail:
            return Step((), self._tail_piece(piece))
        ends_line = piece.endswith(b"\n")
        if self._partial or self._skipping:
            return self._more(piece, ends_line)
        if self._started and _is_malformed(piece):
            return self._start_tail(piece)
        if ends_line:
            return self._line(piece)
        # The start of a long line: what it is shows in its first piece.
        if not self._started:
            if _is_from_line(piece):
                self._skipping = True
                return Step(())
            if not _is_header_line(piece):
                return self._body(piece)
        self._partial = [piece]
        self._partial_size = len(piece)
        self._check_line(self._partial_size)
        return Step(())

    def feed_block(self, block: bytes) -> Step:
        """``feed`` for an item of ``normalise_blocks``: a block's whole lines are fed one
        by one while not ``done``; the rest of it is body, untouched, after them."""
        first_end = block.find(b"\n") + 1
        if first_end in (0, len(block)):  # a piece, or one line
            return self.feed(block)
        lines: list[bytes] = []
        body: list[bytes] = []
        start = 0
        while start < len(block):
            if self.done:
                body.append(block[start:])
                break
            end = block.index(b"\n", start) + 1
            fed = self.feed(block[start:end])
            lines.extend(fed.lines)
            if fed.body:
                body.append(fed.body)
            start = end
        return Step(tuple(lines), b"".join(body))

    def finish(self) -> tuple[bytes, ...]:
        """The input ended: return the rest of the header block, with the separator."""
        if self.done:
            return ()
        if self._partial or self._skipping or self._midline:
            raise SoftwareError("the input ended inside a line (normalise_lines ends every line)")
        if self._tail:  # the separator went out before the tail
            self._end_field()
            self.done = True
            return ()
        return self._close()

    # ---------------------------------------------------------------------------------

    def _more(self, piece: bytes, ends_line: bool) -> Step:
        """The next piece of a line that started in an earlier piece."""
        if self._skipping:
            if ends_line:
                self._skipping = False
                self._number += 1
            return Step(())
        self._partial.append(piece)
        self._partial_size += len(piece)
        self._check_line(self._partial_size)
        if not ends_line:
            return Step(())
        line = b"".join(self._partial)
        self._partial = []
        return self._line(line)

    def _check_line(self, size: int) -> None:
        """Refuse a header line over the limit; ``_number`` counts it already when whole."""
        if size > self._limit:
            number = self._number if not self._partial else self._number + 1
            raise self._too_long("header line", number)

    def _too_long(self, what: str, number: int) -> DataError:
        return DataError(
            f"message line {number}: a {what} longer than {self._limit} octets",
            hint="headers hold short values: put big data in the body, after an empty line",
        )

    def _line(self, line: bytes) -> Step:
        """One whole line (LF-terminated) of the header block, or the first of the body."""
        self._number += 1
        if not self._started:
            if line == b"\n":
                return Step(self._close())
            if _is_from_line(line):
                return Step(())
            if not _is_header_line(line):
                return self._body(line)
            self._started = True
        if line == b"\n":
            return Step(self._close())
        self._check_line(len(line))
        if self._name is not None and _is_continuation(line):
            return Step(self._field_line(line))
        if _is_malformed(line):
            self._number -= 1  # the tail counts its own lines
            return self._start_tail(line)
        self._end_field()
        self._open_field(line)
        if self._key in _ADDED_FIELDS:
            self._seen.add(self._key)
        return Step(self._field_line(line))

    def _open_field(self, line: bytes) -> None:
        """Start the field that ``line`` (or its first piece) opens."""
        name = _field_name(line)
        self._name = name.decode("ascii") if name is not None else ""
        self._key = self._name.lower()
        self._keep = self._key != "bcc"
        collect = self._collect and self._key in _RECIPIENT_FIELDS
        self._value = [] if collect else None
        self._value_size = 0

    def _start_tail(self, piece: bytes) -> Step:
        """A malformed line: close the block before it; it starts the body (the tail)."""
        self._end_field()
        closing = (*self._missing_fields(), b"\n")
        self._tail = True
        return Step(closing, self._tail_piece(piece))

    def _tail_piece(self, piece: bytes) -> bytes:
        """A piece of the tail: body, but a Bcc field is dropped and -t fields are read."""
        ends_line = piece.endswith(b"\n")
        if not self._midline:  # the piece starts a line
            if piece == b"\n":
                self._number += 1
                self._end_field()
                self.done = True  # the first empty line: the C dma's header phase ends
                return piece
            if not _is_continuation(piece):  # a continuation goes with the line above
                self._end_field()
                if _is_header_line(piece):
                    self._open_field(piece)
                else:
                    self._keep = True
        self._midline = not ends_line
        if ends_line:
            self._number += 1
        if self._value is not None:
            assert self._name is not None
            self._value_size += len(piece) - ends_line
            if self._value_size > self._limit:
                raise self._too_long(f"{self._name} field", self._number + (not ends_line))
            self._value.append(piece[:-1] if ends_line else piece)
        return piece if self._keep else b""

    def _field_line(self, line: bytes) -> tuple[bytes, ...]:
        """A line of the current field: collected for -t, and spooled unless a Bcc."""
        assert self._name is not None  # only called inside a field
        if self._value is not None:
            self._value_size += len(line) - 1
            if self._value_size > self._limit:
                raise self._too_long(f"{self._name} field", self._number)
            self._value.append(line[:-1])
        return tuple(_folded(line, self._name)) if self._keep else ()

    def _end_field(self) -> None:
        """Close the current field: parse its addresses when collected."""
        if self._value is not None and self._name is not None:
            self._recipients.extend(_field_recipients(self._name, b"".join(self._value)))
        self._value = None
        self._name = None

    def _body(self, piece: bytes) -> Step:
        """The first line is no header: there is no block, the piece starts the body."""
        return Step(self._close(), piece)

    def _close(self) -> tuple[bytes, ...]:
        """End the block: the missing Date, Message-Id and From, then the separator."""
        self._end_field()
        self.done = True
        return (*self._missing_fields(), b"\n")

    def _missing_fields(self) -> tuple[bytes, ...]:
        """Date, Message-Id and From lines for those not seen yet (then counted as seen)."""
        stamp = self._stamp
        added: list[tuple[str, bytes]] = []
        if "date" not in self._seen:
            added.append(("Date", b"Date: " + _encode(stamp.date, "date") + b"\n"))
        if "message-id" not in self._seen:
            message_id = _encode(stamp.message_id, "Message-Id")
            added.append(("Message-Id", b"Message-Id: " + message_id + b"\n"))
        if "from" not in self._seen:
            added.append(("From", _from_line(stamp)))
        self._seen.update(_ADDED_FIELDS)
        return tuple(piece for name, line in added for piece in _folded(line, name))
