"""Maildir unique names and the size suffix (SPEC 5.2)."""

from __future__ import annotations

import re

import pytest

from dma.core.errors import SoftwareError
from dma.core.maildir import maildir_filename, with_size


def test_filename_modern_rule() -> None:
    """The name is ``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>``."""
    name = maildir_filename(1795582274, 169757, 7682, 3, "mx.example.org", "321f05878959bc3a")
    assert name == "1795582274.M169757P7682Q3R321f05878959bc3a.mx.example.org"


def test_filename_escapes_slash_and_colon_in_host() -> None:
    """``/`` and ``:`` in the host name become ``\\057`` and ``\\072``."""
    name = maildir_filename(1, 2, 3, 4, "a/b:c", "ff")
    assert name.endswith(".a\\057b\\072c")
    assert "/" not in name and ":" not in name


def test_filename_lowercases_random_part() -> None:
    """The random part is written in lower case whatever case it came in."""
    assert "Rabcdef." in maildir_filename(1, 2, 3, 4, "h", "ABCDEF")


def test_filenames_differ_in_each_ingredient() -> None:
    """Changing any one ingredient changes the name, so none is dropped."""
    base = (10, 20, 30, 40, "host", "abcd")
    names = {maildir_filename(*base)}
    for index, other in enumerate((11, 21, 31, 41, "host2", "abce")):
        varied = list(base)
        varied[index] = other
        names.add(maildir_filename(*varied))  # type: ignore[arg-type]
    assert len(names) == 7


def test_filename_microseconds_not_padded() -> None:
    """Microseconds are written as a plain number, as the reference rule shows."""
    assert re.fullmatch(r"5\.M7P1Q1Rab\.h", maildir_filename(5, 7, 1, 1, "h", "ab"))


@pytest.mark.parametrize(
    "args",
    [
        (-1, 0, 1, 1, "h", "ab"),
        (1, -1, 1, 1, "h", "ab"),
        (1, 1_000_000, 1, 1, "h", "ab"),
        (1, 0, -1, 1, "h", "ab"),
        (1, 0, 1, -1, "h", "ab"),
        (1, 0, 1, 1, "", "ab"),
        (1, 0, 1, 1, "h\x00", "ab"),
        (1, 0, 1, 1, "h", ""),
        (1, 0, 1, 1, "h", "xyz"),
        (1, 0, 1, 1, "h", "ab/"),
    ],
)
def test_filename_rejects_bad_ingredients(args: tuple[int, int, int, int, str, str]) -> None:
    """Out-of-range numbers, an empty or NUL host and a non-hex random part are our bug."""
    with pytest.raises(SoftwareError):
        maildir_filename(*args)


def test_with_size() -> None:
    """The name in new/ carries ``,S=<size>``."""
    assert with_size("1.M2P3Q4R5.h", 1234) == "1.M2P3Q4R5.h,S=1234"
    assert with_size("n", 0) == "n,S=0"


def test_with_size_rejects_negative() -> None:
    """A negative size is our bug and raises SoftwareError."""
    with pytest.raises(SoftwareError):
        with_size("n", -1)
