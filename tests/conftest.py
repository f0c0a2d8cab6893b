"""Shared fixtures: a private dma installation under tmp_path, run as real processes.

Every test gets its own dma.conf (SPOOLDIR, MAILDIR and ALIASES under tmp_path, and
DEFER so that nothing is ever delivered) and runs the installed console scripts
with ``-C`` pointing at it, so no test reads /etc/dma or writes /var/spool/dma.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dma.adapters.mailbox import INTENT_DIR
from dma.adapters.slots import SLOT_DIR

BIN = Path(sys.executable).parent
# Runs dma under a chosen program name when the console scripts are not installed.
_BY_NAME = (
    "import sys; from dma.shell.main import main; "
    "sys.exit(main([sys.argv[1], *sys.argv[2:]]))"
)
# Variables that would make dma read another configuration or pick another sender.
_SCRUBBED = ("DMA_CONF", "EMAIL", "XDG_CONFIG_HOME", "XDG_STATE_HOME")
NOWHERE_HOST = "127.0.0.1"
NOWHERE_PORT = 9


def command(program: str) -> list[str]:
    """The argv prefix that starts dma under ``program`` (dma, sendmail, mailq, newaliases)."""
    script = BIN / program
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", _BY_NAME, program]


def login_name() -> str:
    """The name of the user running the tests: a valid local recipient."""
    return pwd.getpwuid(os.getuid()).pw_name


class DmaSite:
    """One private dma set-up: its files under ``root`` and a way to run it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.maildir = root / "mail"
        self.aliases = root / "aliases"
        self.config = root / "dma.conf"
        self.environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        self.environ["HOME"] = str(root)
        self.write_config()

    def write_config(
        self, extra: str = "", *, defer: bool = True, path: Path | None = None
    ) -> Path:
        """Write a dma.conf: our paths, DEFER unless told not to, a dead smarthost, ``extra``."""
        target = path or self.config
        text = f"SPOOLDIR {self.spool}\nMAILDIR {self.maildir}\nALIASES {self.aliases}\n"
        if defer:
            text += "DEFER\n"
        # Should a queue run try remote delivery, it meets a refused connection on
        # loopback (port 9 is privileged and unused) and defers: nothing leaves the queue.
        text += f"SMARTHOST {NOWHERE_HOST}\nPORT {NOWHERE_PORT}\n"
        target.write_text(text + extra)
        return target

    def write_aliases(self, text: str) -> Path:
        """Write the aliases file that the configuration names."""
        self.aliases.write_text(text)
        return self.aliases

    def run(
        self,
        args: Sequence[str],
        stdin: bytes = b"",
        *,
        program: str = "dma",
        config: Path | None = None,
        use_config: bool = True,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``program -C <config> args`` with ``stdin``; output is captured as bytes."""
        argv = command(program)
        if use_config:
            argv += ["-C", str(config or self.config)]
        environ = dict(self.environ)
        environ.update(env or {})
        return subprocess.run(
            [*argv, *args], input=stdin, capture_output=True, timeout=timeout, env=environ,
            cwd=self.root, check=False,
        )

    def send(self, args: Sequence[str], stdin: bytes) -> list[str]:
        """Submit a message that must be accepted; return the new item ids (from -bj)."""
        before = {item["id"] for item in self.queue()}
        done = self.run(args, stdin)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return [item["id"] for item in self.queue() if item["id"] not in before]

    def queue(self) -> list[dict[str, Any]]:
        """The queue as ``dma -bj`` lists it, one dict per item."""
        done = self.run(["-bj"])
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        return [json.loads(line) for line in done.stdout.decode().splitlines()]

    def spool_names(self) -> set[str]:
        """The queue's names in the spool directory (empty when it does not exist).

        The connection slot directory (MAXCONNECTIONS across processes) and the mbox
        append intents are no queue items and are left out.
        """
        if not self.spool.is_dir():
            return set()
        return set(os.listdir(self.spool)) - {SLOT_DIR, INTENT_DIR}

    def message(self, item_id: str) -> bytes:
        """The spooled message (M file) of an item."""
        return (self.spool / f"M{item_id}").read_bytes()

    def queue_file(self, item_id: str) -> bytes:
        """The Q file of an item."""
        return (self.spool / f"Q{item_id}").read_bytes()


@pytest.fixture
def site(tmp_path: Path) -> DmaSite:
    """A private dma set-up under tmp_path: DEFER on, a dead smarthost, no aliases file yet."""
    return DmaSite(tmp_path)
