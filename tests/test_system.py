"""adapters/system.py: what the operating system says, checked against the operating
system itself (files we create, /proc, getent, child processes), never against mocks."""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import sys
from pathlib import Path

import pytest

from dma.adapters import system

NO_SUCH_USER = "pydma-no-such-user-7q"


def _proc_ids(field: str) -> tuple[int, int]:
    """The real and effective id on ``field`` (``Uid`` or ``Gid``) of /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            real, effective = line.split()[1:3]
            return int(real), int(effective)
    raise AssertionError(f"no {field} line in /proc/self/status")


def _getent(name: str) -> list[str] | None:
    """The password entry of ``name`` as getent prints it, split at colons; None if none."""
    found = subprocess.run(["getent", "passwd", name], capture_output=True, text=True,
                           check=False)
    return found.stdout.strip().split(":") if found.returncode == 0 else None


def test_uid_and_euid_are_the_owner_of_a_file_we_create(tmp_path: Path) -> None:
    """uid() and euid() are /proc's real and effective uid, and euid() owns a new file."""
    made = tmp_path / "mine"
    made.write_text("x")
    assert system.euid() == made.stat().st_uid
    assert (system.uid(), system.euid()) == _proc_ids("Uid")


@pytest.mark.skipif(os.geteuid() != 0, reason="changing the real uid needs root")
def test_uid_is_the_real_uid_and_euid_the_effective_one() -> None:
    """In a child whose real uid is 65534 and effective uid 0, uid() says 65534, euid() 0."""
    child = subprocess.run(
        [sys.executable, "-c",
         "from dma.adapters import system; print(system.uid(), system.euid())"],
        capture_output=True, text=True, timeout=60, check=False,
        preexec_fn=lambda: os.setresuid(65534, 0, 0),
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["65534", "0"]


@pytest.mark.skipif(shutil.which("getent") is None, reason="needs getent")
def test_user_entry_is_the_password_entry_getent_prints() -> None:
    """user_entry() gives the name, uid, gid and home that getent shows for root and nobody."""
    checked = 0
    for name in ("root", "nobody"):
        fields = _getent(name)
        if fields is None:
            continue
        entry = system.user_entry(name)
        assert entry is not None
        assert (entry.name, entry.uid, entry.gid, entry.home) == (
            fields[0], int(fields[2]), int(fields[3]), fields[5])
        assert system.user_exists(name)
        checked += 1
    assert checked, "neither root nor nobody has a password entry here"


@pytest.mark.parametrize("name", [NO_SUCH_USER, "", "root/x", "ro\0ot", "r\udcffoot", "/"])
def test_a_name_no_user_has_is_none(name: str) -> None:
    """A name that is nobody's, empty, with / or NUL, or not encodable gives None, not an error."""
    assert system.user_entry(name) is None
    assert not system.user_exists(name)


def test_environment_is_the_process_environment() -> None:
    """A variable set for a child process is in that child's environment(), an unset one is not."""
    program = ("from dma.adapters import system; env = system.environment();"
               " print(env.get('PYDMA_TEST_VARIABLE'), 'PYDMA_TEST_UNSET' in env)")
    environ = {**os.environ, "PYDMA_TEST_VARIABLE": "a value=with, odd: chars"}
    environ.pop("PYDMA_TEST_UNSET", None)
    child = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                           env=environ, timeout=60, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout == "a value=with, odd: chars False\n"


def test_environment_sees_changes_made_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """environment() is the live environment: a variable set after the call is seen in it."""
    view = system.environment()
    monkeypatch.setenv("PYDMA_TEST_LIVE", "now")
    assert view["PYDMA_TEST_LIVE"] == "now"


@pytest.mark.parametrize("octets", [0, 1, 4, 12])
def test_random_hex_is_that_many_octets_in_hex(octets: int) -> None:
    """random_hex(n) is 2n lower-case hex digits."""
    text = system.random_hex(octets)
    assert len(text) == 2 * octets
    assert set(text) <= set(string.hexdigits.lower())


def test_random_hex_varies() -> None:
    """A hundred random_hex(12) values are all different (96 random bits each)."""
    assert len({system.random_hex(12) for _ in range(100)}) == 100


def test_jitter_is_a_varying_fraction_in_zero_one() -> None:
    """jitter() values lie in [0, 1), differ from each other and average about a half."""
    values = [system.jitter() for _ in range(2000)]
    assert all(isinstance(value, float) and 0.0 <= value < 1.0 for value in values)
    assert len(set(values)) > 1990  # 32 random bits: a repeat in 2000 is rare
    assert 0.4 < sum(values) / len(values) < 0.6  # mean's spread is about 0.0065
    assert min(values) < 0.1 and max(values) > 0.9
