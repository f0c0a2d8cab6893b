"""Aliases file parsing and expansion (SPEC 2.3; dma-behaviour.md 2.3 and 5.2)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

from dma.core import sysexits
from dma.core.aliases import (
    AliasEntry,
    AliasExpander,
    AliasTable,
    expand_alias,
    is_refused_target,
    parse_aliases,
    refused_targets,
    table_problems,
)
from dma.core.errors import ConfigError, DataError, NoUserError

PATH = "/etc/aliases"
MAILNAME = "mail.example.org"


def ours(address: str) -> str | None:
    """Stand-in for envelope.local_name: bare names and @mail.example.org/@localhost."""
    local, sign, domain = address.rpartition("@")
    if not sign:
        return address
    return local if domain.lower() in (MAILNAME, "localhost") else None


def users(*names: str) -> Callable[[str], bool]:
    return frozenset(names).__contains__


def expand(text: str, name: str, *user_names: str, wildcard: bool = True) -> tuple[str, ...]:
    table = parse_aliases(text, PATH)
    return expand_alias(name, table, is_user=users(*user_names), local_name=ours, wildcard=wildcard)


# --- parsing: what the C dma accepts ---------------------------------------------------


def test_comma_separated_destinations() -> None:
    """The C dma's syntax `name: a, b` gives one entry with both destinations."""
    table = parse_aliases("ops: alice, bob@example.com\n", PATH)
    assert table.entries == (AliasEntry("ops", ("alice", "bob@example.com"), 1),)


def test_comments_and_blank_lines_are_skipped() -> None:
    """Whole-line and trailing `#` comments and empty lines produce no entries."""
    text = "# header\n\nops: alice # the admin\n\n# end\n"
    table = parse_aliases(text, PATH)
    assert table.entries == (AliasEntry("ops", ("alice",), 3),)


def test_continuation_line_starting_with_blank() -> None:
    """A line starting with a blank continues the entry above and keeps its line number."""
    table = parse_aliases("ops: alice,\n\tbob,\n  carol\nroot: ops\n", PATH)
    assert table.entries[0] == AliasEntry("ops", ("alice", "bob", "carol"), 1)
    assert table.entries[1] == AliasEntry("root", ("ops",), 4)


def test_backslash_newline_continues() -> None:
    """A line ending in a backslash is continued by the next line, blank or not."""
    table = parse_aliases("ops: alice, \\\nbob\n", PATH)
    assert table.targets_of("ops") == ("alice", "bob")


def test_backslash_inside_comment_does_not_continue() -> None:
    """A backslash that is part of a comment ends nothing: the next line is a new entry."""
    table = parse_aliases("ops: alice # note \\\nbob: carol\n", PATH)
    assert table.targets_of("ops") == ("alice",)
    assert table.targets_of("bob") == ("carol",)


def test_duplicate_names_merge() -> None:
    """All entries of a name apply, in file order (the C dma's rule)."""
    table = parse_aliases("ops: alice\nother: x\nops: bob, alice\n", PATH)
    assert table.targets_of("ops") == ("alice", "bob")


def test_crlf_file_parses() -> None:
    """CRLF line ends are read like LF ones."""
    table = parse_aliases("ops: alice\r\n  bob\r\n", PATH)
    assert table.targets_of("ops") == ("alice", "bob")


# --- parsing: deliberate differences ---------------------------------------------------


def test_blank_separated_destinations() -> None:
    """`name: a b` works (the man page's form, a syntax error in the C dma)."""
    table = parse_aliases("ops: alice bob\tcarol ,dave\n", PATH)
    assert table.targets_of("ops") == ("alice", "bob", "carol", "dave")


def test_lookup_ignores_case() -> None:
    """Names match case-insensitively, and entries differing in case merge."""
    table = parse_aliases("Postmaster: alice\nPOSTMASTER: bob\n", PATH)
    assert table.targets_of("postmaster") == ("alice", "bob")
    assert table.targets_of("PostMaster") == ("alice", "bob")
    assert table.targets_of("nobody") is None


def test_quoted_destination_is_one_destination() -> None:
    """A `"..."` destination keeps its blanks, commas and `#` (sendmail's quoting)."""
    table = parse_aliases('ops: "|/usr/bin/prog -a, #b", alice\n', PATH)
    assert table.targets_of("ops") == ("|/usr/bin/prog -a, #b", "alice")


def test_quoted_local_parts_stay_one_destination() -> None:
    """`"jd"@x`, `"j d"@x` and `"a,b"@x` are each one destination kept in the quoted form
    the wire needs: blanks, commas and '#' inside quotes neither split nor comment."""
    text = (
        'ops: "jd"@example.de, "j d"@example.de "a,b"@example.de,\n'
        '  "a#b"@Example.DE # note\n'
        'esc: "a\\"b"@example.de, "j.d"@localhost\n'
    )
    table = parse_aliases(text, PATH)
    assert table.targets_of("ops") == (
        '"jd"@example.de', '"j d"@example.de', '"a,b"@example.de', '"a#b"@Example.DE'
    )
    assert table.targets_of("esc") == ('"a\\"b"@example.de', '"j.d"@localhost')
    assert expand(text, "ops") == table.targets_of("ops")


def test_whole_quoted_destination_is_its_content() -> None:
    """A destination quoted whole (`"jd"`, `"|prog a"`) is its content, as before."""
    table = parse_aliases('ops: "jd", "|/bin/prog a"\n', PATH)
    assert table.targets_of("ops") == ("jd", "|/bin/prog a")
    assert expand('ops: "jd"\n', "ops", "jd") == ("jd",)


@pytest.mark.parametrize(
    "target",
    ['"jd"x@example.de', 'a"b', '"jd"@', 'x"y"@example.de', 'x."y z"@example.de',
     '"a\\"b"', 'ok@"jd"'],
)
def test_bad_quoting_is_a_config_error_naming_the_line(target: str) -> None:
    """A destination whose quotes do not make an address is a ConfigError with path:line,
    never another error from deeper down."""
    with pytest.raises(ConfigError) as caught:
        parse_aliases(f"ok: alice\nops: {target}\n", PATH)
    assert caught.value.where == f"{PATH}:2"
    assert "destination" in caught.value.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("ops alice\n", 1, "no ':'"),
        ("ok: a\n: alice\n", 2, "empty alias name"),
        ("ok: a\nops:\n", 2, "no destination"),
        ("ops: # nothing\n", 1, "no destination"),
        ("ops two: alice\n", 1, "blank"),
        ("a,b: alice\n", 1, "comma"),
        ("  alice\n", 1, "continuation"),
        ("ops: a\n\n  bob\n", 3, "continuation"),
        ("ops: a\n# note\n  bob\n", 3, "continuation"),
        ('ops: "alice\n', 1, "unterminated"),
        ("ops: alice@\n", 1, "bad destination"),
        ("ops: @example.com\n", 1, "bad destination"),
        ("ops: a b: c\n", 1, "':'"),
        ("ok: a\nops: al\x00ice\n", 2, "control character"),
        ("# ops: alice\n#: x\nbad\n", 3, "no ':'"),
    ],
)
def test_syntax_errors_name_the_line(text: str, line: int, words: str) -> None:
    """A syntax error is a ConfigError (exit 78) naming path:line and what is wrong."""
    with pytest.raises(ConfigError) as caught:
        parse_aliases(text, PATH)
    assert caught.value.where == f"{PATH}:{line}"
    assert words in caught.value.message
    assert caught.value.exit_code == sysexits.EX_CONFIG


def test_refused_targets_parse_and_are_listed() -> None:
    """`|cmd`, `/file` and `:include:` parse, and refused_targets lists each with path:line."""
    text = "ok: alice\nprog: |/bin/prog, alice\nlog: /var/log/all\ninc: :Include:/etc/list\n"
    table = parse_aliases(text, PATH)
    messages = refused_targets(table)
    assert len(messages) == 3
    assert messages[0].startswith(f"{PATH}:2: ") and "|/bin/prog" in messages[0]
    assert messages[1].startswith(f"{PATH}:3: ") and "/var/log/all" in messages[1]
    assert messages[2].startswith(f"{PATH}:4: ") and ":Include:/etc/list" in messages[2]
    assert all("never runs commands or writes files" in m for m in messages)


def test_is_refused_target() -> None:
    """Only destinations starting with |, / or :include: (any case) are refused kinds."""
    assert is_refused_target("|x") and is_refused_target("/x") and is_refused_target(":INCLUDE:x")
    assert not is_refused_target("alice") and not is_refused_target("a/b@example.com")


# --- expansion: the C dma's behaviour we keep -----------------------------------------


def test_user_without_alias_is_itself() -> None:
    """A user that no alias names is delivered to as is."""
    assert expand("ops: alice\n", "bob", "bob") == ("bob",)


def test_expansion_recurses() -> None:
    """Destinations that are aliases expand further, in first-seen order."""
    text = "root: ops, carol@example.com\nops: alice, bob\n"
    assert expand(text, "root", "alice", "bob") == ("alice", "bob", "carol@example.com")


def test_local_domain_destination_expands() -> None:
    """A destination at the mail name or localhost is a local name and expands too."""
    text = "root: ops@MAIL.example.org\nops: alice@localhost\n"
    assert expand(text, "root", "alice") == ("alice",)


def test_wildcard_catches_unknown_and_users() -> None:
    """`*` catches every unaliased local name, users included (before the user check)."""
    text = "*: catch\nops: alice\n"
    assert expand(text, "nobody", "catch", "alice") == ("catch",)
    assert expand(text, "alice", "catch", "alice") == ("catch",)
    assert expand(text, "ops", "catch", "alice") == ("alice",)


def test_wildcard_only_at_top_level() -> None:
    """Names reached through expansion never fall to `*`; without wildcard it is unused."""
    text = "*: catch\nops: ghost\n"
    with pytest.raises(NoUserError):
        expand(text, "ops", "catch")
    with pytest.raises(NoUserError):
        expand(text, "nobody", "catch", wildcard=False)


def test_unknown_local_name_is_nouser() -> None:
    """A local name that is neither alias nor user is a NoUserError (exit 67) naming it."""
    with pytest.raises(NoUserError) as caught:
        expand("ops: alice\n", "ghost", "alice")
    assert "ghost" in str(caught.value)
    assert caught.value.exit_code == sysexits.EX_NOUSER


def test_unknown_name_deep_in_tree_names_alias_and_line() -> None:
    """A bad destination inside the tree names itself, its alias and the line."""
    with pytest.raises(NoUserError) as caught:
        expand("root: ops\nops: alice, ghost\n", "root", "alice")
    assert "ghost" in caught.value.message and "ops" in caught.value.message
    assert caught.value.where == f"{PATH}:2"


def test_diamond_is_fine() -> None:
    """Two paths to one alias deliver once and are not a loop."""
    text = "a: b, c\nb: d\nc: d, e\nd: alice\n"
    assert expand(text, "a", "alice", "e") == ("alice", "e")


def test_duplicates_dropped_with_domain_case() -> None:
    """Repeated destinations appear once; remote domains compare without case."""
    text = "a: bob@Example.COM, alice, bob@example.com, ALICE, Bob@example.com\n"
    assert expand(text, "a", "alice") == ("bob@Example.COM", "alice", "Bob@example.com")


# --- expansion: deliberate differences -------------------------------------------------


def test_self_reference_keeps_own_mailbox() -> None:
    """`root: root, ops` reaches root and ops (the C dma drops root)."""
    assert expand("root: root, ops\n", "root", "root", "ops") == ("root", "ops")


def test_self_reference_ignores_case_and_domain() -> None:
    """A self reference written in another case or at the mail name is still one."""
    text = "Root: ROOT@localhost, ops\n"
    assert expand(text, "root", "root", "ops") == ("root", "ops")


def test_self_reference_needs_a_user() -> None:
    """A name that lists itself but is no user is a NoUserError naming the alias."""
    with pytest.raises(NoUserError) as caught:
        expand("team: team, alice\n", "team", "alice")
    assert "team" in caught.value.message and caught.value.where == f"{PATH}:1"


def test_backslash_name_is_mailbox_without_expansion() -> None:
    """`\\root` means root's own mailbox, not the root alias (sendmail's form)."""
    assert expand("root: \\root, ops\n", "root", "root", "ops") == ("root", "ops")
    with pytest.raises(NoUserError):
        expand("ops: \\ghost\n", "ops")


@pytest.mark.parametrize(
    ("text", "loop"),
    [
        ("a: b\nb: a\n", "a -> b -> a"),
        ("x: a\na: b\nb: c\nc: a\n", "a -> b -> c -> a"),
        ("a: B@localhost\nb: A\n", "a -> B -> A"),
    ],
)
def test_loop_is_an_error_naming_it(text: str, loop: str) -> None:
    """A loop between names is a DataError spelling the loop (the C dma drops the mail)."""
    with pytest.raises(DataError) as caught:
        expand(text, text.split(":", 1)[0], "alice")
    assert caught.value.message == f"alias loop: {loop}"


@pytest.mark.parametrize("target", ["|/bin/prog", "/var/mail/all", ":include:/etc/list"])
def test_refused_target_when_reached(target: str) -> None:
    """Reaching a command, file or include destination is a DataError saying why."""
    with pytest.raises(DataError) as caught:
        expand(f"root: ops\nops: alice, {target}\n", "root", "alice")
    error = caught.value
    assert "'ops'" in error.message and target in error.message
    assert "never runs commands or writes files" in error.message
    assert error.where == f"{PATH}:2"
    assert error.hint is not None and "local user" in error.hint


def test_refused_target_not_reached_is_harmless() -> None:
    """A refused destination in an alias nobody uses does not break other mail."""
    assert expand("prog: |/bin/prog\nops: alice\n", "ops", "alice") == ("alice",)


def test_user_name_case_falls_back_to_lower_case() -> None:
    """An unaliased `Alice` reaches user alice when only the lower-case name exists."""
    assert expand("ops: x\n", "Alice", "alice") == ("alice",)


def test_long_chain_does_not_exhaust_stack() -> None:
    """A chain of 5000 aliases expands without recursion limits."""
    text = "".join(f"a{i}: a{i + 1}\n" for i in range(5000)) + "a5000: alice\n"
    assert expand(text, "a0", "alice") == ("alice",)


def test_chain_of_100000_checks_and_expands_in_linear_time() -> None:
    """newaliases' check and one expansion of a 100 000-alias chain finish in seconds, with
    no RecursionError (the check walked the chain again from every alias: minutes)."""
    count = 100_000
    text = "".join(f"a{i}: a{i + 1}\n" for i in range(count)) + f"a{count}: alice\n"
    table = parse_aliases(text, PATH)
    start = time.perf_counter()
    assert table_problems(table, is_user=users("alice"), local_name=ours) == ()
    assert expand_alias("a0", table, is_user=users("alice"), local_name=ours) == ("alice",)
    assert time.perf_counter() - start < 10


def test_check_looks_at_each_destination_once() -> None:
    """table_problems asks local_name about each destination once, however the aliases
    share destinations (a chain, a fan and a lattice), so its work grows with the file."""
    calls: list[str] = []

    def counted(address: str) -> str | None:
        calls.append(address)
        return ours(address)

    chain = "".join(f"c{i}: c{i + 1}\n" for i in range(300)) + "c300: alice\n"
    fan = "fan: " + ", ".join(f"f{i}" for i in range(300)) + "\n"
    fan += "".join(f"f{i}: alice\n" for i in range(300))
    layers = [[f"n{i}_{j}" for j in range(12)] for i in range(12)]
    lattice = "".join(
        f"{name}: {', '.join(below)}\n"
        for above, below in itertools.pairwise(layers)
        for name in above
    ) + "".join(f"{name}: alice\n" for name in layers[-1])
    for text in (chain, fan, lattice):
        table = parse_aliases(text, PATH)
        calls.clear()
        assert table_problems(table, is_user=users("alice"), local_name=counted) == ()
        assert len(calls) == sum(len(entry.targets) for entry in table.entries)


def test_one_expander_walks_shared_aliases_once() -> None:
    """An AliasExpander given 1000 names that all lead to one list of 1000 users walks
    that list once: the later names give only what is new (one expansion per name
    walked the list 1000 times)."""
    calls: list[str] = []

    def counted(address: str) -> str | None:
        calls.append(address)
        return ours(address)

    members = [f"u{i}" for i in range(1000)]
    text = "".join(f"n{i}: all, x{i}@example.org\n" for i in range(1000))
    text += f"all: {', '.join(members)}\n"
    expander = AliasExpander(parse_aliases(text, PATH), is_user=users(*members),
                             local_name=counted)
    assert expander.expand("n0") == (*members, "x0@example.org")
    assert expander.expand("N1") == ("x1@example.org",)
    assert all(expander.expand(f"n{i}") == (f"x{i}@example.org",) for i in range(2, 1000))
    assert expander.expand("n5") == ()
    assert len(calls) == 1000 + 2 * 1000


def test_expander_after_an_error_gives_everything_again() -> None:
    """A name that fails leaves nothing half walked: the next name that shares its
    aliases gets all their destinations."""
    text = "bad: team, ghost\nteam: alice, bob\ngood: team\n"
    expander = AliasExpander(parse_aliases(text, PATH), is_user=users("alice", "bob"),
                             local_name=ours)
    with pytest.raises(NoUserError):
        expander.expand("bad")
    assert expander.expand("good") == ("alice", "bob")


def test_long_loop_message_is_shortened() -> None:
    """A loop of more than 20 names is named by its ends and the count left out, so that
    a long loop does not make a message of the whole file."""
    text = "".join(f"a{i}: a{i + 1}\n" for i in range(100)) + "a100: a0\n"
    with pytest.raises(DataError) as caught:
        expand(text, "a0", "alice")
    message = caught.value.message
    assert message.startswith("alias loop: a0 -> a1 -> ") and message.endswith(" -> a100 -> a0")
    assert "(82 more)" in message and len(message) < 200
    assert caught.value.where == f"{PATH}:101"


def test_empty_table_defaults() -> None:
    """An empty AliasTable knows no names."""
    assert AliasTable().targets_of("root") is None
    assert parse_aliases("", PATH) == AliasTable(PATH, ())


def test_table_problems_name_each_broken_alias_once() -> None:
    """table_problems reports a refused target, a loop and an unknown name, each with
    its line, and nothing for aliases that expand cleanly."""
    table = parse_aliases(
        "ok: root, x@example.org\npipe: |/bin/true\na: b\nb: a\nlost: nobody-here\n", PATH
    )
    problems = table_problems(table, is_user=users("root"), local_name=ours)
    assert any(p.startswith(f"{PATH}:2: ") and "refused" in p for p in problems)
    assert any(p.startswith(f"{PATH}:4: ") and "alias loop: a -> b -> a" in p for p in problems)
    assert any(p.startswith(f"{PATH}:5: ") and "nobody-here" in p for p in problems)
    assert not any("'ok'" in p for p in problems)
    assert len(problems) == len(set(problems))
    clean = parse_aliases("ok: root\n*: root\n", PATH)
    assert table_problems(clean, is_user=users("root"), local_name=ours) == ()
