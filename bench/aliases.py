"""Alias checking and expansion at scale (issue 7, finding 9): time per file shape.

For each shape the script times, in a fresh process with a time limit:

- ``parse``: ``parse_aliases`` of the whole file;
- ``check``: ``table_problems``, what ``newaliases`` runs;
- ``expand``: ``expand_alias`` of the top name, what one submitted recipient costs.

Shapes: a chain ``a1: a2 ... aN: root`` (N = 1000, 5000, 100 000), a fan (one alias
listing 10 000 aliases that each list root, and one listing 10 000 users), and a
diamond lattice (L layers of W aliases, each listing every alias of the next layer).

``--module FILE`` times another copy of core/aliases.py (for instance the one of an
older commit: ``git show REV:core/aliases.py > /tmp/old_aliases.py``).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType

USERS = frozenset({"root", *(f"u{i}" for i in range(10_000))})


def chain(n: int) -> str:
    return "".join(f"a{i}: a{i + 1}\n" for i in range(1, n)) + f"a{n}: root\n"


def fan_aliases(n: int) -> str:
    return "top: " + ", ".join(f"b{i}" for i in range(n)) + "\n" + "".join(
        f"b{i}: root\n" for i in range(n)
    )


def fan_users(n: int) -> str:
    return "top: " + " ".join(f"u{i}" for i in range(n)) + "\n"


def lattice(layers: int, width: int) -> str:
    lines = ["top: " + ", ".join(f"n0_{j}" for j in range(width))]
    for i in range(layers - 1):
        targets = ", ".join(f"n{i + 1}_{j}" for j in range(width))
        lines.extend(f"n{i}_{j}: {targets}" for j in range(width))
    lines.extend(f"n{layers - 1}_{j}: root, u{j}" for j in range(width))
    return "\n".join(lines) + "\n"


SHAPES: dict[str, tuple[Callable[[], str], str]] = {
    "chain 1000": (lambda: chain(1000), "a1"),
    "chain 5000": (lambda: chain(5000), "a1"),
    "chain 100000": (lambda: chain(100_000), "a1"),
    "fan 10000 aliases": (lambda: fan_aliases(10_000), "top"),
    "fan 10000 users": (lambda: fan_users(10_000), "top"),
    "lattice 30x30": (lambda: lattice(30, 30), "top"),
    "lattice 100x100": (lambda: lattice(100, 100), "top"),
}


def load(path: str | None) -> ModuleType:
    if path is None:
        import dma.core.aliases

        return dma.core.aliases
    spec = importlib.util.spec_from_file_location("bench_aliases_module", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def ours(address: str) -> str | None:
    local, sign, domain = address.rpartition("@")
    return address if not sign else (local if domain == "localhost" else None)


def run_one(shape: str, module_path: str | None) -> None:
    """Time one shape in this process and print ``parse check expand`` in seconds."""
    aliases = load(module_path)
    make, top = SHAPES[shape]
    text = make()
    start = time.perf_counter()
    table = aliases.parse_aliases(text, "aliases")
    parsed = time.perf_counter()
    problems = aliases.table_problems(table, is_user=USERS.__contains__, local_name=ours)
    checked = time.perf_counter()
    result = aliases.expand_alias(top, table, is_user=USERS.__contains__, local_name=ours)
    expanded = time.perf_counter()
    assert not problems, problems[:3]
    assert result, result
    print(f"{parsed - start:.3f} {checked - parsed:.3f} {expanded - checked:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--module", help="a core/aliases.py copy to time instead")
    parser.add_argument("--limit", type=float, default=120.0, help="seconds per shape")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("shapes", nargs="*", default=list(SHAPES))
    options = parser.parse_args()
    if options.one:
        run_one(options.one, options.module)
        return 0
    print(f"{'shape':<20} {'parse s':>8} {'check s':>10} {'expand s':>9}")
    for shape in options.shapes:
        argv = [sys.executable, __file__, "--one", shape]
        if options.module:
            argv += ["--module", options.module]
        try:
            done = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=options.limit, check=False)
        except subprocess.TimeoutExpired:
            print(f"{shape:<20} {'':>8} > {options.limit:.0f} (stopped)")
            continue
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{shape:<20} failed: {last}")
            continue
        parse, check, expand = done.stdout.split()
        print(f"{shape:<20} {parse:>8} {check:>10} {expand:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
