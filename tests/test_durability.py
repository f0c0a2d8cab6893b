"""Submission is durable before it says so (SPEC 3.8, 4): the order of the system calls.

A SIGKILL test cannot see a missing fsync (the page cache survives a killed process),
so this one watches the real calls with strace: the message is fsynced before it gets
its M names, each Q text before it gets its Q name, and the spool directory after the
last name is made, all before dma exits 0.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import DmaSite, command, login_name

_CALL = re.compile(r"^\d+ +(\w+)\((.*)\) += (-?\d+)")
_PATHS = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _strace() -> str:
    found = shutil.which("strace")
    if found:
        return found
    if os.geteuid() == 0:
        pytest.fail("strace is missing: scripts/setup installs it")
    pytest.skip("strace is not installed (scripts/setup installs it as root)")


def _trace_submission(site: DmaSite, recipients: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Submit a message under strace; return (call, paths) in order, fds named by path."""
    log = site.root / "strace.out"
    done = subprocess.run(
        [_strace(), "-f", "-o", str(log), "-e",
         "trace=openat,close,fsync,fdatasync,link,linkat,rename,renameat2,unlink,unlinkat",
         *command("dma"), "-C", str(site.config), *recipients],
        input=b"Subject: durable\n\nbody\n", capture_output=True, env=site.environ,
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    spool = str(site.spool)
    open_files: dict[str, str] = {}
    calls: list[tuple[str, tuple[str, ...]]] = []
    for line in log.read_text().splitlines():
        match = _CALL.match(line)
        if not match or int(match.group(3)) < 0:
            continue
        name, args, result = match.groups()
        paths = tuple(_PATHS.findall(args))
        if name == "openat" and paths:
            open_files[result] = paths[0]
            continue
        if name == "close":
            open_files.pop(args.strip(), None)
            continue
        if name in ("fsync", "fdatasync"):
            paths = (open_files.get(args.strip(), "?"),)
        if any(p.startswith(spool) for p in paths):
            calls.append((name, paths))
    return calls


def test_every_name_appears_only_after_its_data_is_on_disk(site: DmaSite) -> None:
    """The message and each Q text are fsynced before they are linked into their names,
    and the spool directory is fsynced after the last name, before exit 0."""
    calls = _trace_submission(site, [login_name(), "remote@example.org"])
    synced: set[str] = set()
    links: list[int] = []
    for index, (name, paths) in enumerate(calls):
        if name in ("fsync", "fdatasync"):
            synced.add(paths[0])
        elif name in ("link", "linkat"):
            source, target = paths[0], paths[-1]
            assert source in synced, f"{target} was linked before {source} was fsynced"
            assert Path(target).name[0] in "MQ"
            links.append(index)
    names = [Path(p[-1]).name[0] for n, p in calls if n in ("link", "linkat")]
    assert names.count("M") == 2 and names.count("Q") == 2
    directory_syncs = [i for i, (n, p) in enumerate(calls)
                       if n in ("fsync", "fdatasync") and p[0] == str(site.spool)]
    assert directory_syncs and directory_syncs[-1] > links[-1]
