"""auth.conf parsing and lookup: the C dma's format, case-insensitive hosts, no leaks."""

from __future__ import annotations

import pytest

from dma.core import sysexits
from dma.core.authconf import AuthEntry, AuthTable, lookup, parse_auth, render_auth
from dma.core.errors import ConfigError

PATH = "/etc/dma/auth.conf"


def only_entry(line: str) -> AuthEntry:
    table = parse_auth(line + "\n", PATH)
    assert len(table.entries) == 1
    return table.entries[0]


@pytest.mark.parametrize(
    ("line", "login", "host", "password"),
    [
        ("user|host:secret", "user", "host", "secret"),
        ("user|host pass word", "user", "host", "pass word"),
        ("user|host\tpw", "user", "host", "pw"),
        ("user|host|pw", "user", "host", "pw"),
        ("user|host:pa:ss|w rd ", "user", "host", "pa:ss|w rd "),
        ("user@example.com|smtp.example.com:pw", "user@example.com", "smtp.example.com", "pw"),
        ("u|:p", "u", "", "p"),
        ("u|h:", "u", "h", ""),
        ("  user|h:p", "  user", "h", "p"),
        ("user|h:#not a comment", "user", "h", "#not a comment"),
    ],
)
def test_line_format(line: str, login: str, host: str, password: str) -> None:
    """login|host<sep>password splits as in the C dma; the password is the whole rest."""
    assert only_entry(line) == AuthEntry(login=login, host=host, password=password)


def test_comments_and_blank_lines_are_skipped() -> None:
    """Lines starting with '#' and empty or blank lines give no entries."""
    text = "# comment\n\n   \n\t\n#u|h:p\nu|h:p\n"
    assert parse_auth(text, PATH) == AuthTable((AuthEntry("u", "h", "p"),))


def test_empty_file() -> None:
    """An empty auth.conf gives an empty table."""
    assert parse_auth("", PATH) == AuthTable()


def test_trailing_cr_is_removed() -> None:
    """A CRLF file gives the same passwords as an LF file (the C dma keeps the CR)."""
    assert parse_auth("u|h:pw\r\nv|g:x\r\n", PATH) == parse_auth("u|h:pw\nv|g:x\n", PATH)


def test_line_without_bar() -> None:
    """A line without '|' is an error naming path:line and not echoing the password."""
    with pytest.raises(ConfigError) as caught:
        parse_auth("# c\nu|h:ok\nuser host:hunter2\n", PATH)
    error = caught.value
    assert error.where == f"{PATH}:3"
    assert error.message == "the line has no '|' after the login"
    assert error.hint == "write login|host:password"
    assert error.exit_code == sysexits.EX_CONFIG
    assert "hunter2" not in str(error)


def test_line_without_separator() -> None:
    """A line with no separator after the host is an error naming path:line."""
    with pytest.raises(ConfigError) as caught:
        parse_auth("user|hostsecretpw\n", PATH)
    error = caught.value
    assert error.where == f"{PATH}:1"
    assert error.message == "the line has no ':' between the host and the password"
    assert "secretpw" not in str(error)


def test_nul_is_an_error() -> None:
    """A NUL character in a line is an error naming path:line."""
    with pytest.raises(ConfigError) as caught:
        parse_auth("u|h:p\0w\n", PATH)
    assert caught.value.where == f"{PATH}:1"
    assert "NUL" in caught.value.message


def test_password_not_in_repr() -> None:
    """Neither an entry's nor a table's repr shows the password."""
    table = parse_auth("user|host:hunter2\n", PATH)
    assert "hunter2" not in repr(table)
    assert "hunter2" not in repr(table.entries[0])
    assert "hunter2" not in str(table.entries[0])


def test_last_matching_line_wins() -> None:
    """When several lines name the host, lookup returns the last one."""
    table = parse_auth("a|h:1\nb|h:2\nc|other:3\n", PATH)
    assert lookup(table, "h") == AuthEntry("b", "h", "2")
    assert lookup(table, "other") == AuthEntry("c", "other", "3")


def test_lookup_is_case_insensitive() -> None:
    """Host matching ignores case on both sides."""
    table = parse_auth("u|Smtp.Example.COM:pw\n", PATH)
    assert lookup(table, "smtp.example.com") == table.entries[0]
    assert lookup(table, "SMTP.EXAMPLE.COM") == table.entries[0]


def test_lookup_ignores_trailing_dot() -> None:
    """A fully qualified MX name with a trailing dot finds its entry."""
    table = parse_auth("u|mx.example.com:pw\n", PATH)
    assert lookup(table, "mx.example.com.") == table.entries[0]


def test_lookup_misses() -> None:
    """A host without a line, or only a prefix of one, finds nothing."""
    table = parse_auth("u|mx.example.com:pw\n", PATH)
    assert lookup(table, "example.com") is None
    assert lookup(table, "mx.example.com.evil") is None
    assert lookup(AuthTable(), "mx.example.com") is None


def test_render_round_trip() -> None:
    """render_auth writes lines that parse back to the same table."""
    table = AuthTable(
        (AuthEntry("u", "h", "p w:|x "), AuthEntry("a@b", "mx", ""), AuthEntry("x", "", "y"))
    )
    text = render_auth(table)
    assert text == "u|h:p w:|x \na@b|mx:\nx|:y\n"
    assert parse_auth(text, PATH) == table


@pytest.mark.parametrize(
    "entry",
    [
        AuthEntry("a|b", "h", "topsecret"),
        AuthEntry("#a", "h", "topsecret"),
        AuthEntry("a", "h:x", "topsecret"),
        AuthEntry("a", "h x", "topsecret"),
        AuthEntry("a", "h", "topsecret\n"),
        AuthEntry("a", "h", "topsecret\r"),
        AuthEntry("a\nb", "h", "topsecret"),
    ],
)
def test_render_refuses_unwritable_entries(entry: AuthEntry) -> None:
    """render_auth raises ConfigError for an entry no line can express, without its password."""
    with pytest.raises(ConfigError, match="cannot be written") as caught:
        render_auth(AuthTable((entry,)))
    assert "topsecret" not in str(caught.value)
