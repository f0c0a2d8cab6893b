"""The aliases file: parse it into an ``AliasTable`` and expand local names (SPEC 2.3).

Unlike the C dma, destinations may be separated by blanks as well as commas (the
man page has always shown blanks), a name that lists itself keeps its own mailbox
(as in sendmail), a loop between names is an error naming it, and names match
case-insensitively.  ``|cmd``, ``/file`` and ``:include:`` destinations parse, so
one of them does not break all mail, but are refused when expansion reaches them:
dma never runs commands or writes arbitrary files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dma.core.addresses import split_address
from dma.core.errors import ConfigError, DataError, DmaError, NoUserError, at

WILDCARD = "*"
_BLANKS = " \t"
_SEPARATORS = " \t,"
_NO_RUN_HINT = "point the alias at a local user or a remote address"


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """One ``name: dest, ...`` line (with its continuations), as written."""

    name: str
    targets: tuple[str, ...]
    line: int


@dataclass(frozen=True, slots=True)
class AliasTable:
    """Every entry of one aliases file, in file order; lookups ignore case."""

    path: str = ""
    entries: tuple[AliasEntry, ...] = ()
    _index: dict[str, tuple[tuple[str, int], ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[tuple[str, int]]] = {}
        for entry in self.entries:
            pairs = index.setdefault(entry.name.lower(), [])
            pairs.extend((target, entry.line) for target in entry.targets)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})

    def targets_of(self, name: str) -> tuple[str, ...] | None:
        """Destinations of ``name`` (all its entries merged, no repeats); None if no alias."""
        pairs = self._index.get(name.lower())
        if pairs is None:
            return None
        return tuple(dict.fromkeys(target for target, _ in pairs))

    def _targets_with_lines(self, name: str) -> tuple[tuple[str, int], ...] | None:
        """Like ``targets_of`` but each destination with the line that lists it."""
        return self._index.get(name.lower())

    def _where(self, line: int) -> str:
        return at(self.path or "aliases", line)


# --- parsing -------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    """The entry being assembled while its continuation lines are read."""

    name: str
    line: int
    targets: list[str]


def parse_aliases(text: str, path: str) -> AliasTable:
    """Parse an aliases file; raise ConfigError naming ``path:line`` on a syntax error.

    A line starting with a blank, or following a line that ends in ``\\``, continues
    the entry above.  An empty line or a ``#`` line ends the entry, so an indented
    line after one is an error rather than a silent addition to the wrong alias.
    """
    entries: list[AliasEntry] = []
    pending: _Pending | None = None
    continued = False
    where_of = path or "aliases"

    def finish(entry: _Pending | None) -> None:
        if entry is None:
            return
        if not entry.targets:
            raise ConfigError(
                f"alias {entry.name!r} has no destination",
                where=at(where_of, entry.line),
                hint="write name: user, user@example.org",
            )
        entries.append(AliasEntry(entry.name, tuple(entry.targets), entry.line))

    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        where = at(where_of, number)
        _check_line_characters(line, where)
        is_continuation = continued or line[:1] in (" ", "\t")
        if is_continuation:
            targets, continued = _scan(line, where)
            if pending is None:
                if targets:
                    raise ConfigError(
                        "continuation line without an alias line before it",
                        where=where,
                        hint="an empty or # line ends an alias; start the line with name:",
                    )
                continue
            pending.targets.extend(targets)
            continue
        finish(pending)
        pending = None
        if not line or line.startswith("#"):
            continue
        name, rest = _split_name(line, where)
        targets, continued = _scan(rest, where)
        pending = _Pending(name, number, targets)
    finish(pending)
    return AliasTable(path, tuple(entries))


def _check_line_characters(line: str, where: str) -> None:
    for char in line:
        if (char < " " and char != "\t") or char == "\x7f":
            raise ConfigError(
                f"control character {char!r} in the aliases file",
                where=where,
                hint="remove it; an aliases file is plain text",
            )


def _split_name(line: str, where: str) -> tuple[str, str]:
    """Split a head line at its first ':' into the alias name and the rest."""
    colon = line.find(":")
    hash_mark = line.find("#")
    if colon < 0 or (0 <= hash_mark < colon):
        raise ConfigError(
            "no ':' after the alias name",
            where=where,
            hint="write name: destination, ...",
        )
    name = line[:colon].strip(_BLANKS)
    if not name:
        raise ConfigError("empty alias name before ':'", where=where, hint="write name: ...")
    for char in _SEPARATORS + '"':
        if char in name:
            raise ConfigError(
                f"alias name {name!r} contains {_describe(char)}",
                where=where,
                hint="an alias name is one word; separate destinations after the ':'",
            )
    return name, line[colon + 1 :]


def _describe(char: str) -> str:
    return {" ": "a blank", "\t": "a tab", ",": "a comma", '"': "a quote"}.get(char, repr(char))


def _scan(body: str, where: str) -> tuple[list[str], bool]:
    """Split destinations at commas and blanks up to a ``#`` comment.

    A ``"..."`` at the start of a destination quotes it whole (blanks, commas and
    ``#`` included).  Returns the destinations and whether the line ends in ``\\``.
    """
    found: list[tuple[str, bool]] = []
    position = 0
    length = len(body)
    commented = False
    while position < length:
        char = body[position]
        if char in _SEPARATORS:
            position += 1
        elif char == "#":
            commented = True
            break
        elif char == '"':
            end = body.find('"', position + 1)
            if end < 0:
                raise ConfigError(
                    "unterminated quoted destination", where=where, hint="close the '\"'"
                )
            quoted = body[position + 1 : end]
            if not quoted.strip(_BLANKS):
                raise ConfigError("empty quoted destination", where=where, hint="remove '\"\"'")
            found.append((quoted, True))
            position = end + 1
        else:
            end = position
            while end < length and body[end] not in _SEPARATORS and body[end] != "#":
                end += 1
            found.append((body[position:end], False))
            position = end
    continued = False
    if not commented and found and not found[-1][1] and found[-1][0].endswith("\\"):
        continued = True
        last = found.pop()[0][:-1]
        if last:
            found.append((last, False))
    return [_checked_target(text, where, quoted=quoted) for text, quoted in found], continued


def _checked_target(target: str, where: str, *, quoted: bool) -> str:
    """Reject destinations that can only be typing mistakes; keep refused kinds for later."""
    if is_refused_target(target):
        return target
    plain = target[1:] if target.startswith("\\") else target
    if not plain:
        raise ConfigError(f"empty destination {target!r}", where=where, hint="name a user")
    local, domain = split_address(plain)
    if not quoted and ":" in local:
        raise ConfigError(
            f"unexpected ':' in destination {target!r}",
            where=where,
            hint="put each alias on a line of its own",
        )
    if domain is not None and (not local or not domain):
        raise ConfigError(
            f"bad destination {target!r}",
            where=where,
            hint="write a local user or user@domain",
        )
    if target.startswith("\\") and domain is not None:
        raise ConfigError(
            f"bad destination {target!r}: '\\' marks a local mailbox",
            where=where,
            hint="write \\user without a domain",
        )
    return target




def is_refused_target(target: str) -> bool:
    """True for ``|command``, ``/file`` and ``:include:`` destinations, which dma never honours."""
    return target.startswith(("|", "/")) or target[:9].lower() == ":include:"


def refused_targets(table: AliasTable) -> tuple[str, ...]:
    """One message per refused destination, with ``path:line``, for ``newaliases`` to report."""
    return tuple(
        f"{table._where(entry.line)}: {_refusal(entry.name, target)}"
        for entry in table.entries
        for target in entry.targets
        if is_refused_target(target)
    )


def _refusal(name: str, target: str) -> str:
    kind = "runs a command" if target.startswith("|") else "writes a file"
    if target[:9].lower() == ":include:":
        kind = "includes a file"
    return f"alias {name!r} -> {target!r} {kind}: refused, dma never runs commands or writes files"


def table_problems(
    table: AliasTable,
    *,
    is_user: Callable[[str], bool],
    local_name: Callable[[str], str | None],
) -> tuple[str, ...]:
    """Every problem that would fail mail to some alias, each once, with ``path:line``.

    Refused destinations, loops, and names that lead nowhere (neither alias nor user),
    found by expanding each alias as a submission would: what ``newaliases`` reports,
    so that a broken file shows up when it is edited, not when mail bounces.
    """
    problems = dict.fromkeys(refused_targets(table))
    for entry in table.entries:
        try:
            expand_alias(entry.name, table, is_user=is_user, local_name=local_name,
                         wildcard=False)
        except DmaError as error:
            text = f"{error.where}: {error.message}" if error.where else error.message
            problems.setdefault(text)
    return tuple(problems)


# --- expansion -----------------------------------------------------------------------


@dataclass(slots=True)
class _Frame:
    """One alias being expanded: its name as reached, its lookup key, its destinations."""

    name: str
    key: str
    targets: Iterator[tuple[str, int]]


def expand_alias(
    name: str,
    table: AliasTable,
    *,
    is_user: Callable[[str], bool],
    local_name: Callable[[str], str | None],
    wildcard: bool = True,
) -> tuple[str, ...]:
    """Expand the local name ``name`` into final destinations, first seen first, no repeats.

    Results are local user names (no '@') and remote addresses.  ``local_name`` maps a
    destination to a local name (or None when it is remote), so ``root@localhost`` in
    the file expands like ``root``.  ``*`` catches a name no alias matches, only here at
    the top (``wildcard``), before the user check.  Raises NoUserError for a local name
    that is neither alias nor user and DataError for a loop or a refused destination.
    Iterative, so a long chain of aliases cannot exhaust the stack.
    """
    if table._targets_with_lines(name) is not None:
        start = name
    elif wildcard and table._targets_with_lines(WILDCARD) is not None:
        start = WILDCARD
    else:
        return (_require_user(name, is_user, None, table, 0),)

    results: dict[str, str] = {}
    expanded: set[str] = set()
    stack: list[_Frame] = []

    def add(destination: str) -> None:
        results.setdefault(_destination_key(destination), destination)

    def push(alias: str) -> None:
        pairs = table._targets_with_lines(alias) or ()
        stack.append(_Frame(alias, alias.lower(), iter(pairs)))

    push(start)
    while stack:
        frame = stack[-1]
        item = next(frame.targets, None)
        if item is None:
            stack.pop()
            expanded.add(frame.key)
            continue
        target, line = item
        if is_refused_target(target):
            raise DataError(
                _refusal(frame.name, target), where=table._where(line), hint=_NO_RUN_HINT
            )
        if target.startswith("\\"):
            add(_require_user(target[1:], is_user, frame.name, table, line))
            continue
        local = local_name(target)
        if local is None:
            add(target)
            continue
        key = local.lower()
        if key == frame.key:
            add(_require_user(local, is_user, frame.name, table, line))
        elif any(key == outer.key for outer in stack):
            names = [outer.name for outer in stack]
            first = [outer.key for outer in stack].index(key)
            loop = " -> ".join([*names[first:], local])
            raise DataError(
                f"alias loop: {loop}",
                where=table._where(line),
                hint="remove one of the references; a name may list itself to keep its mailbox",
            )
        elif key in expanded:
            continue
        elif table._targets_with_lines(local) is not None:
            push(local)
        else:
            add(_require_user(local, is_user, frame.name, table, line))
    return tuple(results.values())


def _destination_key(destination: str) -> str:
    """Identity of a destination: local names ignore case, remote domains ignore case."""
    local, domain = split_address(destination)
    if domain is None:
        return destination.lower()
    return f"{local}@{domain.lower()}"


def _require_user(
    name: str, is_user: Callable[[str], bool], via: str | None, table: AliasTable, line: int
) -> str:
    """Return the user name ``name`` denotes (trying it lower-cased too) or raise NoUserError."""
    if name and is_user(name):
        return name
    lowered = name.lower()
    if lowered != name and is_user(lowered):
        return lowered
    if via is None:
        raise NoUserError(
            f"{name!r} is neither a local user nor an alias",
            hint="check the spelling, or add an alias for it",
        )
    if via.lower() == name.lower():
        raise NoUserError(
            f"alias {via!r} lists itself, but {name!r} is not a local user",
            where=table._where(line),
            hint="a name may list itself only when it is a user with a mailbox",
        )
    raise NoUserError(
        f"{name!r} (from alias {via!r}) is neither a local user nor an alias",
        where=table._where(line),
        hint="fix the aliases file or create the user",
    )
