"""Properties of mboxrd records: quoting is reversible and never leaves a separator, and
an append keeps what the mailbox held and starts the record after a blank line."""

from __future__ import annotations

import io
import os
import re
import tempfile
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.adapters.mailbox import deliver
from dma.core.mbox import (
    AppendIntent,
    from_line,
    length_to_restore,
    mbox_record,
    parse_intent,
    quote_line,
    render_intent,
    unquote_line,
)

# Lines biased towards the interesting shapes: runs of '>' before "From ", near misses.
_prefixes = st.sampled_from([b"", b">", b">>", b">>>", b" ", b"> "])
_words = st.sampled_from([b"From ", b"From", b"From:", b"from ", b"Fromage ", b"x"])
_tails = (st.binary(max_size=40) | st.just(b"x\r>From y")).map(
    lambda tail: tail.replace(b"\n", b"")
)
_lines = st.builds(lambda p, w, t: p + w + t, _prefixes, _words, _tails)
_terminated = _lines.map(lambda line: line + b"\n")
_senders = st.one_of(st.just(""), st.text(max_size=30))
_moments = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))


@settings(max_examples=200, deadline=None)
@given(st.one_of(_lines, st.binary(max_size=60)))
def test_unquote_inverts_quote(line: bytes) -> None:
    """Quoting a line and unquoting it gives the line back, byte for byte."""
    assert unquote_line(quote_line(line)) == line


@settings(max_examples=200, deadline=None)
@given(_lines)
def test_quote_adds_at_most_one_byte(line: bytes) -> None:
    """Quoting adds exactly one '>' when the line matches ^>*From, nothing otherwise."""
    quoted = quote_line(line)
    if re.match(rb">*From ", line):
        assert quoted == b">" + line
    else:
        assert quoted == line


@settings(max_examples=200, deadline=None)
@given(st.lists(_terminated, max_size=20), _senders, _moments)
def test_only_the_separator_starts_with_from(
    lines: list[bytes], sender: str, moment: datetime
) -> None:
    """In a record only the first line starts with "From "; unquoting restores the message."""
    out = b"".join(mbox_record(lines, sender, moment))
    record_lines = out.split(b"\n")
    assert record_lines[0].startswith(b"From ")
    assert not [line for line in record_lines[1:] if line.startswith(b"From ")]
    body = out[len(from_line(sender, moment)) : -1]
    restored = b"".join(unquote_line(line) for line in re.findall(rb"[^\n]*\n", body))
    assert restored == b"".join(lines)


@settings(max_examples=200, deadline=None)
@given(st.lists(_lines, max_size=10), _senders, _moments)
def test_record_ends_with_blank_line(lines: list[bytes], sender: str, moment: datetime) -> None:
    """Every record, even of unterminated or empty lines, ends in a blank line."""
    out = b"".join(mbox_record([line + b"\n" for line in lines[:-1]] + lines[-1:], sender, moment))
    assert out.endswith(b"\n\n")
    assert out.startswith(from_line(sender, moment))


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=30) | st.sampled_from([b"\n", b"\n\n", b"x\n", b"x\n\n", b"\nx"]))
def test_append_keeps_old_bytes_and_separates(old: bytes) -> None:
    """Whatever a mailbox ends with (a cut-off line too), an append leaves its bytes as
    they were and adds only the newlines missing for a blank line before the record."""
    moment = datetime(2026, 1, 1)
    record = b"".join(mbox_record([b"Subject: s\n", b"\n", b"body\n"], "a@b", moment))
    with tempfile.TemporaryDirectory() as place:
        box = os.path.join(place, "bob")
        with open(box, "wb") as handle:
            handle.write(old)
        deliver(box, io.BytesIO(b"Subject: s\n\nbody\n"), "a@b", moment)
        with open(box, "rb") as handle:
            got = handle.read()
    assert got.startswith(old) and got.endswith(record)
    fill = got[len(old) : len(got) - len(record)]
    assert fill in (b"", b"\n", b"\n\n")
    assert (old + fill).endswith(b"\n\n") or not old
    assert len(fill) == (0 if not old or old.endswith(b"\n\n") else 2 - old.endswith(b"\n"))


# --- append intents ---------------------------------------------------------------------

_intents = st.builds(
    AppendIntent,
    st.integers(0, 2**63), st.integers(0, 2**63), st.integers(0, 2**63),
    st.binary(max_size=40).map(lambda extra: b"\n" + b"From " + extra.replace(b"\n", b"")
                               + b"\n"),
)


@given(_intents)
def test_intents_round_trip(intent: AppendIntent) -> None:
    """parse_intent reads back exactly what render_intent wrote."""
    assert parse_intent(render_intent(intent)) == intent


@given(st.binary())
def test_parse_intent_never_raises(data: bytes) -> None:
    """Any octets (a file cut short, garbage) give an intent or None, never an error."""
    result = parse_intent(data)
    assert result is None or isinstance(result, AppendIntent)


@given(_intents, st.integers(0, 2**63), st.binary(max_size=60), st.booleans(),
       st.booleans())
def test_only_the_interrupted_record_is_ever_cut(
    intent: AppendIntent, size: int, found: bytes, same_file: bool, later: bool
) -> None:
    """A cut happens only on the same file, longer than the offset, with the recorded
    head at the offset and no later separator; and then it is to the offset exactly."""
    device, inode = (intent.device, intent.inode) if same_file else (intent.device + 1, 0)
    cut = length_to_restore(intent, device, inode, size, found, later)
    if cut is not None:
        assert same_file and not later and found == intent.head
        assert cut == intent.offset < size
