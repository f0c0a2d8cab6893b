"""One address's outcome as one line of octets: how the unprivileged remote-delivery
process tells its root parent what happened (SPEC 8.2).

The child runs DNS, SMTP and TLS as the delivery user and reports each
``(AddressId, Outcome)`` through a pipe as ``encode_report``'s line; the parent reads
each line with ``decode_report`` and acts on it (Q files, bounces, deletions are the
parent's).  The child is the less trusted side: ``decode_report`` takes any octets and
gives back a report or raises ``DataError``, nothing else.

A line is JSON in ASCII (``\\uXXXX`` escapes for the rest, so the surrogate-escaped
octets of a Latin-1 sender or reply survive), ending with one LF::

    ["<item id>", <part>, ["<kind>", "<detail>", "<status>", <diagnostic>, <remote mta>,
                           [["<part address>", <outcome>], ...]]]
"""

from __future__ import annotations

import json

from dma.core.errors import DataError
from dma.core.ledger import AddressId
from dma.core.outcomes import Outcome

MAX_REPORT_OCTETS = 1 << 20
"""The longest line a report may be (a comma list's parts, long server replies fit)."""

MAX_PARTS_DEPTH = 8
"""How deep outcomes may nest in parts (the ledger makes one level)."""

_KINDS = ("delivered", "deferred", "failed")


def encode_report(address: AddressId, outcome: Outcome) -> bytes:
    """The line that carries ``outcome`` of ``address``, LF included."""
    value = [address.item_id, address.part, _outcome_value(outcome)]
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def _outcome_value(outcome: Outcome) -> list[object]:
    return [outcome.kind, outcome.detail, outcome.status, outcome.diagnostic,
            outcome.remote_mta, [[part, _outcome_value(own)] for part, own in outcome.parts]]


def decode_report(line: bytes) -> tuple[AddressId, Outcome]:
    """The report a line carries (one trailing LF allowed); DataError for anything else."""
    if len(line) > MAX_REPORT_OCTETS + 1:
        raise _bad(f"{len(line)} octets, more than {MAX_REPORT_OCTETS}")
    if line.endswith(b"\n"):
        line = line[:-1]
    try:
        value = json.loads(line.decode("ascii"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise _bad(f"not a JSON line ({type(error).__name__})") from None
    if not (isinstance(value, list) and len(value) == 3):
        raise _bad("not a list of item id, part and outcome")
    item_id, part, outcome = value
    if not isinstance(item_id, str) or not item_id:
        raise _bad("the item id is not a text")
    if type(part) is not int or part < 0:
        raise _bad("the part is not a number from 0")
    return AddressId(_text(item_id), part), _outcome(outcome, 0)


def _outcome(value: object, depth: int) -> Outcome:
    if depth > MAX_PARTS_DEPTH:
        raise _bad(f"outcomes nested deeper than {MAX_PARTS_DEPTH}")
    if not (isinstance(value, list) and len(value) == 6):
        raise _bad("an outcome is not a list of six values")
    kind, detail, status, diagnostic, remote_mta, parts = value
    if kind not in _KINDS:
        raise _bad("an outcome's kind is not delivered, deferred or failed")
    if not isinstance(parts, list):
        raise _bad("an outcome's parts are not a list")
    return Outcome(kind, _text(detail), _text(status), _optional_text(diagnostic),
                   _optional_text(remote_mta), tuple(_part(p, depth) for p in parts))


def _part(value: object, depth: int) -> tuple[str, Outcome]:
    if not (isinstance(value, list) and len(value) == 2):
        raise _bad("a part is not a list of address and outcome")
    return _text(value[0]), _outcome(value[1], depth + 1)


def _text(value: object) -> str:
    """A text as Q files and logs can hold it: lone surrogates only as escaped octets."""
    if not isinstance(value, str):
        raise _bad("a text field is not a text")
    try:
        value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise _bad("a text holds a lone surrogate that stands for no octet") from None
    return value


def _optional_text(value: object) -> str | None:
    return None if value is None else _text(value)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _bad(what: str) -> DataError:
    return DataError(f"bad report from the remote delivery process: {what}",
                     hint="this is a bug, or that process is not ours any more")
