"""The embedded default (SPEC 8, README "Where things live"): with no -C, no DMA_CONF and
no /etc/dma/dma.conf, dma creates its config, spool and mailboxes under the user's
XDG directories on first use, and the README's first command works as written.

Every test points HOME (and the XDG variables where they matter) under tmp_path, so
nothing is written to the real home directory.
"""

from __future__ import annotations

import mailbox
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import BIN, command

from dma.core.config import parse_config

SYSTEM_CONFIG = Path("/etc/dma/dma.conf")
README = Path(__file__).resolve().parents[1] / "README.md"
MESSAGE = b"Subject: first use\n\nIt works.\n"
# Variables that would pick another configuration, sender or layout.
_SCRUBBED = ("DMA_CONF", "EMAIL", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "HOME")

pytestmark = pytest.mark.skipif(
    SYSTEM_CONFIG.exists(),
    reason=f"{SYSTEM_CONFIG} exists on this machine, so dma uses the system layout, "
    "not the embedded default",
)


def user_name() -> str:
    """What `id -un` prints: the name the README delivers to."""
    return subprocess.run(["id", "-un"], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()


def environment(**variables: str) -> dict[str, str]:
    """The test process's environment without dma's variables, plus ``variables``."""
    environ = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    environ.update(variables)
    return environ


def run(program: str, args: list[str], environ: Mapping[str, str], stdin: bytes = b"",
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a dma program with no -C, so that it finds its configuration by itself."""
    return subprocess.run([*command(program), *args], input=stdin, capture_output=True,
                          env=dict(environ), cwd=cwd, timeout=60, check=False)


def read_mbox(path: Path) -> list[tuple[str, str]]:
    """(Subject, body) of every message of an mbox file, as Python's mailbox reads it."""
    box = mailbox.mbox(path, create=False)
    try:
        return [(str(message["Subject"]), str(message.get_payload())) for message in box]
    finally:
        box.close()


def xdg_dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """HOME, XDG_CONFIG_HOME and XDG_STATE_HOME under tmp_path (none of them exists yet)."""
    return tmp_path / "home", tmp_path / "xdg-config", tmp_path / "xdg-state"


def test_first_use_creates_config_spool_and_mailbox_under_xdg(tmp_path: Path) -> None:
    """`sendmail -D $(id -un)` creates dma.conf, the spool and the mailbox under the XDG
    directories and delivers there; mailq then reports an empty queue."""
    home, config_home, state_home = xdg_dirs(tmp_path)
    home.mkdir()
    environ = environment(HOME=str(home), XDG_CONFIG_HOME=str(config_home),
                          XDG_STATE_HOME=str(state_home))
    user = user_name()
    done = run("sendmail", ["-D", user], environ, MESSAGE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")

    config_file = config_home / "dma" / "dma.conf"
    spool = state_home / "dma" / "spool"
    box = state_home / "dma" / "mail" / user
    assert config_file.is_file()
    assert spool.is_dir()
    assert box.is_file()
    assert read_mbox(box) == [("first use", "It works.\n")]
    assert list(home.iterdir()) == []

    listing = run("mailq", [], environ, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr.decode(errors="replace")
    assert listing.stdout.decode().strip() == "Mail queue is empty"
    assert [name for name in os.listdir(spool) if name[:1] in "QM"] == []


def test_created_config_parses_and_names_the_xdg_paths(tmp_path: Path) -> None:
    """The dma.conf written on first use is valid and names the spool, mailbox directory and
    aliases file under the XDG directories; it is private to the user."""
    home, config_home, state_home = xdg_dirs(tmp_path)
    home.mkdir()
    environ = environment(HOME=str(home), XDG_CONFIG_HOME=str(config_home),
                          XDG_STATE_HOME=str(state_home))
    listing = run("mailq", [], environ, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr.decode(errors="replace")
    config_file = config_home / "dma" / "dma.conf"
    config = parse_config(config_file.read_text(), str(config_file))
    assert config.spooldir == str(state_home / "dma" / "spool")
    assert config.maildir == str(state_home / "dma" / "mail")
    assert config.aliases == str(config_home / "dma" / "aliases")
    assert not config.defer
    assert config_file.stat().st_mode & 0o077 == 0


def test_existing_embedded_config_is_kept_and_used(tmp_path: Path) -> None:
    """A second use reads the dma.conf that is there (here edited to DEFER) instead of
    writing a new one."""
    home, config_home, state_home = xdg_dirs(tmp_path)
    home.mkdir()
    environ = environment(HOME=str(home), XDG_CONFIG_HOME=str(config_home),
                          XDG_STATE_HOME=str(state_home))
    assert run("mailq", [], environ, cwd=tmp_path).returncode == 0
    config_file = config_home / "dma" / "dma.conf"
    edited = config_file.read_text() + "DEFER\n"
    config_file.write_text(edited)
    user = user_name()
    done = run("sendmail", ["-D", user], environ, MESSAGE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert config_file.read_text() == edited
    assert not (state_home / "dma" / "mail" / user).exists()
    listing = run("mailq", [], environ, cwd=tmp_path).stdout.decode()
    assert f"To\t: {user}" in listing


def readme_first_command() -> str:
    """The README's first shell command without its venv creation and install steps."""
    text = README.read_text()
    match = re.search(r"```sh\n(.*?)\n```", text, re.S)
    assert match, "README has no ```sh block"
    steps = [step.strip() for step in match.group(1).split(" && ")]
    setup = [s for s in steps if s.startswith("python3 -m venv") or "pip install" in s]
    assert len(setup) == 2, steps
    return " && ".join(s for s in steps if s not in setup)


def test_readme_first_command_works_with_home_under_tmp(tmp_path: Path) -> None:
    """The README's first command (minus creating the venv) delivers "It works." into
    ~/.local/state/dma/mail/<user> and prints the empty queue, HOME being under tmp_path."""
    if not (BIN / "sendmail").exists() or not (BIN / "dma").exists():
        pytest.skip("the console scripts are not installed in this environment")
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(BIN.parent)
    script = readme_first_command()
    done = subprocess.run(["bash", "-c", script], capture_output=True, cwd=work,
                          env=environment(HOME=str(home)), timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode()
    assert "Mail queue is empty" in out
    assert "Subject: hello" in out and "It works." in out
    user = user_name()
    box = home / ".local" / "state" / "dma" / "mail" / user
    assert read_mbox(box) == [("hello", "It works.\n")]
    assert (home / ".config" / "dma" / "dma.conf").is_file()
    assert (home / ".local" / "state" / "dma" / "spool").is_dir()
