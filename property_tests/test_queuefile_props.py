"""Properties of Q files: what we write reads back, and no input makes the reader crash."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import DataError, DmaError, SoftwareError
from dma.core.queuefile import (
    MAX_ERROR_OCTETS,
    QueueItem,
    one_line_error,
    padded,
    parse_queue_file,
    parse_queue_item,
    render_queue_file,
)

_BLANKS = " \t\n\v\f\r"
_ids = st.from_regex(r"[0-9a-f]{1,16}\.[0-9a-f]{1,4}", fullmatch=True)
_values = st.text(max_size=60).filter(
    lambda s: not ({"\r", "\n", "\0"} & set(s)) and not (s and s[0] in _BLANKS)
)
_items = st.builds(
    QueueItem,
    id=_ids,
    sender=_values,
    recipient=_values.filter(bool),
    attempts=st.integers(min_value=0, max_value=10**6),
    next_try=st.none() | st.integers(min_value=0, max_value=2**40),
    last_error=st.none() | st.text(max_size=1200),
)
# Lines that look like Q file lines, so the parser gets past its first checks.
_keys = st.sampled_from(["ID", "Sender", "Recipient", "X-Attempts", "X-Next-Try", "X", ""])
_lines = st.builds(
    lambda key, sep, value, end: key.encode() + sep + value + end,
    _keys,
    st.sampled_from([b": ", b":", b" ", b""]),
    st.binary(max_size=20),
    st.sampled_from([b"\n", b"\r\n", b""]),
)


@settings(max_examples=200, deadline=None)
@given(_items)
def test_parse_inverts_render(item: QueueItem) -> None:
    """Rendering an item and parsing it gives it back, last error in its one-line form."""
    expected = dataclasses.replace(
        item,
        last_error=None if item.last_error is None else one_line_error(item.last_error),
    )
    assert parse_queue_file(render_queue_file(item), "Qx") == expected


@settings(max_examples=200, deadline=None)
@given(_items)
def test_rendered_lines_fit_the_c_reader(item: QueueItem) -> None:
    """Every rendered line fits the C dma's 1000-octet fgets buffer with its LF."""
    data = render_queue_file(item)
    assert data.endswith(b"\n")
    assert all(len(line) + 1 <= 999 for line in data.split(b"\n")[:-1])


@settings(max_examples=200, deadline=None)
@given(st.builds(QueueItem, id=st.text(max_size=8), sender=st.text(max_size=8),
                 recipient=st.text(max_size=8), attempts=st.integers(-2, 5),
                 next_try=st.none() | st.integers(-2, 5), last_error=st.none() | st.text()))
def test_render_writes_what_reads_back_or_refuses(item: QueueItem) -> None:
    """Rendering any item either gives a file that parses back to it or raises SoftwareError."""
    try:
        data = render_queue_file(item)
    except SoftwareError:
        return
    back = parse_queue_file(data, "Qx")
    assert (back.id, back.sender, back.recipient) == (item.id, item.sender, item.recipient)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.lists(_lines, max_size=8).map(b"".join))
def test_parse_returns_an_item_or_raises_our_error(data: bytes) -> None:
    """Parsing any octets gives a QueueItem with an id and recipient, or raises a DmaError."""
    try:
        item = parse_queue_file(data, "Qx")
    except DmaError:
        return
    assert item.id and item.recipient and item.attempts >= 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=1200))
def test_one_line_error_is_bounded_and_stable(text: str) -> None:
    """The one-line form has no line breaks, fits 900 octets and is its own one-line form."""
    flat = one_line_error(text)
    assert not ({"\r", "\n", "\0"} & set(flat))
    assert len(flat.encode()) <= MAX_ERROR_OCTETS
    assert one_line_error(flat) == flat


@settings(max_examples=300, deadline=None)
@given(_items, st.integers(min_value=0, max_value=5000))
def test_padding_keeps_the_item_and_never_shrinks(item: QueueItem, length: int) -> None:
    """A padded Q file reads back as the same item and is at least ``length`` long,
    overshooting only by less than one minimal pad line."""
    data = render_queue_file(item)
    grown = padded(data, length)
    assert parse_queue_file(grown, "Q") == parse_queue_file(data, "Q")
    assert len(grown) >= length
    assert grown.startswith(data)
    assert len(grown) == len(data) or len(grown) < max(length, len(data)) + 8
    assert all(len(line) < 1000 for line in grown.split(b"\n"))  # the C dma's fgets


@settings(max_examples=200, deadline=None)
@given(_items, _ids)
def test_an_item_is_only_read_under_its_own_name(item: QueueItem, name_id: str) -> None:
    """parse_queue_item gives the item back when the file is named for its ID, and raises
    DataError naming both ids when it is named for any other item (SPEC 4)."""
    data = render_queue_file(item)
    if name_id == item.id:
        assert parse_queue_item(data, name_id, "Q" + name_id).id == item.id
        return
    try:
        parse_queue_item(data, name_id, "Q" + name_id)
    except DataError as error:
        assert repr(item.id) in error.message and repr(name_id) in error.message
        assert error.where == "Q" + name_id
    else:
        raise AssertionError("an item read under another name")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.lists(_lines, max_size=8).map(b"".join), _ids)
def test_parse_item_returns_its_own_item_or_raises_our_error(data: bytes, name_id: str) -> None:
    """Any octets under any name give an item with exactly that id, or a DmaError."""
    try:
        item = parse_queue_item(data, name_id, "Q" + name_id)
    except DmaError:
        return
    assert item.id == name_id


@given(st.lists(st.sampled_from([
    b"ID: 66aa.0", b"Sender: a@b", b"Sender: <>\r", b"Recipient: r@x", b"Recipient: \"a,b\"@x\r",
    b"X-Attempts: 3", b"X-Last-Error: 451 later", b"ID: >17c0\r\xe2\x98\x83",
    b"Sender: " + b"a@x.example" * 100, b"X-Pad: " + b" " * 800, b"Sender: j\xe9r\xf4me@x",
]), max_size=8).map(lambda lines: b"\n".join(lines) + b"\n") | st.binary())
def test_what_parses_can_be_written_back(data: bytes) -> None:
    """Any Q file that parses renders back without error (a run would otherwise stop
    on it when it records a deferral), and reads back as the same item."""
    try:
        item = parse_queue_file(data, "Qfuzz")
    except DmaError:
        return
    assert parse_queue_file(render_queue_file(item), "Qfuzz") == item
