"""The SMTP client's wire text: command lines, MAIL/RCPT parameters, the data, envelope checks.

Pure functions of their arguments, split from ``dma.core.smtp`` (whose machine
decides when each line goes out).  xtext for ENVID is ``dma.core.dsn.xtext``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dma.core.dsn import envid_problem, notify_problem, ret_problem, xtext
from dma.core.octets import printable, wire_octets
from dma.core.smtp_events import Envelope
from dma.core.smtp_reply import Extensions

__all__ = [
    "CRLF",
    "DATA_CHUNK_OCTETS",
    "DotStuffer",
    "envelope_problem",
    "line",
    "mail_command",
    "message_problem",
    "non_ascii_problem",
    "rcpt_commands",
    "shown",
]

CRLF = b"\r\n"
DATA_CHUNK_OCTETS = 64 * 1024
"""send_data_lines yields about this much at a time: few writes, bounded memory."""

_BAD_ADDRESS = re.compile(r"[\x00-\x1f\x7f<>]")


def line(command: str) -> bytes:
    """One command on the wire; UTF-8 only ever appears with SMTPUTF8.

    An address read from a Q file that holds octets that are not UTF-8 (a Latin-1
    sender written by the C dma) goes out as those very octets: it is not ASCII, so
    it only ever goes to a server that offers SMTPUTF8, as the C dma would send it.
    """
    return wire_octets(command) + CRLF


def shown(wire: bytes) -> str:
    """A command line as the trace shows it (without CRLF, never raising)."""
    return printable(wire[:-2].decode("utf-8", "surrogateescape"))


def envelope_problem(envelope: Envelope) -> str | None:
    """Why ``envelope`` cannot go out as it is (status code and reason), or None.

    Such an envelope comes from a queue file (the C dma's, or one edited by hand): it
    fails that message alone, never the connection it would have shared (SPEC 5.1).
    """
    for address in (envelope.sender, *envelope.recipients):
        if _BAD_ADDRESS.search(address):
            kind = "sender" if address is envelope.sender else "recipient"
            code = "5.1.7" if kind == "sender" else "5.1.3"
            return (f"{code} {kind} address {printable(address)} holds a control character "
                    "or an angle bracket")
    if any(not recipient for recipient in envelope.recipients):
        return "5.1.3 empty recipient address"
    checks = (
        (envelope.dsn_notify, notify_problem),
        (envelope.dsn_ret, ret_problem),
        (envelope.dsn_envid, envid_problem),
    )
    for value, check in checks:
        problem = check(value) if value is not None else None
        if problem is not None:
            return f"5.5.4 {problem}"
    return None


def message_problem(envelope: Envelope, ext: Extensions) -> str | None:
    """Why this server cannot take the message at all (size, sender), or None."""
    if ext.size and envelope.size > ext.size:
        return (f"5.3.4 message of {envelope.size} octets is larger than the server's "
                f"limit of {ext.size}")
    if not envelope.sender.isascii() and not ext.smtputf8:
        return "5.6.7 non-ASCII sender address and the server does not offer SMTPUTF8"
    return None


def non_ascii_problem(recipient: str, ext: Extensions) -> str | None:
    """Why this server cannot take ``recipient`` (non-ASCII without SMTPUTF8), or None."""
    if ext.smtputf8 or recipient.isascii():
        return None
    return "5.6.7 non-ASCII recipient address and the server does not offer SMTPUTF8"


def _mail_parameters(envelope: Envelope, ext: Extensions) -> list[str]:
    """The MAIL FROM parameters for what the server offers and the message needs."""
    utf8 = ext.smtputf8 and not all(
        address.isascii() for address in (envelope.sender, *envelope.recipients)
    )
    wanted = [
        (ext.size is not None, f"SIZE={envelope.size}"),
        (ext.eightbitmime and envelope.eight_bit, "BODY=8BITMIME"),
        (utf8, "SMTPUTF8"),
    ]
    params = [param for offered, param in wanted if offered]
    if ext.dsn and envelope.dsn_ret is not None:
        params.append(f"RET={envelope.dsn_ret.upper()}")
    if ext.dsn and envelope.dsn_envid is not None:
        params.append(f"ENVID={xtext(envelope.dsn_envid)}")
    return params


def mail_command(envelope: Envelope, ext: Extensions) -> bytes:
    """The MAIL FROM line, with the parameters the server offers."""
    return line(" ".join([f"MAIL FROM:<{envelope.sender}>", *_mail_parameters(envelope, ext)]))


def rcpt_commands(envelope: Envelope, ext: Extensions, indices: Sequence[int]) -> list[bytes]:
    """The RCPT TO lines for the recipients at ``indices``, in that order."""
    params = ""
    if ext.dsn and envelope.dsn_notify is not None:
        params = f" NOTIFY={envelope.dsn_notify.upper()}"
    return [line(f"RCPT TO:<{envelope.recipients[i]}>{params}") for i in indices]


class DotStuffer:
    """The message's LF lines to DATA wire text: CRLF line ends and dot-stuffing.

    Works on whole chunks (bytes.replace), not line by line: a 2 KB message is a
    handful of C-level calls.  Any chunking works: CR, LF and CRLF each end a line.
    """

    __slots__ = ("_after_cr", "_partial")

    def __init__(self) -> None:
        self._partial = b""  # a line whose end has not come yet
        self._after_cr = False  # the last chunk ended in CR: a leading LF belongs to it

    def feed(self, chunk: bytes) -> bytes:
        """The wire text of the lines ``chunk`` completes (b"" when it completes none)."""
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]
            self._after_cr = False  # that LF is used up: a second one is a line of its own
        if not chunk:
            return b""
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._partial:
            chunk = self._partial + chunk
        end = chunk.rfind(b"\n") + 1
        self._partial = chunk[end:]
        if not end:
            return b""
        complete = chunk[:end]  # starts at a line start, ends with LF
        if complete[:1] == b".":
            complete = b"." + complete
        return complete.replace(b"\n.", b"\n..").replace(b"\n", CRLF)

    def end(self) -> bytes:
        """The unfinished last line, if any, then the final dot."""
        partial = self._partial
        self._partial = b""
        if not partial:
            return b".\r\n"
        return (b"." + partial if partial[:1] == b"." else partial) + CRLF + b".\r\n"
