"""The README's configuration table documents every dma.conf key with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from dma.core.config import KEYS

README = Path(__file__).resolve().parent.parent / "README.md"
_ROW = re.compile(r"^\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \| (.+) \|$")


def _table() -> dict[str, tuple[str, str]]:
    """README rows of the configuration table: key -> (default, what it does)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows[match.group(1)] = (match.group(3).strip(), match.group(4).strip())
    return rows


def test_every_key_is_in_the_readme_table() -> None:
    """Each key the parser knows has a row, and the table names no key it does not know."""
    assert set(_table()) == set(KEYS)


def test_readme_rows_match_the_parser() -> None:
    """Each row's default and description are the ones the key's specification gives."""
    table = _table()
    for name, spec in KEYS.items():
        assert table[name][0] == spec.default, name
        assert table[name][1] == spec.doc.replace("|", "&#124;"), name
