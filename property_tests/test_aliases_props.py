"""Properties of the aliases parser and of alias expansion."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from functools import partial
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.addresses import is_valid_mailbox
from dma.core.aliases import (
    WILDCARD,
    AliasEntry,
    AliasExpander,
    AliasTable,
    expand_alias,
    is_refused_target,
    parse_aliases,
    table_problems,
)
from dma.core.envelope import local_name
from dma.core.errors import ConfigError, DataError, DmaError, NoUserError, at

NAMES = ("a", "b", "c", "d", "e", "root")
USERS = frozenset({"root", "u1", "u2", "c", "d", "e"})


def ours(address: str) -> str | None:
    """Local-name test for generated tables: bare names and @localhost."""
    local, sign, domain = address.rpartition("@")
    if not sign:
        return address
    return local if domain.lower() == "localhost" else None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab :,#\t\n\r\\"|/@*\x00x'), max_size=60))
def test_any_text_parses_or_raises_ours(text: str) -> None:
    """Any text gives an AliasTable or a DmaError, never another exception."""
    try:
        table = parse_aliases(text, "aliases")
    except DmaError:
        return
    assert isinstance(table, AliasTable)
    for entry in table.entries:
        assert entry.name and entry.targets


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_any_unicode_parses_or_raises_ours(text: str) -> None:
    """Arbitrary unicode gives an AliasTable or a DmaError, never another exception."""
    try:
        parse_aliases(text, "aliases")
    except DmaError:
        pass


WORD = st.text(alphabet="abcxyzABC019._-+", min_size=1, max_size=8)
TARGET = st.one_of(WORD, st.builds(lambda u, d: f"{u}@{d}", WORD, WORD))
ENTRY = st.tuples(WORD, st.lists(TARGET, min_size=1, max_size=5))


@st.composite
def rendered(draw: st.DrawFn) -> tuple[str, list[tuple[str, list[str]]]]:
    """A file written with a random mix of separators, continuations and comments."""
    entries = draw(st.lists(ENTRY, max_size=6))
    lines: list[str] = []
    for name, targets in entries:
        if draw(st.booleans()):
            lines.append("# comment: x, y")
        text = f"{name}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{targets[0]}"
        for target in targets[1:]:
            separator = draw(st.sampled_from([", ", ",", " ", "\t", ",\n  ", "\n\t", " \\\n"]))
            text += separator + target
        if draw(st.booleans()):
            text += "  # trailing"
        lines.append(text)
    return "\n".join(lines) + "\n", entries


@settings(max_examples=200, deadline=None)
@given(rendered())
def test_rendered_file_round_trips(case: tuple[str, list[tuple[str, list[str]]]]) -> None:
    """Entries written with any separator mix parse back to the same names and targets."""
    text, entries = case
    table = parse_aliases(text, "aliases")
    assert [(e.name, list(e.targets)) for e in table.entries] == entries


NAME_REF = st.sampled_from(NAMES).flatmap(
    lambda n: st.sampled_from([n, n.upper(), f"{n}@localhost", f"{n}@LOCALHOST"])
)
GRAPH_TARGET = st.one_of(
    NAME_REF,
    NAME_REF,
    st.sampled_from(["u1", "U2", "x@remote.example", "x@REMOTE.example", "y@remote.example"]),
    st.just("u3"),
)


@st.composite
def tables(draw: st.DrawFn) -> AliasTable:
    """Small alias graphs over a few names: loops, diamonds, self references, unknowns."""
    names = draw(st.lists(st.sampled_from((*NAMES, "*")), max_size=6))
    entries = tuple(
        AliasEntry(name, tuple(draw(st.lists(GRAPH_TARGET, min_size=1, max_size=4))), line)
        for line, name in enumerate(names, start=1)
    )
    return AliasTable("aliases", entries)


def reference(name: str, table: AliasTable, path: tuple[str, ...]) -> list[str]:
    """Plain recursive expansion without memoisation, to compare with expand_alias."""
    found: list[str] = []
    for target in table.targets_of(name) or ():
        local = ours(target)
        if local is None:
            found.append(target)
        elif local.lower() == name.lower():
            found.append(user(local, name))
        elif local.lower() in path:
            loop = " -> ".join([*path[path.index(local.lower()) :], local.lower()])
            raise DataError(f"alias loop: {loop}")
        elif table.targets_of(local) is not None:
            found.extend(reference(local, table, (*path, local.lower())))
        else:
            found.append(user(local, name))
    return found


def user(name: str, via: str) -> str:
    for candidate in (name, name.lower()):
        if candidate in USERS:
            return candidate
    raise NoUserError(f"{name} via {via}")


def first_seen(items: list[str]) -> tuple[str, ...]:
    keyed: dict[str, str] = {}
    for item in items:
        local, sign, domain = item.rpartition("@")
        keyed.setdefault(f"{local}@{domain.lower()}" if sign else item.lower(), item)
    return tuple(keyed.values())


@settings(max_examples=200, deadline=None)
@given(tables(), st.sampled_from((*NAMES, "u1", "zz")))
def test_expansion_terminates_with_final_destinations(table: AliasTable, name: str) -> None:
    """Expansion ends; every local result is a user and no alias, unless it lists itself."""
    try:
        result = expand_alias(name, table, is_user=USERS.__contains__, local_name=ours)
    except (DataError, NoUserError):
        return
    assert len(first_seen(list(result))) == len(result)
    for destination in result:
        if "@" in destination:
            continue
        assert destination in USERS
        targets = table.targets_of(destination)
        if targets is not None:
            assert any((ours(t) or "").lower() == destination.lower() for t in targets)


@settings(max_examples=200, deadline=None)
@given(tables().filter(lambda t: bool(t.entries)), st.data())
def test_expansion_matches_plain_recursion(table: AliasTable, data: st.DataObject) -> None:
    """The iterative, memoised expansion agrees with naive recursion, errors included."""
    name = data.draw(st.sampled_from([e.name for e in table.entries if e.name != "*"] or ["a"]))
    if table.targets_of(name) is None:
        return
    try:
        expected: tuple[str, ...] | type[Exception] = first_seen(
            reference(name, table, (name.lower(),))
        )
    except (DataError, NoUserError) as error:
        expected = type(error)
    try:
        actual: tuple[str, ...] | type[Exception] = expand_alias(
            name, table, is_user=USERS.__contains__, local_name=ours
        )
    except (DataError, NoUserError) as error:
        actual = type(error)
    assert actual == expected


@settings(max_examples=200, deadline=None)
@given(tables())
def test_table_problems_agree_with_expansion(table: AliasTable) -> None:
    """A table has no reported problems exactly when every alias in it expands cleanly."""
    problems = table_problems(table, is_user=USERS.__contains__, local_name=ours)
    assert all(isinstance(problem, str) and problem for problem in problems)
    assert len(set(problems)) == len(problems)
    clean = True
    for entry in table.entries:
        try:
            expand_alias(entry.name, table, is_user=USERS.__contains__, local_name=ours,
                         wildcard=False)
        except DmaError:
            clean = False
    assert clean == (not problems)


# --- the expansion and check of commit ff673ac, kept as the reference ----------------
# (quadratic: the check expanded every alias again, and a loop test scanned the stack)


def _old_listed(table: AliasTable, name: str) -> list[tuple[str, int]] | None:
    listed = [
        (target, entry.line)
        for entry in table.entries
        if entry.name.lower() == name.lower()
        for target in entry.targets
    ]
    return listed or None


def _old_refusal(name: str, target: str) -> str:
    kind = "runs a command" if target.startswith("|") else "writes a file"
    if target[:9].lower() == ":include:":
        kind = "includes a file"
    return f"alias {name!r} -> {target!r} {kind}: refused, dma never runs commands or writes files"


def _old_require_user(
    name: str, is_user: Callable[[str], bool], via: str | None, table: AliasTable, line: int
) -> str:
    if name and is_user(name):
        return name
    if name.lower() != name and is_user(name.lower()):
        return name.lower()
    where = at(table.path or "aliases", line)
    if via is None:
        raise NoUserError(
            f"{name!r} is neither a local user nor an alias",
            hint="check the spelling, or add an alias for it",
        )
    if via.lower() == name.lower():
        raise NoUserError(
            f"alias {via!r} lists itself, but {name!r} is not a local user",
            where=where,
            hint="a name may list itself only when it is a user with a mailbox",
        )
    raise NoUserError(
        f"{name!r} (from alias {via!r}) is neither a local user nor an alias",
        where=where,
        hint="fix the aliases file or create the user",
    )


def _old_key(destination: str) -> str:
    local, sign, domain = destination.rpartition("@")
    return f"{local}@{domain.lower()}" if sign else destination.lower()


def old_expand(
    name: str,
    table: AliasTable,
    *,
    is_user: Callable[[str], bool],
    local_name: Callable[[str], str | None],
    wildcard: bool = True,
) -> tuple[str, ...]:
    """expand_alias as it was: a stack of (name, key, destinations), scanned for loops."""
    if _old_listed(table, name) is not None:
        start = name
    elif wildcard and _old_listed(table, WILDCARD) is not None:
        start = WILDCARD
    else:
        return (_old_require_user(name, is_user, None, table, 0),)
    results: dict[str, str] = {}
    expanded: set[str] = set()
    stack = [(start, start.lower(), iter(_old_listed(table, start) or ()))]
    while stack:
        frame_name, frame_key, targets = stack[-1]
        item = next(targets, None)
        if item is None:
            stack.pop()
            expanded.add(frame_key)
            continue
        target, line = item
        where = at(table.path or "aliases", line)
        if is_refused_target(target):
            raise DataError(_old_refusal(frame_name, target), where=where,
                            hint="point the alias at a local user or a remote address")
        if target.startswith("\\"):
            user = _old_require_user(target[1:], is_user, frame_name, table, line)
            results.setdefault(_old_key(user), user)
            continue
        local = local_name(target)
        if local is None:
            results.setdefault(_old_key(target), target)
            continue
        key = local.lower()
        if key == frame_key:
            user = _old_require_user(local, is_user, frame_name, table, line)
            results.setdefault(_old_key(user), user)
        elif any(key == outer[1] for outer in stack):
            first = [outer[1] for outer in stack].index(key)
            loop = " -> ".join([*(outer[0] for outer in stack[first:]), local])
            raise DataError(
                f"alias loop: {loop}",
                where=where,
                hint="remove one of the references; a name may list itself to keep its mailbox",
            )
        elif key in expanded:
            continue
        elif _old_listed(table, local) is not None:
            stack.append((local, key, iter(_old_listed(table, local) or ())))
        else:
            user = _old_require_user(local, is_user, frame_name, table, line)
            results.setdefault(_old_key(user), user)
    return tuple(results.values())


def old_table_problems(
    table: AliasTable, *, is_user: Callable[[str], bool], local_name: Callable[[str], str | None]
) -> tuple[str, ...]:
    """table_problems as it was: refused destinations, then each alias expanded again."""
    problems = dict.fromkeys(
        f"{at(table.path or 'aliases', entry.line)}: {_old_refusal(entry.name, target)}"
        for entry in table.entries
        for target in entry.targets
        if is_refused_target(target)
    )
    for entry in table.entries:
        try:
            old_expand(entry.name, table, is_user=is_user, local_name=local_name, wildcard=False)
        except DmaError as error:
            problems.setdefault(f"{error.where}: {error.message}" if error.where else error.message)
    return tuple(problems)


def outcome(call: Callable[[], tuple[str, ...]]) -> tuple[object, ...]:
    """("ok", a call's result), or ("error", type, message, where, hint) for its error."""
    try:
        return ("ok", call())
    except DmaError as error:
        return ("error", type(error), error.message, error.where, error.hint)


ANY_TARGET = st.one_of(
    GRAPH_TARGET,
    st.sampled_from(["|/bin/prog", "/var/log/x", ":include:/l", "\\u1", "\\root", "\\zz"]),
)


@st.composite
def wider_tables(draw: st.DrawFn) -> AliasTable:
    """Small alias graphs with refused and backslash destinations too."""
    names = draw(st.lists(st.sampled_from((*NAMES, "*", "A", "Root")), max_size=8))
    entries = tuple(
        AliasEntry(name, tuple(draw(st.lists(ANY_TARGET, min_size=1, max_size=4))), line)
        for line, name in enumerate(names, start=1)
    )
    return AliasTable("aliases", entries)


@settings(max_examples=400, deadline=None)
@given(wider_tables(), st.sampled_from((*NAMES, "A", "u1", "U2", "zz", "*")), st.booleans())
def test_expansion_is_the_old_expansion(table: AliasTable, name: str, wildcard: bool) -> None:
    """The colour walk gives what the old stack-scanning expansion gave: the same
    destinations in the same order, or the same error with the same message and line."""
    def new() -> tuple[str, ...]:
        return expand_alias(name, table, is_user=USERS.__contains__, local_name=ours,
                            wildcard=wildcard)

    def old() -> tuple[str, ...]:
        return old_expand(name, table, is_user=USERS.__contains__, local_name=ours,
                          wildcard=wildcard)

    assert outcome(new) == outcome(old)


@settings(max_examples=400, deadline=None)
@given(wider_tables(), st.lists(st.sampled_from((*NAMES, "A", "u1", "zz", "*")), max_size=6))
def test_one_expander_for_many_names(table: AliasTable, names: list[str]) -> None:
    """One AliasExpander asked for name after name gives, all calls together, the
    destinations that expand_alias gives for each, in the same order, and the same
    error for a name that fails, also after an earlier one failed."""
    expander = AliasExpander(table, is_user=USERS.__contains__, local_name=ours)
    given_so_far: dict[str, str] = {}
    wanted_so_far: dict[str, str] = {}
    for name in names:
        got = outcome(partial(expander.expand, name))
        alone = outcome(
            partial(expand_alias, name, table, is_user=USERS.__contains__, local_name=ours)
        )
        if alone[0] == "error":
            assert got == alone
            continue
        assert got[0] == "ok"
        for destination in cast("tuple[str, ...]", got[1]):
            given_so_far.setdefault(_old_key(destination), destination)
        for destination in cast("tuple[str, ...]", alone[1]):
            wanted_so_far.setdefault(_old_key(destination), destination)
        assert list(given_so_far.values()) == list(wanted_so_far.values())


LOOP = re.compile(r"^aliases:(\d+): alias loop: (.*)$")


@settings(max_examples=400, deadline=None)
@given(wider_tables())
def test_check_reports_all_the_old_check_did(table: AliasTable) -> None:
    """The one-walk check is clean exactly when the old check was, reports every problem
    the old one did except the same loop seen from each of its names (the alias named as
    its line writes it), finds a loop whenever the old one did (and also those the old
    one stopped before), and each loop it names is one: every name lists the next, and
    the reference at the line given closes it."""
    new = table_problems(table, is_user=USERS.__contains__, local_name=ours)
    old = old_table_problems(table, is_user=USERS.__contains__, local_name=ours)
    assert bool(new) == bool(old)
    assert len(set(new)) == len(new)
    lines = [int(problem.split(":")[1]) for problem in new]
    assert lines == sorted(lines)
    new_folded = {problem.lower() for problem in new}
    for problem in old:
        if "alias loop:" not in problem:
            assert problem.lower() in new_folded, (problem, new)
    if any("alias loop:" in p for p in old):
        assert any("alias loop:" in p for p in new)
    for problem in new:
        found = LOOP.match(problem)
        if found is None:
            continue
        names = found.group(2).split(" -> ")
        assert names[0].lower() == names[-1].lower() and len(names) >= 3
        for here, following in itertools.pairwise(names):
            targets = table.targets_of(here) or ()
            assert any((ours(t) or "").lower() == following.lower() for t in targets)
        line = int(found.group(1))
        closing = next(e for e in table.entries if e.line == line)
        assert closing.name.lower() == names[-2].lower()
        assert any((ours(t) or "").lower() == names[-1].lower() for t in closing.targets)


SURROGATE = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF, categories=["Cs"])
ESCAPED_TEXT = st.text(
    alphabet=st.one_of(SURROGATE, st.sampled_from('ab :,#\t\n\\"|/@*.x\udcffé')), max_size=80
)


@settings(max_examples=400, deadline=None)
@given(ESCAPED_TEXT)
def test_latin1_bytes_give_a_table_or_our_error(text: str) -> None:
    """A file read with surrogateescape (Latin-1 bytes as lone surrogates) gives a table or
    a ConfigError, and checking or expanding it gives results or our own errors."""
    try:
        table = parse_aliases(text, "aliases")
    except ConfigError:
        return
    users = frozenset({"a", "x", "b\udce9"}).__contains__

    def ours_here(address: str) -> str | None:
        return local_name(address, "mail.example.org")

    try:
        table_problems(table, is_user=users, local_name=ours_here)
    except DmaError as error:  # pragma: no cover - the check reports, it does not raise
        raise AssertionError(f"table_problems raised {error!r}") from error
    for entry in table.entries:
        try:
            expand_alias(entry.name, table, is_user=users, local_name=ours_here)
        except DmaError:
            pass


QCHAR = st.sampled_from([*'ab ,#:@.()jd', '\\"', "\\\\"])


@st.composite
def quoted_address(draw: st.DrawFn) -> str:
    """An address with a quoted local part holding blanks, commas, '#', '@', escapes."""
    local = '"' + "".join(draw(st.lists(QCHAR, max_size=8))) + '"'
    return f"{local}@{draw(st.sampled_from(['example.de', 'Example.DE', 'localhost']))}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(quoted_address(), WORD), min_size=1, max_size=5), st.data())
def test_quoted_local_parts_round_trip(targets: list[str], data: st.DataObject) -> None:
    """Addresses with quoted local parts, written with any separators, parse back as
    written, each a valid envelope address (what RCPT TO gets)."""
    text = "ops: " + targets[0]
    for target in targets[1:]:
        text += data.draw(st.sampled_from([", ", ",", " ", "\t", ",\n  ", " \\\n"])) + target
    text += data.draw(st.sampled_from(["\n", " # note \"x\n", "\n# end\n"]))
    table = parse_aliases(text, "aliases")
    assert table.entries[0].targets == tuple(targets)
    assert all(is_valid_mailbox(t) for t in targets if t.startswith('"'))
