"""The interpreter a bench runs pydma with: one that has pydma installed, or a venv of a
bare one (``/usr/bin/python3``) with pydma installed into it, not editable.

Shared by the benches in this directory (they run as scripts, so ``bench/`` is on
``sys.path``).  The venv's pydma is installed from a copy of the sources (the working
tree, or HEAD's committed files), never from the repo itself, so that no ``build/``
appears there.  A digest of the sources installed is kept in the venv
(``.pydma-source``): when the sources change, the venv is brought up to date on the
next use, so a bench never measures yesterday's pydma by accident.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from argparse import ArgumentParser
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = Path("/usr/bin/python3")
PACKAGES = ("core", "adapters", "shell", "scripts/commands")  # the last: the launchers
PROJECT_FILES = ("pyproject.toml", "README.md")
STAMP = ".pydma-source"


def has_pydma(python: Path) -> bool:
    """Whether ``python`` has pydma installed: a ``dma`` script next to it and the package."""
    return (python.parent / "dma").exists() and subprocess.run(
        [str(python), "-c", "import dma.shell.main"], capture_output=True, check=False
    ).returncode == 0


def head() -> str:
    """HEAD's commit, abbreviated ("?" outside a git checkout)."""
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=False).stdout.strip() or "?"


def copy_sources(target: Path, commit: str | None) -> None:
    """Put pydma's sources into ``target``: the working tree's, or ``commit``'s."""
    if commit is not None:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, *PROJECT_FILES,
                                  *PACKAGES], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, target)
    for name in PACKAGES:
        shutil.copytree(REPO / name, target / name,  # scripts/commands makes scripts/
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def digest(source: Path) -> str:
    """SHA-256 over the names and contents of the files under ``source``."""
    summary = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        summary.update(str(path.relative_to(source)).encode() + b"\0")
        summary.update(path.read_bytes() + b"\0")
    return summary.hexdigest()


def tree_state(commit: str | None = None) -> str:
    """What the sources are: ``commit``'s files, or the working tree (HEAD and the package
    files that differ from it: others' work in progress)."""
    if commit is not None:
        return f"commit {commit}, committed files only"
    changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", *PACKAGES],
                             capture_output=True, text=True, check=False).stdout.split("\n")
    names = [line[3:] for line in changed if line.strip()]
    return f"working tree at HEAD {head()}" + (
        f" with {len(names)} uncommitted: {' '.join(names)}" if names
        else ", no uncommitted package files")


def pydma_python(python: Path, venv: Path, reinstall: bool = False, committed: bool = False,
                 say: Callable[[str], None] = print) -> Path:
    """``python`` when pydma is installed next to it (and no reinstall is asked); else the
    python of ``venv`` (made from ``python`` when missing) with the current sources in it."""
    if not reinstall and has_pydma(python):
        return python
    made = venv / "bin" / "python"
    if not made.exists():
        say(f"making a venv of {python} at {venv}")
        subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    with tempfile.TemporaryDirectory(prefix="dma-bench-src-") as name:
        source = Path(name)
        commit = head() if committed else None
        state = tree_state(commit)
        copy_sources(source, commit)
        wanted = digest(source)
        stamp = venv / STAMP
        current = stamp.read_text().split("\n", 1)[0] if stamp.exists() else ""
        if reinstall or current != wanted or not has_pydma(made):
            say(f"installing pydma ({state}; not editable) into {venv}")
            pip = [str(made), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, "--force-reinstall", "--no-deps", str(source)], check=True)
            subprocess.run([*pip, str(source)], check=True)  # dependencies, when missing
            stamp.write_text(f"{wanted}\n{state}\n")
    # user dma (and a bench's throwaway users) run it: readable whatever the umask was
    subprocess.run(["chmod", "-R", "a+rX", str(venv)], check=True)
    return made


def describe(python: Path) -> str:
    """The interpreter: its path, version and (for a venv) the Python it was made from."""
    version = subprocess.run([str(python), "-c", "import sys; print(sys.version.split()[0])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    config = python.parent.parent / "pyvenv.cfg"
    base = ""
    if config.exists():
        found = re.search(r"(?m)^executable\s*=\s*(.+)$", config.read_text())
        base = f", a venv of {found.group(1).strip()}" if found else ""
        stamp = python.parent.parent / STAMP
        if stamp.exists():
            lines = stamp.read_text().split("\n")
            base += f"; pydma installed not editable from {lines[1] if len(lines) > 1 else '?'}"
        elif python.absolute().parent.parent == REPO / ".venv":
            base += f"; the repo's editable install: {tree_state()}"
    return f"{python} (Python {version}{base})"


def add_interpreter_options(parser: ArgumentParser, default_venv: Path) -> None:
    """The options every bench takes for the interpreter under test: --python, --venv,
    --reinstall, --committed (see ``pydma_python``)."""
    default = DEBIAN_PYTHON if DEBIAN_PYTHON.exists() else REPO / ".venv" / "bin" / "python"
    parser.add_argument("--python", type=Path, default=default,
                        help="interpreter with pydma installed, or a bare one to make a venv "
                             "of (default /usr/bin/python3 when it exists, else the repo's "
                             ".venv)")
    parser.add_argument("--venv", type=Path, default=default_venv,
                        help="where the venv of a bare --python goes (default %(default)s)")
    parser.add_argument("--reinstall", action="store_true",
                        help="install pydma into that venv again (it is also brought up to "
                             "date whenever the sources changed)")
    parser.add_argument("--committed", action="store_true",
                        help="install HEAD's sources into the venv instead of the working tree")
