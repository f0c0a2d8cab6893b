"""Properties of the aliases parser and of alias expansion."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.aliases import AliasEntry, AliasTable, expand_alias, parse_aliases, table_problems
from dma.core.errors import DataError, DmaError, NoUserError

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
