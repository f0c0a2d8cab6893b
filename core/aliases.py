"""The aliases file: parse it into an ``AliasTable`` and expand local names (SPEC 2.3).

Unlike the C dma, destinations may be separated by blanks as well as commas (the
man page has always shown blanks), a name that lists itself keeps its own mailbox
(as in sendmail), a loop between names is an error naming it, and names match
case-insensitively.  ``|cmd``, ``/file`` and ``:include:`` destinations parse, so
one of them does not break all mail, but are refused when expansion reaches them:
dma never runs commands or writes arbitrary files.

Destinations are split at commas and blanks outside double quotes, so an address
with a quoted local part (``"j d"@example.de``, ``"a,b"@example.de``) is one
destination, kept as written: the form RCPT TO needs.  A destination quoted whole
(``"|prog a"``, ``"jd"``) is its content, as in sendmail.

Checking a file (``table_problems``) visits each alias once and each destination
once, and one expansion visits each alias it reaches once: both are linear in the
size of the file, and iterative, so no chain is too long for the stack.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from dma.core.addresses import parse_envelope_address, split_address, unquoted_positions
from dma.core.errors import ConfigError, DataError, DmaError, NoUserError, at
from dma.core.values import field, frozen, mutable

WILDCARD = "*"
_BLANKS = " \t"
_SEPARATORS = " \t,"
_NO_RUN_HINT = "point the alias at a local user or a remote address"
_LOOP_HINT = "remove one of the references; a name may list itself to keep its mailbox"
_LOOP_NAMES_SHOWN = 20  # a longer loop is named by its first and last names
_BLACK = -1  # walk state of an alias walked to its end (a grey one has its stack index)


@frozen
class AliasEntry:
    """One ``name: dest, ...`` line (with its continuations), as written."""

    name: str
    targets: tuple[str, ...]
    line: int


@frozen
class AliasTable:
    """Every entry of one aliases file, in file order; lookups ignore case."""

    path: str = ""
    entries: tuple[AliasEntry, ...] = ()
    _index: dict[str, tuple[tuple[str, int, str], ...]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        index: dict[str, list[tuple[str, int, str]]] = {}
        for entry in self.entries:
            listed = index.setdefault(entry.name.lower(), [])
            listed.extend((target, entry.line, entry.name) for target in entry.targets)
        object.__setattr__(self, "_index", {k: tuple(v) for k, v in index.items()})

    def targets_of(self, name: str) -> tuple[str, ...] | None:
        """Destinations of ``name`` (all its entries merged, no repeats); None if no alias."""
        listed = self._index.get(name.lower())
        if listed is None:
            return None
        return tuple(dict.fromkeys(target for target, _, _ in listed))

    def _listed(self, name: str) -> tuple[tuple[str, int, str], ...] | None:
        """Like ``targets_of`` but each destination with the line that lists it and the
        alias name as that line writes it; repeats kept."""
        return self._index.get(name.lower())

    def _where(self, line: int) -> str:
        return at(self.path or "aliases", line)


# --- parsing -------------------------------------------------------------------------


@mutable
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
    """Split destinations at commas and blanks outside quotes, up to a ``#`` comment.

    Quotes follow RFC 5321/5322 (``unquoted_positions``): commas, blanks and ``#``
    inside ``"..."`` belong to the destination, and ``\\"`` inside quotes does not
    close them.  Returns the destinations and whether the line ends in ``\\``.
    """
    if '"' not in body:  # the common case, without the character by character scan
        comment = body.find("#")
        commented = comment >= 0
        listed = body[:comment] if commented else body
        found = [text for text in listed.replace("\t", " ").replace(",", " ").split(" ") if text]
    else:
        found, commented = _scan_quoted(body, where)
    continued = False
    if not commented and found and found[-1].endswith("\\"):
        continued = True
        last = found.pop()[:-1]
        if last:
            found.append(last)
    return [_checked_target(text, where) for text in found], continued


def _scan_quoted(body: str, where: str) -> tuple[list[str], bool]:
    """The destinations of a ``body`` holding quotes, and whether a comment ends it."""
    stops, open_quote = unquoted_positions(body, _SEPARATORS + "#")
    end = len(body)
    commented = False
    cuts: list[int] = []
    for stop in stops:
        if body[stop] == "#":
            end, commented = stop, True
            break
        cuts.append(stop)
    if open_quote and not commented:
        raise ConfigError("unterminated quoted destination", where=where, hint="close the '\"'")
    found: list[str] = []
    start = 0
    for cut in (*cuts, end):
        if cut > start:
            found.append(body[start:cut])
        start = cut + 1
    return found, commented


def _checked_target(text: str, where: str) -> str:
    """The destination ``text`` denotes: a whole ``"..."`` gives its content, any other
    text stays as written.  Rejects what can only be a typing mistake; keeps refused
    kinds for later."""
    if text[:1] == '"' and _closes_at_end(text):
        content = text[1:-1]
        if not content.strip(_BLANKS):
            raise ConfigError("empty quoted destination", where=where, hint="remove '\"\"'")
        return _checked_destination(content, where, quoted=True)
    return _checked_destination(text, where, quoted=False)


def _closes_at_end(text: str) -> bool:
    """True when the quoted string opening ``text`` closes at its last character."""
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index == len(text) - 1
    return False


def _checked_destination(target: str, where: str, *, quoted: bool) -> str:
    if is_refused_target(target):
        return target
    plain = target[1:] if target.startswith("\\") else target
    if not plain:
        raise ConfigError(f"empty destination {target!r}", where=where, hint="name a user")
    try:
        if '"' in plain and not quoted:  # a quoted local part: the whole must be an address
            parse_envelope_address(plain)
        local, domain = split_address(plain)
    except DataError as error:
        raise ConfigError(
            f"bad destination {target!r}: {error.message}",
            where=where,
            hint='write an address RCPT TO takes; quote a local part whole: "j d"@example.org',
        ) from None
    if not quoted and ":" in local and unquoted_positions(local, ":")[0]:
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
    """Every problem that would fail mail to some alias, each once, with ``path:line``,
    in the order of the lines: what ``newaliases`` reports, so that a broken file shows
    up when it is edited, not when mail bounces.

    Refused destinations, names that lead nowhere (neither alias nor user, or an alias
    listing itself that is no user) and loops between names.  Every destination of
    every alias is checked, also those that an expansion would not reach because an
    earlier one fails.  Loops are found by one depth-first walk over all aliases
    (white, grey, black): each reference back to an alias still being walked closes a
    loop and is reported once, at its line, naming the loop.  Each alias and each
    destination is looked at once, so the time grows with the size of the file.
    """
    found: dict[str, tuple[int, int]] = {}  # problem -> (line, position): first seen, sorted

    def note(text: str, line: int, position: int) -> None:
        found.setdefault(text, (line, position))

    def note_error(error: DmaError, line: int, position: int) -> None:
        where = error.where or table._where(line)
        note(f"{where}: {error.message}", line, position)

    state: dict[str, int] = {}  # alias key -> its stack index while grey, _BLACK when done
    stack: list[_Frame] = []

    def push(alias: str, key: str) -> None:
        state[key] = len(stack)
        stack.append(_Frame(alias, key, iter(enumerate(table._listed(key) or ()))))

    for entry in table.entries:
        if entry.name.lower() in state:
            continue
        push(entry.name, entry.name.lower())
        while stack:
            frame = stack[-1]
            item = next(frame.targets, None)
            if item is None:
                stack.pop()
                state[frame.key] = _BLACK
                continue
            position, (target, line, via) = item
            try:
                local = _check_destination(
                    target, line, via, frame.key, table, is_user=is_user, local_name=local_name
                )
            except DmaError as error:
                note_error(error, line, position)
                continue
            if local is None:
                continue
            key = local.lower()
            index = state.get(key)
            if index is None:
                push(local, key)
            elif index != _BLACK:
                note(f"{table._where(line)}: {_loop_message(stack, index, local)}", line, position)
    return tuple(sorted(found, key=found.__getitem__))


def _check_destination(
    target: str,
    line: int,
    via: str,
    key: str,
    table: AliasTable,
    *,
    is_user: Callable[[str], bool],
    local_name: Callable[[str], str | None],
) -> str | None:
    """Destination ``target`` of alias ``via`` (lookup key ``key``, at ``line``) checked on
    its own: the local name of another alias it leads to, or None when it ends here.
    Raises what expansion raises for it (refused, no such user)."""
    if is_refused_target(target):
        raise DataError(_refusal(via, target), where=table._where(line), hint=_NO_RUN_HINT)
    if target.startswith("\\"):
        _require_user(target[1:], is_user, via, table, line)
        return None
    local = local_name(target)
    if local is None:
        return None
    if local.lower() == key or table._listed(local) is None:
        _require_user(local, is_user, via, table, line)
        return None
    return local


# --- expansion -----------------------------------------------------------------------


@mutable
class _Frame:
    """One alias being walked: its name as reached, its lookup key, its destinations."""

    name: str
    key: str
    targets: Iterator[tuple[int, tuple[str, int, str]]]


def _loop_message(stack: list[_Frame], first: int, closing: str) -> str:
    """``alias loop: a -> b -> a`` for the names on ``stack`` from ``first`` on, then
    ``closing``; a loop of more than _LOOP_NAMES_SHOWN names shows its two ends and how
    many are left out, and only those are looked at."""
    count = len(stack) - first + 1
    if count <= _LOOP_NAMES_SHOWN:
        names = [frame.name for frame in stack[first:]]
    else:
        half = _LOOP_NAMES_SHOWN // 2
        names = [
            *(frame.name for frame in stack[first : first + half]),
            f"... ({count - 2 * half} more) ...",
            *(frame.name for frame in stack[len(stack) - half + 1 :]),
        ]
    return f"alias loop: {' -> '.join([*names, closing])}"


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
    that is neither alias nor user and DataError for a loop or a refused destination:
    the first such problem in the walk's order.  Time grows with the number of aliases
    and destinations reached, each looked at once (see ``AliasExpander``).
    """
    expander = AliasExpander(table, is_user=is_user, local_name=local_name)
    return expander.expand(name, wildcard=wildcard)


class AliasExpander:
    """Expands the local names of one submission against one table.

    A depth-first walk with colours: an alias on the walk's stack (grey) reached again
    is a loop; one walked to its end (black) is skipped, its destinations being given
    already.  Black aliases stay black from one ``expand`` to the next, so a second
    name leading into aliases that an earlier name walked does not walk them again:
    the recipients of a whole submission cost one walk of the aliases they reach,
    however many share them.  Iterative, so no chain of aliases is too long.
    """

    def __init__(
        self,
        table: AliasTable,
        *,
        is_user: Callable[[str], bool],
        local_name: Callable[[str], str | None],
    ) -> None:
        self._table = table
        self._is_user = is_user
        self._local_name = local_name
        self._state: dict[str, int] = {}  # alias key -> its stack index while grey, or _BLACK

    def expand(self, name: str, *, wildcard: bool = True) -> tuple[str, ...]:
        """The destinations of ``name`` as ``expand_alias`` gives them, less those of the
        aliases that an earlier call of this expander walked to their end (that call gave
        them).  An error is the one ``expand_alias`` raises for ``name``."""
        table, is_user, state = self._table, self._is_user, self._state
        if table._listed(name) is not None:
            start = name
        elif wildcard and table._listed(WILDCARD) is not None:
            start = WILDCARD
        else:
            return (_require_user(name, is_user, None, table, 0),)
        if state.get(start.lower()) == _BLACK:
            return ()

        results: dict[str, str] = {}
        stack: list[_Frame] = []
        walked: list[str] = []  # the aliases this call colours, white again if it fails

        def add(destination: str) -> None:
            results.setdefault(_destination_key(destination), destination)

        def push(alias: str, key: str) -> None:
            state[key] = len(stack)
            walked.append(key)
            stack.append(_Frame(alias, key, iter(enumerate(table._listed(key) or ()))))

        push(start, start.lower())
        try:
            while stack:
                frame = stack[-1]
                item = next(frame.targets, None)
                if item is None:
                    stack.pop()
                    state[frame.key] = _BLACK
                    continue
                _, (target, line, _) = item
                if is_refused_target(target):
                    raise DataError(
                        _refusal(frame.name, target), where=table._where(line), hint=_NO_RUN_HINT
                    )
                if target.startswith("\\"):
                    add(_require_user(target[1:], is_user, frame.name, table, line))
                    continue
                local = self._local_name(target)
                if local is None:
                    add(target)
                    continue
                key = local.lower()
                index = state.get(key)
                if key == frame.key:
                    add(_require_user(local, is_user, frame.name, table, line))
                elif index == _BLACK:
                    continue
                elif index is not None:
                    raise DataError(
                        _loop_message(stack, index, local), where=table._where(line),
                        hint=_LOOP_HINT,
                    )
                elif table._listed(local) is not None:
                    push(local, key)
                else:
                    add(_require_user(local, is_user, frame.name, table, line))
        except BaseException:  # its destinations were not given: walk them again for another name
            for key in walked:
                del state[key]
            raise
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
