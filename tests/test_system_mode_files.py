"""Modes of what system mode shares (SPEC 8.2), on real files: a set-gid spool gets
root-write group-read queue files and a group-writable slot directory, whatever the
umask; a root:mail MAILDIR gets <user>:mail 0660 mailboxes.  Elsewhere, as before."""

from __future__ import annotations

import grp
import io
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dma.adapters.mailbox import deliver, new_mailbox_owner
from dma.adapters.slots import Slots
from dma.adapters.spool import Spool
from dma.core.queuefile import QueueItem
from dma.core.system_layout import MAIL_GROUP, MAILBOX_MODE, SPOOL_FILE_MODE


@pytest.fixture(name="umask_077")
def umask_077_fixture() -> Iterator[None]:
    old = os.umask(0o077)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _queue(directory: Path) -> str:
    spool = Spool(str(directory))
    message_id = spool.new_message_id()
    with spool.begin() as writer:
        writer.file.write(b"Subject: x\n\nhi\n")
        spool.commit(writer, message_id, [QueueItem(f"{message_id}.0", "s@x", "r@y")])
    return f"{message_id}.0"


def test_a_set_gid_spool_gets_files_its_group_may_only_read(tmp_path: Path,
                                                            umask_077: None) -> None:
    """In a set-gid spool directory the Q and M files are SPOOL_FILE_MODE (0640) even
    under umask 077; in a plain one they stay 0660, as before."""
    shared, plain = tmp_path / "shared", tmp_path / "plain"
    shared.mkdir()
    plain.mkdir()
    shared.chmod(0o2750)
    item = _queue(shared)
    assert {_mode(shared / f"{kind}{item}") for kind in "QM"} == {SPOOL_FILE_MODE}
    item = _queue(plain)
    assert {_mode(plain / f"{kind}{item}") for kind in "QM"} == {0o660}


def test_a_set_gid_spool_gets_a_slot_directory_its_group_may_use(tmp_path: Path,
                                                                 umask_077: None) -> None:
    """The slot directory of a set-gid spool is 2770 and our slot files in it 0660 under
    umask 077 (the delivery user takes slots there); a plain spool's keep the umask."""
    shared, plain = tmp_path / "shared", tmp_path / "plain"
    shared.mkdir()
    plain.mkdir()
    shared.chmod(0o2750)
    for directory in (shared, plain):
        slot = Slots(str(directory), 1).try_acquire()
        assert slot is not None
        slot.release()
    assert _mode(shared / ".slots") == 0o2770 and _mode(shared / ".slots" / "0") == 0o660
    assert _mode(plain / ".slots") == 0o700 and _mode(plain / ".slots" / "0") == 0o600


def test_a_shared_slot_directory_made_before_is_opened_to_the_group(tmp_path: Path) -> None:
    """A slot directory of ours left 0750 in a set-gid spool is made 2770 on next use."""
    tmp_path.chmod(0o2750)
    (tmp_path / ".slots").mkdir(mode=0o750)
    Slots(str(tmp_path), 1).prepare()
    assert _mode(tmp_path / ".slots") == 0o2770


def test_new_mailboxes_follow_the_mail_directory(tmp_path: Path) -> None:
    """A MAILDIR of root:mail gives <user>:mail 0660 (set-gid or not); any other gives
    <user>:<user's group> 0600, and one that cannot be looked at too."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory to root:mail needs root")
    mail = grp.getgrnam(MAIL_GROUP).gr_gid
    debian, fedora, other = tmp_path / "debian", tmp_path / "fedora", tmp_path / "other"
    for directory, mode, gid in ((debian, 0o2775, mail), (fedora, 0o775, mail),
                                 (other, 0o2775, 0)):
        directory.mkdir()
        os.chown(directory, 0, gid)
        directory.chmod(mode)
    assert new_mailbox_owner(str(debian), 1234, 1235) == ((1234, mail), MAILBOX_MODE)
    assert new_mailbox_owner(str(fedora), 1234, 1235) == ((1234, mail), MAILBOX_MODE)
    assert new_mailbox_owner(str(other), 1234, 1235) == ((1234, 1235), 0o600)
    assert new_mailbox_owner(str(tmp_path / "none"), 1234, 1235) == ((1234, 1235), 0o600)


def test_a_new_mailbox_gets_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    """deliver(mode=0660) under umask 022 makes a 0660 mbox; an existing one keeps its mode."""
    old = os.umask(0o022)
    try:
        box = tmp_path / "user"
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        deliver(str(box), io.BytesIO(b"Subject: a\n\nhi\n"), "s@x", when, mode=0o660)
        assert _mode(box) == 0o660
        box.chmod(0o600)
        deliver(str(box), io.BytesIO(b"Subject: b\n\nhi\n"), "s@x", when, mode=0o660)
        assert _mode(box) == 0o600 and box.read_bytes().count(b"\nFrom s@x ") == 1
    finally:
        os.umask(old)
