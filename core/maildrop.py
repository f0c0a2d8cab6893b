"""The maildrop file: one message handed in by a user who may not write the spool (SPEC 8.2).

In system mode a submitter without privileges writes its message into
``SPOOLDIR/maildrop``; a runner started as root checks the file and commits it into
the spool.  The file holds the envelope and the message as submission made it
(headers processed: Bcc removed, Date, Message-Id and From added), but no Received
line: the runner adds that from the file's owner uid, which the kernel sets.  The
file says nothing about a user or a uid, and nothing in it is trusted: the runner
parses it with this module and checks the envelope again with submission's own
checks (``check_envelope``), so a file written by hand cannot queue anything that a
submission would refuse.

The format, version 1 (every line ends in LF, values are UTF-8; octets that are not
are kept as they came, as in Q files)::

    PYDMA-MAILDROP 1
    Sender: alice@example.org          (empty for the null sender)
    DSN-Notify: FAILURE,DELAY          (optional, -N)
    DSN-Ret: HDRS                      (optional, -R)
    DSN-Envid: abc                     (optional, -V)
    Queue-Only: yes                    (optional, -bq: deliver at the next queue run)
    Message-Octets: 00000000000000001234
    <empty line>
    <the message: exactly Message-Octets octets>
    Recipient: bob
    Recipient: carol@example.com
    End: 2

The head is written first with a zero count and rewritten in place once the message
is written (the count has a fixed width, so the head keeps its length); the
recipients come after the message because ``-t`` finds them only while the message
streams through.  ``End:`` counts the recipients, so a cut file never parses.

The maildrop carries a second kind of record, with its own magic line: a user's
``dma -Qd`` request (a user may not write the spool, so deletion goes the way mail
goes).  It names queue items by id; the runner deletes those whose ``X-Uid`` is the
request file's owner and refuses the rest::

    PYDMA-MAILDROP-DELETE 1
    Item: 18c2f0a1b2c3d4e5f6a7b8.0
    Item: 18c2f0a1b2c3d4e5f6a7b8.1
    End: 2
"""

from __future__ import annotations

from collections.abc import Callable

from dma.core.addresses import parse_envelope_address
from dma.core.aliases import AliasTable
from dma.core.dsn import envid_problem, notify_problem, ret_problem
from dma.core.envelope import Recipient, check_no_control, merge_recipients, resolve_recipients
from dma.core.errors import DataError, DmaError, SoftwareError, at
from dma.core.octets import printable
from dma.core.queuefile import item_id_from_filename
from dma.core.values import frozen

MAGIC = b"PYDMA-MAILDROP 1\n"
"""The first line of a maildrop file, with the format's version."""

REQUEST_MAGIC = b"PYDMA-MAILDROP-DELETE 1\n"
"""The first line of a deletion request (``dma -Qd`` by a user), with its version."""

MAX_REQUEST_OCTETS = 64 * 1024
"""Bound on a deletion request: about 2000 item ids; a larger file is refused."""

MAX_REQUEST_ITEMS = 1000
"""Most item ids one request names (the user's ``dma -Qd`` sends larger sets in parts)."""

MAX_HEAD_OCTETS = 4096
"""Bound on the head (magic line to the empty line): an address is at most 254 octets."""

MAX_TRAILER_OCTETS = 64 * 1024 * 1024
"""Bound on the recipient lines after the message (about 250 000 recipients): the runner
holds them in memory while it checks them."""

MAX_FIELD_OCTETS = 998
"""Longest line of the head or the trailer, without its LF."""

OCTETS_WIDTH = 20
"""Digits of ``Message-Octets``: fixed, so the head can be rewritten in place."""

_HINT = "the file is not one that dma's submission wrote; it stays in the quarantine"
_HEAD_KEYS = ("Sender", "DSN-Notify", "DSN-Ret", "DSN-Envid", "Queue-Only", "Message-Octets")


@frozen
class MaildropEnvelope:
    """What a maildrop file says about its message, besides the message itself."""

    sender: str  # "" for the null sender
    recipients: tuple[str, ...]  # as resolved at submission (aliases expanded)
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    queue_only: bool = False  # -bq: queue, deliver at the next queue run


@frozen
class Head:
    """The head of a maildrop file: the envelope less its recipients, and where the
    message is (``length`` octets of head, then ``message_octets`` of message)."""

    sender: str
    message_octets: int
    length: int
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    queue_only: bool = False


@frozen
class Maildrop:
    """A whole maildrop file, parsed."""

    envelope: MaildropEnvelope
    message: bytes


# --- writing ---------------------------------------------------------------------------


def _line(key: str, value: str) -> bytes:
    """One ``Key: value`` line; a value that would not read back is our bug."""
    if any(char in value for char in "\r\n\0"):
        raise SoftwareError(
            f"maildrop field {key} holds a CR, LF or NUL: {printable(value)}",
            hint="this is a bug: addresses and options are checked before they are written",
        )
    try:
        line = f"{key}: {value}\n".encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as error:
        raise SoftwareError(f"maildrop field {key} is not encodable: {printable(value)}",
                            hint="this is a bug") from error
    if len(line) - 1 > MAX_FIELD_OCTETS:
        raise SoftwareError(f"maildrop field {key} is {len(line) - 1} octets long",
                            hint=f"values are checked to fit {MAX_FIELD_OCTETS} octets")
    return line


def render_head(envelope: MaildropEnvelope, message_octets: int) -> bytes:
    """The head for ``envelope``; its length does not depend on ``message_octets``."""
    if not 0 <= message_octets < 10**OCTETS_WIDTH:
        raise SoftwareError(f"message size {message_octets} cannot be written",
                            hint="this is a bug")
    parts = [MAGIC, _line("Sender", envelope.sender)]
    for key, value in (("DSN-Notify", envelope.dsn_notify), ("DSN-Ret", envelope.dsn_ret),
                       ("DSN-Envid", envelope.dsn_envid)):
        if value:
            parts.append(_line(key, value))
    if envelope.queue_only:
        parts.append(_line("Queue-Only", "yes"))
    parts.append(_line("Message-Octets", f"{message_octets:0{OCTETS_WIDTH}d}"))
    parts.append(b"\n")
    return b"".join(parts)


def render_recipient(address: str) -> bytes:
    """One recipient line of the trailer."""
    if not address:
        raise SoftwareError("empty maildrop recipient", hint="this is a bug")
    return _line("Recipient", address)


def render_end(count: int) -> bytes:
    """The trailer's last line: how many recipient lines came before it."""
    return _line("End", str(count))


def render_trailer(recipients: tuple[str, ...]) -> bytes:
    """The recipient lines and the end line."""
    return b"".join(render_recipient(r) for r in recipients) + render_end(len(recipients))


def render_maildrop(envelope: MaildropEnvelope, message: bytes) -> bytes:
    """A whole maildrop file (the writer in adapters/maildrop.py streams the same octets)."""
    return (render_head(envelope, len(message)) + message
            + render_trailer(envelope.recipients))


# --- reading ---------------------------------------------------------------------------


def _field(line: bytes, number: int, name: str) -> tuple[str, str]:
    """``Key: value`` of one line (without its LF), or DataError naming the line."""
    where = at(name, number)
    if len(line) > MAX_FIELD_OCTETS:
        raise DataError(f"maildrop line is longer than {MAX_FIELD_OCTETS} octets",
                        where=where, hint=_HINT)
    if b"\r" in line or b"\0" in line:
        what = "NUL octet" if b"\0" in line else "carriage return"
        raise DataError(f"maildrop line holds a {what}", where=where, hint=_HINT)
    key, separator, value = line.partition(b": ")
    if not separator or not key.isascii():
        raise DataError(f"maildrop line is no 'Key: value' field: {_shown(line)}",
                        where=where, hint=_HINT)
    return key.decode("ascii"), value.decode("utf-8", "surrogateescape")


def _shown(data: bytes, limit: int = 60) -> str:
    text = printable(data[:limit].decode("utf-8", "surrogateescape"))
    return "'" + text + ("...'" if len(data) > limit else "'")


def _digits(value: str, what: str, where: str) -> int:
    if not value or len(value) > OCTETS_WIDTH or not all("0" <= c <= "9" for c in value):
        raise DataError(f"maildrop {what} is no number: {printable(value)!r}",
                        where=where, hint=_HINT)
    return int(value)


def parse_head(data: bytes, name: str) -> Head:
    """The head at the start of ``data`` (which may go on past it, into the message).

    DataError when the magic line is not ours, a line is not a known ``Key: value``
    field, a key comes twice, ``Sender`` or ``Message-Octets`` is missing, or no
    empty line ends the head within ``MAX_HEAD_OCTETS``.
    """
    if not data.startswith(MAGIC):
        raise DataError(
            f"not a maildrop file: it does not start with {MAGIC.decode().strip()!r}",
            where=at(name, 1), hint=_HINT,
        )
    end = data.find(b"\n\n", len(MAGIC) - 1, MAX_HEAD_OCTETS + 1)
    if end < 0:
        raise DataError(f"maildrop head has no end within {MAX_HEAD_OCTETS} octets",
                        where=name, hint=_HINT)
    length = end + 2
    fields: dict[str, str] = {}
    lines = data[len(MAGIC):end].split(b"\n") if end >= len(MAGIC) else []
    for number, line in enumerate(lines, start=2):
        key, value = _field(line, number, name)
        if key not in _HEAD_KEYS:
            raise DataError(f"maildrop head has an unknown field {printable(key)!r}",
                            where=at(name, number), hint=_HINT)
        if key in fields:
            raise DataError(f"maildrop head names {key} twice", where=at(name, number),
                            hint=_HINT)
        fields[key] = value
    for key in ("Sender", "Message-Octets"):
        if key not in fields:
            raise DataError(f"maildrop head has no {key} field", where=name, hint=_HINT)
    queue_only = fields.get("Queue-Only")
    if queue_only not in (None, "yes"):
        raise DataError(f"maildrop Queue-Only is {printable(queue_only or '')!r}, not 'yes'",
                        where=name, hint=_HINT)
    return Head(
        sender=fields["Sender"],
        message_octets=_digits(fields["Message-Octets"], "message size", name),
        length=length,
        dsn_notify=fields.get("DSN-Notify") or None,
        dsn_ret=fields.get("DSN-Ret") or None,
        dsn_envid=fields.get("DSN-Envid") or None,
        queue_only=queue_only == "yes",
    )


def parse_trailer(data: bytes, name: str) -> tuple[str, ...]:
    """The recipients of the trailer ``data`` (everything after the message).

    DataError when it is larger than ``MAX_TRAILER_OCTETS``, a line is not a
    ``Recipient`` (or the final ``End``) field, a recipient is empty, there is none,
    the ``End`` count is wrong, or anything follows the ``End`` line.
    """
    if len(data) > MAX_TRAILER_OCTETS:
        raise DataError(f"maildrop recipients take {len(data)} octets, more than "
                        f"{MAX_TRAILER_OCTETS}", where=name, hint=_HINT)
    if not data.endswith(b"\n"):
        raise DataError("maildrop file does not end with a complete End line",
                        where=name, hint=_HINT)
    lines = data[:-1].split(b"\n")
    recipients: list[str] = []
    for number, line in enumerate(lines[:-1], start=1):
        key, value = _field(line, number, f"{name} (recipients)")
        if key != "Recipient" or not value:
            raise DataError(
                f"maildrop recipient line expected, found {_shown(line)}",
                where=at(f"{name} (recipients)", number), hint=_HINT,
            )
        recipients.append(value)
    key, value = _field(lines[-1], len(lines), f"{name} (recipients)")
    if key != "End":
        raise DataError("maildrop file does not end with an End line",
                        where=name, hint=_HINT)
    count = _digits(value, "recipient count", name)
    if count != len(recipients):
        raise DataError(f"maildrop End line counts {count} recipients, the file has "
                        f"{len(recipients)}", where=name, hint=_HINT)
    if not recipients:
        raise DataError("maildrop file names no recipients", where=name, hint=_HINT)
    return tuple(recipients)


def parse_maildrop(data: bytes, name: str) -> Maildrop:
    """A whole maildrop file from its octets; DataError naming what is wrong."""
    head = parse_head(data, name)
    message_end = head.length + head.message_octets
    if message_end > len(data):
        raise DataError(
            f"maildrop message is cut short: {len(data) - head.length} of "
            f"{head.message_octets} octets", where=name, hint=_HINT,
        )
    recipients = parse_trailer(data[message_end:], name)
    return Maildrop(envelope_of(head, recipients), data[head.length:message_end])


def envelope_of(head: Head, recipients: tuple[str, ...]) -> MaildropEnvelope:
    """The envelope that a head and its trailer's recipients make."""
    return MaildropEnvelope(
        sender=head.sender, recipients=recipients, dsn_notify=head.dsn_notify,
        dsn_ret=head.dsn_ret, dsn_envid=head.dsn_envid, queue_only=head.queue_only,
    )


# --- checking --------------------------------------------------------------------------


def check_envelope(
    envelope: MaildropEnvelope,
    *,
    mailname: str,
    aliases: AliasTable,
    is_user: Callable[[str], bool],
    nullclient: bool,
) -> tuple[Recipient, ...]:
    """The recipients to queue, once the envelope passed submission's own checks.

    The sender as ``-f`` is checked (no CR, LF or NUL; a valid address unless null);
    the DSN values as ``-N``, ``-R`` and ``-V`` are (core/dsn); each recipient must
    be a valid address and one that submission could have queued: resolving it again
    (aliases, the ``*`` catch-all, local users) must give it back, so a hand-written
    file can name neither an alias (it bypasses the aliases), nor a local name that is
    no user, nor anything the address checks refuse.  Duplicates are dropped by
    submission's rule.  Every refusal is a DataError that names the value.
    """
    try:
        check_no_control(envelope.sender, "sender address")
        if envelope.sender:
            parse_envelope_address(envelope.sender)
    except DmaError as error:
        raise _refused("sender", envelope.sender, error) from None
    for value, problem, what in (
        (envelope.dsn_notify, notify_problem, "DSN-Notify"),
        (envelope.dsn_ret, ret_problem, "DSN-Ret"),
        (envelope.dsn_envid, envid_problem, "DSN-Envid"),
    ):
        found = problem(value) if value is not None else None
        if found is not None:
            raise DataError(f"maildrop {what} {printable(value or '')!r}: {found}", hint=_HINT)
    checked: list[Recipient] = []
    for address in envelope.recipients:
        try:
            parse_envelope_address(address)
            resolved = resolve_recipients(
                (address,), mailname=mailname, aliases=aliases, is_user=is_user,
                nullclient=nullclient,
            )
        except DmaError as error:
            raise _refused("recipient", address, error) from None
        own = [r for r in resolved if r.address == address]
        if not own:
            raise DataError(
                f"maildrop recipient {printable(address)!r} is not one that submission "
                "queues: it resolves to "
                + ", ".join(printable(r.address) for r in resolved[:5])
                + (" ..." if len(resolved) > 5 else ""),
                hint="submission expands aliases; a file that names an alias itself "
                "was not written by it",
            )
        checked.append(own[0])
    if not checked:
        raise DataError("maildrop file names no recipients", hint=_HINT)
    return merge_recipients(checked)


def _refused(what: str, value: str, error: DmaError) -> DataError:
    return DataError(f"maildrop {what} {printable(value)!r} is refused: {error.message}",
                     hint=error.hint or _HINT)


# --- deletion requests -------------------------------------------------------------------


@frozen
class DeleteRequest:
    """A user's ``dma -Qd``: the queue items to delete, if they are the user's."""

    item_ids: tuple[str, ...]


def _item_id_problem(item_id: str) -> str | None:
    """Why ``item_id`` cannot name a queue item, or None (the spool's own rule: the
    Q and M file names must stay inside the spool)."""
    if item_id_from_filename("Q" + item_id) != item_id:
        return f"{printable(item_id)!r} is no queue item id"
    if len(item_id) > 200:
        return f"item id of {len(item_id)} characters"
    return None


def render_delete_request(request: DeleteRequest) -> bytes:
    """The request file for ``request``; SoftwareError for an id that is not one (the
    caller checks the user's words first)."""
    if not 0 < len(request.item_ids) <= MAX_REQUEST_ITEMS:
        raise SoftwareError(f"deletion request of {len(request.item_ids)} items",
                            hint=f"1 to {MAX_REQUEST_ITEMS} per request")
    for item_id in request.item_ids:
        problem = _item_id_problem(item_id)
        if problem is not None:
            raise SoftwareError(f"deletion request: {problem}", hint="this is a bug")
    return (REQUEST_MAGIC + b"".join(_line("Item", i) for i in request.item_ids)
            + _line("End", str(len(request.item_ids))))


def is_delete_request(data: bytes) -> bool:
    """True when ``data`` (a file's first octets) starts like a deletion request."""
    return data.startswith(REQUEST_MAGIC)


def parse_delete_request(data: bytes, name: str) -> DeleteRequest:
    """A deletion request from a file's octets.

    DataError when it is larger than ``MAX_REQUEST_OCTETS``, its magic line is not
    ours, a line is not an ``Item`` field naming a queue item id (or the final
    ``End``), it names none or more than ``MAX_REQUEST_ITEMS``, the count is wrong,
    or anything follows the ``End`` line.  Ids named twice count once.
    """
    if len(data) > MAX_REQUEST_OCTETS:
        raise DataError(f"deletion request is {len(data)} octets, more than "
                        f"{MAX_REQUEST_OCTETS}", where=name, hint=_HINT)
    if not is_delete_request(data):
        raise DataError("not a deletion request: it does not start with "
                        f"{REQUEST_MAGIC.decode().strip()!r}", where=at(name, 1), hint=_HINT)
    body = data[len(REQUEST_MAGIC):]
    if not body.endswith(b"\n"):
        raise DataError("deletion request does not end with a complete End line",
                        where=name, hint=_HINT)
    lines = body[:-1].split(b"\n")
    item_ids: list[str] = []
    for number, line in enumerate(lines[:-1], start=2):
        item_ids.append(_request_item(line, number, name))
    key, value = _field(lines[-1], len(lines) + 1, name)
    if key != "End":
        raise DataError("deletion request does not end with an End line", where=name,
                        hint=_HINT)
    count = _digits(value, "item count", name)
    if count != len(item_ids):
        raise DataError(f"deletion request End line counts {count} items, the file has "
                        f"{len(item_ids)}", where=name, hint=_HINT)
    if not 0 < count <= MAX_REQUEST_ITEMS:
        raise DataError(f"deletion request names {count} items, not 1 to "
                        f"{MAX_REQUEST_ITEMS}", where=name, hint=_HINT)
    return DeleteRequest(tuple(dict.fromkeys(item_ids)))


def _request_item(line: bytes, number: int, name: str) -> str:
    """The item id of one ``Item`` line of a request; DataError naming the line."""
    key, value = _field(line, number, name)
    if key != "Item":
        raise DataError(f"deletion request line is no Item field: {_shown(line)}",
                        where=at(name, number), hint=_HINT)
    problem = _item_id_problem(value)
    if problem is not None:
        raise DataError(f"deletion request: {problem}", where=at(name, number), hint=_HINT)
    return value
