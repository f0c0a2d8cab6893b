"""auth.conf text -> ``AuthTable``; ``lookup`` finds the login for a host (SPEC 2.2).

One ``login|host:password`` a line, as the C dma reads it: the host ends at the
first ``:``, ``|``, space or tab, and the password is the whole rest of the line,
so it may hold ``:``, ``|`` and spaces.  The last matching line wins.  Unlike the
C dma, host matching ignores case (host names do) and a trailing CR is removed.

Passwords never reach a repr or an error message: error messages name the file
and line only.
"""

from __future__ import annotations

import re

from dma.core.errors import ConfigError, at
from dma.core.values import field, frozen

_HOST_END = re.compile(r"[:| \t]")


@frozen
class AuthEntry:
    """One auth.conf line: the SMTP AUTH login and password to use with ``host``."""

    login: str
    host: str
    password: str = field(repr=False)  # never in repr or logs


@frozen
class AuthTable:
    """The entries of auth.conf in file order."""

    entries: tuple[AuthEntry, ...] = ()


def parse_auth(text: str, path: str) -> AuthTable:
    """Read auth.conf ``text`` from ``path``; a bad line raises ConfigError naming path:line."""
    entries: list[AuthEntry] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t") or line.startswith("#"):
            continue
        entries.append(_parse_line(line, at(path, number)))
    return AuthTable(tuple(entries))


def lookup(table: AuthTable, host: str) -> AuthEntry | None:
    """Return the entry for ``host`` (the last matching line wins), or None.

    Case is ignored and so is one trailing dot, so an MX name from DNS
    (``mx.example.com.``) finds ``mx.example.com``.
    """
    wanted = _host_key(host)
    for entry in reversed(table.entries):
        if _host_key(entry.host) == wanted:
            return entry
    return None


def render_auth(table: AuthTable) -> str:
    """Write ``table`` as auth.conf text that ``parse_auth`` reads back to the same table.

    An entry no auth.conf line can express raises ConfigError (without its password).
    """
    lines = []
    for index, entry in enumerate(table.entries, start=1):
        line = f"{entry.login}|{entry.host}:{entry.password}"
        try:
            again = _parse_line(line, "")
        except ConfigError:
            again = None
        if (
            again != entry
            or "\n" in line
            or "\0" in line
            or line.startswith("#")
            or line.endswith("\r")
        ):
            raise ConfigError(
                f"auth entry {index} (login {entry.login!r}, host {entry.host!r}) "
                "cannot be written as an auth.conf line",
                hint="the login must not hold '|' or start with '#', the host must not hold "
                "':', '|' or blanks, and nothing may hold a line break",
            )
        lines.append(line + "\n")
    return "".join(lines)


def _host_key(host: str) -> str:
    return host.removesuffix(".").lower()


def _parse_line(line: str, where: str) -> AuthEntry:
    """Split ``login|host<sep>password``; errors never show the line (it holds a password)."""
    login, bar, rest = line.partition("|")
    if not bar:
        raise ConfigError(
            "the line has no '|' after the login",
            where=where,
            hint="write login|host:password",
        )
    end = _HOST_END.search(rest)
    if end is None:
        raise ConfigError(
            "the line has no ':' between the host and the password",
            where=where,
            hint="write login|host:password",
        )
    if "\0" in line:
        raise ConfigError(
            "the line holds a NUL character",
            where=where,
            hint="auth.conf is a text file: remove the NUL bytes",
        )
    return AuthEntry(login=login, host=rest[: end.start()], password=rest[end.end() :])
