"""Faults around the queue: damaged or stuck items, odd configs, root-owned mailboxes."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest
from conftest import DmaSite, command


def _immutable(path: Path, on: bool) -> bool:
    """chattr +i/-i; False when the file system cannot do it."""
    done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    return done.returncode == 0


def test_one_stuck_item_does_not_stop_a_queue_run(site: DmaSite) -> None:
    """An item that cannot be claimed is logged and skipped; the others are delivered."""
    site.write_config()
    first = site.send(["root"], b"Subject: stuck\n\nbody\n")[0]
    second = site.send(["root"], b"Subject: fine\n\nbody\n")[0]
    stuck = site.spool / f"Q{first}"
    if not _immutable(stuck, True):
        pytest.skip("this file system has no immutable flag (chattr +i)")
    try:
        site.write_config(defer=False)
        done = site.run(["-q", "-v"])
    finally:
        _immutable(stuck, False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert [entry["id"] for entry in site.queue()] == [first]
    assert b"Subject: fine" in (site.maildir / "root").read_bytes()
    assert second not in {entry["id"] for entry in site.queue()}


def test_damaged_queue_file_is_reported_by_mailq(site: DmaSite) -> None:
    """A Q file cut in the middle of a line is moved to the quarantine by mailq, logged once
    (stderr) and listed with the reason, never just hidden (SPEC 4)."""
    site.write_config()
    (item_id,) = site.send(["root"], b"Subject: damaged\n\nbody\n")
    queue_file = site.spool / f"Q{item_id}"
    queue_file.write_bytes(queue_file.read_bytes()[:20])
    done = site.run(["-bp"])
    assert done.returncode == 0
    assert f"{item_id}: damaged; moved to the quarantine".encode() in done.stderr
    assert f"ID\t: {item_id}\n".encode() in done.stdout
    assert b"Status\t: quarantined" in done.stdout and b"1 quarantined" in done.stdout
    assert (site.spool / "quarantine" / item_id / f"Q{item_id}").exists()
    again = site.run(["-bp"])
    assert again.stderr == b"" and f"ID\t: {item_id}\n".encode() in again.stdout


def test_queue_run_delivers_around_a_damaged_queue_file(site: DmaSite) -> None:
    """`dma -q` delivers the good items, names the damaged Q file (with -v on stderr) and
    moves it with its M to the quarantine for the admin, never deleting it."""
    site.write_config()
    (damaged,) = site.send(["root"], b"Subject: damaged\n\nbody\n")
    (good,) = site.send(["root"], b"Subject: good\n\nbody\n")
    queue_file = site.spool / f"Q{damaged}"
    cut = queue_file.read_bytes()[:20]
    queue_file.write_bytes(cut)
    site.write_config(defer=False)
    done = site.run(["-q", "-v"])
    assert done.returncode == 0, done.stderr
    assert f"{damaged}: cannot take queue item".encode() in done.stderr
    assert f"queue item {damaged} is damaged".encode() in done.stderr
    held = site.spool / "quarantine" / damaged
    assert (held / f"Q{damaged}").read_bytes() == cut
    assert b"Subject: damaged" in (held / f"M{damaged}").read_bytes()
    assert not queue_file.exists() and not (site.spool / f"Q{good}").exists()
    assert b"Subject: good" in (site.maildir / "root").read_bytes()


def test_relative_paths_in_the_config_are_relative_to_the_config_file(
    site: DmaSite, tmp_path: Path
) -> None:
    """SPOOLDIR spool in /x/dma.conf means /x/spool, whatever the cwd of the caller."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    config = conf_dir / "dma.conf"
    config.write_text("SPOOLDIR spool\nMAILDIR mail\nDEFER\n")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    done = subprocess.run(
        [*command("dma"), "-C", str(config), "root"],
        input=b"Subject: rel\n\nx\n", cwd=elsewhere, capture_output=True, env=site.environ,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert any(name.startswith("Q") for name in os.listdir(conf_dir / "spool"))
    assert not (elsewhere / "spool").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root delivers into other users' Maildirs")
def test_root_maildir_delivery_gives_the_file_to_the_user(site: DmaSite) -> None:
    """A Maildir message written by root belongs to the mailbox's user, who can read it."""
    user = "nobody"
    entry = pwd.getpwnam(user)
    box = site.maildir / user
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    site.write_config(defer=False)
    done = site.run(["-D", user], b"Subject: for nobody\n\nbody\n")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (message,) = list((box / "new").iterdir())
    info = message.stat()
    assert (info.st_uid, info.st_gid) == (entry.pw_uid, entry.pw_gid)


def test_bounce_now_that_cannot_be_made_says_so(site: DmaSite) -> None:
    """-Qb for an item whose sender cannot get a bounce (an unknown local name, and
    nobody as postmaster) reports it and exits 75."""
    site.write_config()
    (item_id,) = site.send(["-f", "ghost-sender", "root"], b"Subject: x\n\nbody\n")
    site.write_aliases("postmaster: gone-admin-xyz\nroot: gone-admin-xyz\n")
    site.write_config(defer=False)
    done = site.run(["-Qb", item_id])
    assert done.returncode == 75
    assert b"could not be made" in done.stderr
    assert [entry["id"] for entry in site.queue()] == [item_id]
