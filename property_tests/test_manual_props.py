"""Properties of --help parsing and of the manual's roff text."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.cmdline import HELP_OPTION, Mode, parse_command_line
from dma.core.manual import _prose

_PROGRAMS = st.sampled_from(["dma", "sendmail", "mailq", "newaliases", "/usr/sbin/sendmail"])


@settings(max_examples=200, deadline=None)
@given(program=_PROGRAMS, words=st.lists(st.text(max_size=10), max_size=6))
def test_help_first_wins_over_anything_after_it(program: str, words: list[str]) -> None:
    """`--help` as the first argument asks for help whatever follows, under every name."""
    assert parse_command_line([program, HELP_OPTION, *words]).mode is Mode.HELP


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(list(".'\\- \t")),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(text=_TEXT)
def test_prose_is_safe_roff(text: str) -> None:
    """Any text becomes ASCII roff lines that start no request, keep every word, and stay
    within 80 bytes unless one word is longer."""
    lines = _prose(text)
    for line in lines:
        assert not line.startswith((".", "'")), line
        assert line.isascii() and "\n" not in line
        if len(line.encode()) > 80:
            assert " " not in line.removesuffix(r"\&"), line
    # Undo our markup: every word of the input is there, in order.
    plain = " ".join(lines)
    plain = re.sub(r"\\f[BIR]|\\%|\\&", "", plain).replace(r"\-", "-")
    plain = re.sub(r"\\\[u([0-9A-F]+)\]", lambda m: chr(int(m.group(1), 16)), plain)
    plain = plain.replace(r"\e", "\\")
    assert plain.split() == text.split()
