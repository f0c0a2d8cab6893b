"""Loading the settings (shell/settings.py): the MAILNAME file (SPEC 2.1) and TLS keys that
need SECURETRANSFER, seen through load_settings and through real dma processes."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

import pytest
from conftest import DmaSite, command, login_name

from dma.adapters import system
from dma.core import sysexits
from dma.core.errors import ConfigError
from dma.shell.settings import MAILNAME_READ_LIMIT, load_settings

# A run that hangs on a FIFO or reads /dev/zero without end is stopped after this long.
HANG_TIMEOUT = 20


def _with_mailname(site: DmaSite, target: Path | str) -> Path:
    """Write the site's dma.conf with MAILNAME naming ``target`` on line 7; return the conf."""
    config = site.write_config(f"MAILNAME {target}\n")
    lines = config.read_text().splitlines()
    assert lines.index(f"MAILNAME {target}") == 6
    return config


def _load(site: DmaSite) -> str:
    """The mail name that load_settings finds for the site's dma.conf."""
    return load_settings(str(site.config), dict(site.environ)).mailname


def _config_error(site: DmaSite) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _load(site)
    return caught.value


def test_mailname_file_first_line_only(site: DmaSite) -> None:
    """A regular MAILNAME file gives the name on its first line; later lines are ignored."""
    name_file = site.root / "mailname"
    name_file.write_text("mail.example.org\nother.example.net\n")
    _with_mailname(site, name_file)
    assert _load(site) == "mail.example.org"


def test_mailname_file_read_is_bounded(site: DmaSite) -> None:
    """A MAILNAME file whose first line is longer than the bound is read only up to it: the
    name is its first MAILNAME_READ_LIMIT octets at most, never the whole line."""
    name_file = site.root / "mailname"
    name_file.write_bytes(b"a" * (MAILNAME_READ_LIMIT * 4) + b"\n")
    _with_mailname(site, name_file)
    assert _load(site) == "a" * MAILNAME_READ_LIMIT


def test_mailname_directory_is_a_config_error(site: DmaSite) -> None:
    """MAILNAME naming a directory is a ConfigError (exit 78) at MAILNAME's line, naming the
    path and the fix, instead of a silent fall-back to the host name."""
    directory = site.root / "mailname.d"
    directory.mkdir()
    _with_mailname(site, directory)
    error = _config_error(site)
    assert error.exit_code == sysexits.EX_CONFIG
    assert error.where == f"{site.config}:7"
    assert str(directory) in error.message and "directory" in error.message
    assert error.hint is not None and "regular file" in error.hint


def test_mailname_missing_file_falls_back_to_the_host_name(site: DmaSite) -> None:
    """A MAILNAME file that does not exist gives the system host name, as in the C dma."""
    _with_mailname(site, site.root / "no-such-mailname")
    assert _load(site) == system.system_hostname()


def test_mailname_empty_file_falls_back_to_the_host_name(site: DmaSite) -> None:
    """A MAILNAME file whose first line holds no name gives the system host name (C dma)."""
    name_file = site.root / "mailname"
    name_file.write_text("\nmail.example.org\n")
    _with_mailname(site, name_file)
    assert _load(site) == system.system_hostname()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_mailname_unreadable_file_is_a_config_error(site: DmaSite) -> None:
    """A MAILNAME file that exists but cannot be read is a ConfigError at MAILNAME's line."""
    name_file = site.root / "mailname"
    name_file.write_text("mail.example.org\n")
    name_file.chmod(0)
    _with_mailname(site, name_file)
    error = _config_error(site)
    assert error.where == f"{site.config}:7" and str(name_file) in error.message


def _run_limited(
    site: DmaSite, program: str, args: list[str]
) -> subprocess.CompletedProcess[bytes]:
    """Run ``program -C conf args`` with 1 GiB of address space and a timeout."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [*command(program), "-C", str(site.config), *args], input=b"", capture_output=True,
        timeout=HANG_TIMEOUT, env=site.environ, cwd=site.root, check=False, preexec_fn=limit,
    )


def test_mailname_fifo_does_not_hang_mailq(site: DmaSite) -> None:
    """MAILNAME naming a FIFO with no writer: mailq exits 78 at once naming the line and the
    FIFO, instead of waiting for ever for a writer."""
    fifo = site.root / "mailname.fifo"
    os.mkfifo(fifo)
    _with_mailname(site, fifo)
    done = _run_limited(site, "mailq", [])
    assert done.returncode == sysexits.EX_CONFIG, done.stderr
    assert f"{site.config}:7".encode() in done.stderr
    assert str(fifo).encode() in done.stderr and b"FIFO" in done.stderr


def test_mailname_dev_zero_does_not_eat_memory(site: DmaSite) -> None:
    """MAILNAME /dev/zero: a submission exits 78 naming the device, instead of reading an
    endless first line until memory runs out (the run is capped at 1 GiB to show it)."""
    _with_mailname(site, "/dev/zero")
    done = _run_limited(site, "sendmail", [login_name()])
    assert done.returncode == sysexits.EX_CONFIG, done.stderr
    assert b"/dev/zero" in done.stderr and b"character device" in done.stderr
    assert not site.spool_names()


def test_tls_key_without_securetransfer_stops_every_command(site: DmaSite) -> None:
    """STARTTLS without SECURETRANSFER: submission and mailq exit 78 naming the line and the
    fix, and nothing is queued (no silent plain-text delivery)."""
    site.write_config("STARTTLS\n")
    line = site.config.read_text().splitlines().index("STARTTLS") + 1
    for program, args in (("sendmail", [login_name()]), ("mailq", [])):
        done = site.run(args, b"Subject: t\n\nhi\n", program=program)
        assert done.returncode == sysexits.EX_CONFIG, done.stderr
        assert f"{site.config}:{line}".encode() in done.stderr
        assert b"add SECURETRANSFER" in done.stderr
    assert not site.spool_names()
