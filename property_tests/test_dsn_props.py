"""Properties of core/dsn: what the ENVID check accepts is sendable, xtext is reversible."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from dma.core.dsn import ENVID_MAX, envid_problem, notify_problem, ret_problem, xtext

_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")


def _unxtext(value: str) -> bytes:
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value).encode(
        "latin-1")


@given(st.text())
def test_an_accepted_envid_fits_the_wire(value: str) -> None:
    """An ENVID with no problem is printable ASCII and at most 100 characters as xtext."""
    if envid_problem(value) is None:
        assert value.isascii() and value.isprintable() and " " not in value
        assert 0 < len(xtext(value)) <= ENVID_MAX


@given(st.text())
def test_xtext_is_xtext_and_decodes_back(value: str) -> None:
    """xtext output matches RFC 3461's grammar and decodes to the value's UTF-8 octets."""
    encoded = xtext(value)
    assert _XTEXT.fullmatch(encoded)
    assert _unxtext(encoded) == value.encode("utf-8", "surrogatepass")


@given(st.text())
def test_dsn_checks_never_raise(value: str) -> None:
    """The three checks answer None or a reason for any text."""
    for check in (envid_problem, notify_problem, ret_problem):
        assert check(value) is None or isinstance(check(value), str)


def test_envid_of_plus_signs_is_measured_encoded() -> None:
    """33 '+' (99 once encoded) pass; 34 (102) do not: the limit is on the wire form."""
    assert envid_problem("+" * 33) is None
    assert envid_problem("+" * 34) is not None
