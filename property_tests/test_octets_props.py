"""Properties of core/octets: any octets read with surrogateescape go back out unchanged,
and what we show of any text is one clean UTF-8 line."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dma.core.octets import is_utf8, printable, wire_octets


@given(st.binary())
def test_wire_octets_give_back_the_octets_a_file_held(data: bytes) -> None:
    """Octets decoded as UTF-8 with surrogateescape encode back to exactly themselves."""
    assert wire_octets(data.decode("utf-8", "surrogateescape")) == data


@given(st.binary())
def test_is_utf8_says_whether_the_octets_were_utf8(data: bytes) -> None:
    """is_utf8 of the decoded text is True exactly when the octets are valid UTF-8."""
    try:
        data.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    assert is_utf8(data.decode("utf-8", "surrogateescape")) is valid


@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_printable_is_one_clean_utf8_line(text: str) -> None:
    """printable never raises, always encodes as strict UTF-8, and holds no C0 control
    character or DEL (so it can neither split nor break a log line)."""
    shown = printable(text)
    shown.encode("utf-8")
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in shown)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_printable_leaves_printable_ascii_alone(text: str) -> None:
    """Printable ASCII is shown as it is."""
    assert printable(text) == text


@given(st.text())
def test_wire_octets_never_raise_even_on_lone_surrogates(text: str) -> None:
    """Any str, lone surrogates of any kind included, gives octets without raising."""
    assert isinstance(wire_octets(text), bytes)
