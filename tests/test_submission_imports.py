"""What a plain submission imports (issue 11): start-up is most of its cost, so the
modules it loads are part of its behaviour.

Each test runs one real DEFER submission in a fresh interpreter and lists the modules
that appeared in ``sys.modules`` from the first import of dma to the exit code.  What
the interpreter (or the repo's editable finder) loaded before is not counted: the
bench (bench/submit.py) measures a real install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import DmaSite, login_name

# Every dma module a submission may load: what it parses, checks and writes, and the
# delivery step that sees DEFER.  Anything else belongs to another path.
SUBMISSION_MODULES = frozenset({
    "dma", "dma.core", "dma.adapters", "dma.shell",
    "dma.shell.main", "dma.shell.guard", "dma.shell.settings", "dma.shell.submit",
    "dma.shell.delivery",
    "dma.core.errors", "dma.core.sysexits", "dma.core.octets", "dma.core.values",
    "dma.core.cmdline", "dma.core.config", "dma.core.queuefile", "dma.core.addresses",
    "dma.core.dates", "dma.core.aliases", "dma.core.envelope", "dma.core.lines",
    "dma.core.version", "dma.core.headers", "dma.core.system_layout", "dma.core.retry",
    "dma.adapters.system", "dma.adapters.log", "dma.adapters.spool",
})

# Standard modules that cost start-up and that no step of a submission needs.
HEAVY = ("typing", "datetime", "contextlib", "difflib", "ipaddress", "tomllib", "base64",
         "email", "socket", "ssl", "selectors", "subprocess", "threading", "signal",
         "structlog", "dns", "enum", "re")

# What dataclasses brings along (~13 ms on Debian's python3).
DATACLASSES = ("dataclasses", "inspect", "ast", "dis", "tokenize")

_PROGRAM = (
    "import sys\n"
    "before = set(sys.modules)\n"
    "from dma.shell.main import main\n"
    "code = main(sys.argv[1:])\n"
    "sys.stdout.write(' '.join(sorted(set(sys.modules) - before)))\n"
    "sys.exit(code)\n"
)


def loaded_by_submission(site: DmaSite, *args: str) -> set[str]:
    """The modules that one submission with DEFER loaded, the message queued."""
    site.write_aliases("postmaster: root\n")
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, "dma", "-C", str(site.config), *args, login_name()],
        input=b"From: cron@example.org\nSubject: report\n\nall is well\n",
        capture_output=True, env=site.environ, cwd=site.root, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert len([name for name in site.spool_names() if name.startswith("Q")]) == 1
    return set(done.stdout.decode().split())


def test_a_submission_loads_only_its_own_modules(site: DmaSite) -> None:
    """A plain submission (aliases file present, -f given) loads only the dma modules of
    its path, and none of the standard modules that only other paths need."""
    loaded = loaded_by_submission(site, "-f", "cron@example.org")
    assert {name for name in loaded if name.startswith("dma")} <= SUBMISSION_MODULES
    assert [name for name in HEAVY if name in loaded] == []


def test_a_submission_does_not_load_dataclasses(site: DmaSite) -> None:
    """Values are core/values classes: a submission loads neither dataclasses nor what it
    imports (inspect, ast, dis, tokenize)."""
    loaded = loaded_by_submission(site)
    assert [name for name in DATACLASSES if name in loaded] == []


def _imported(argv: list[str], site: DmaSite, stdin: bytes = b"") -> set[str]:
    """The modules ``python -X importtime argv`` imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], input=stdin,
                          capture_output=True, env=site.environ, cwd=site.root, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return {line.rsplit("|", 1)[-1].strip()
            for line in done.stderr.decode().splitlines() if line.startswith("import time:")}


def test_the_installed_sendmail_command_loads_no_regex_engine(site: DmaSite) -> None:
    """The installed ``sendmail`` is our own launcher (scripts/commands), not pip's
    generated wrapper, which imports re (~7 ms) before any of our code runs: one real
    submission through it loads neither re nor enum beyond what the interpreter's own
    start-up loads (an editable install's finder loads re)."""
    launcher = Path(sys.executable).parent / "sendmail"
    assert b"import re" not in launcher.read_bytes()
    site.write_aliases("postmaster: root\n")
    baseline = _imported(["-c", "pass"], site)
    imported = _imported([str(launcher), "-C", str(site.config), "-f", "cron@example.org",
                          login_name()], site,
                         b"From: cron@example.org\nSubject: report\n\nall is well\n")
    assert "dma.core.cmdline" in imported  # the listing is real
    assert {"re", "enum"} & (imported - baseline) == set()
