"""The spool adapter on real files: commit order, listing, locking across processes, cleaning."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dma.adapters.spool import Spool
from dma.core.errors import CantCreateError, DataError, SoftwareError
from dma.core.queuefile import QueueItem, parse_queue_file

CLAIM_SCRIPT = """
import sys
from dma.adapters.spool import Spool
claim = Spool(sys.argv[1]).claim(sys.argv[2])
print("none" if claim is None else "claimed:" + claim.item.recipient)
"""


def spool_in(tmp_path: Path) -> Spool:
    """A prepared spool under tmp_path."""
    spool = Spool(str(tmp_path / "spool"))
    spool.prepare()
    return spool


def queue(spool: Spool, body: bytes, *recipients: str, sender: str = "s@x") -> list[QueueItem]:
    """Spool ``body`` for ``recipients`` and return the items."""
    message_id = spool.new_message_id()
    items = [QueueItem(f"{message_id}.{n:x}", sender, r) for n, r in enumerate(recipients)]
    with spool.begin() as writer:
        writer.file.write(body)
        spool.commit(writer, message_id, items)
    return items


def names(spool: Spool) -> set[str]:
    """The file names in the spool directory."""
    return set(os.listdir(spool.directory))


def claim_elsewhere(spool: Spool, item_id: str) -> str:
    """Try to claim ``item_id`` from another process; return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", CLAIM_SCRIPT, spool.directory, item_id],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout.strip()


def test_prepare_creates_a_private_directory(tmp_path: Path) -> None:
    """prepare makes the spool (and parents) with mode 0700 and accepts an existing one."""
    spool = Spool(str(tmp_path / "a" / "spool"))
    spool.prepare()
    spool.prepare()
    assert stat.S_IMODE(os.stat(spool.directory).st_mode) == 0o700


def test_prepare_under_a_file_is_cant_create(tmp_path: Path) -> None:
    """A spool path below a regular file raises CantCreateError naming the path."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(CantCreateError, match="file/spool"):
        Spool(str(tmp_path / "file" / "spool")).prepare()


def test_begin_without_commit_leaves_nothing(tmp_path: Path) -> None:
    """The temp message is a 0660 tmp_ file that disappears when the writer exits uncommitted."""
    spool = spool_in(tmp_path)
    with spool.begin() as writer:
        writer.file.write(b"data")
        name = os.path.basename(writer.path)
        assert name.startswith("tmp_")
        assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o660
    assert names(spool) == set()


def test_commit_then_entries_round_trip(tmp_path: Path) -> None:
    """Committed items list with their content, M size and arrival, and no temp files remain."""
    spool = spool_in(tmp_path)
    before = time.time()
    body = b"Received: x\n\nhello\n"
    items = queue(spool, body, "a@y", "b@z")
    entries = spool.entries()
    assert [e.item for e in entries] == items
    assert all(e.size == len(body) and not e.locked for e in entries)
    assert all(before - 1 <= e.arrival <= time.time() + 1 for e in entries)
    assert names(spool) == {f"{p}{i.id}" for i in items for p in "QM"}


def test_m_files_are_hard_links_and_q_files_are_c_compatible(tmp_path: Path) -> None:
    """Per recipient M files share one inode and each Q file holds the C dma's three lines."""
    spool = spool_in(tmp_path)
    items = queue(spool, b"body\n", "a@y", "b@z")
    infos = [os.stat(spool.path("M" + i.id)) for i in items]
    assert infos[0].st_ino == infos[1].st_ino and infos[0].st_nlink == 2
    text = Path(spool.path("Q" + items[1].id)).read_bytes()
    assert text == f"ID: {items[1].id}\nSender: s@x\nRecipient: b@z\n".encode()


def test_commit_failure_part_way_removes_what_it_made(tmp_path: Path) -> None:
    """When the second recipient's M cannot be made, the first item's files are removed too."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    items = [QueueItem(f"{message_id}.{n}", "s", f"r{n}@y") for n in range(3)]
    Path(spool.path("M" + items[1].id)).write_bytes(b"someone else's")
    with spool.begin() as writer:
        writer.file.write(b"body\n")
        with pytest.raises(CantCreateError) as caught:
            spool.commit(writer, message_id, items)
    assert spool.directory in str(caught.value)
    assert "exists" in str(caught.value)
    assert names(spool) == {"M" + items[1].id}
    assert Path(spool.path("M" + items[1].id)).read_bytes() == b"someone else's"


def test_commit_never_replaces_an_existing_q_file(tmp_path: Path) -> None:
    """An existing Q file of the same name makes the commit fail and stays as it was."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    item = QueueItem(f"{message_id}.0", "s", "r@y")
    Path(spool.path("Q" + item.id)).write_bytes(b"old")
    with spool.begin() as writer, pytest.raises(CantCreateError):
        spool.commit(writer, message_id, [item])
    assert names(spool) == {"Q" + item.id}
    assert Path(spool.path("Q" + item.id)).read_bytes() == b"old"


def test_commit_in_a_vanished_directory_is_cant_create(tmp_path: Path) -> None:
    """A spool directory removed after begin makes commit raise CantCreateError."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    with spool.begin() as writer:
        writer.file.write(b"body\n")
        os.unlink(writer.path)
        os.rmdir(spool.directory)
        with pytest.raises(CantCreateError, match="No such file"):
            spool.commit(writer, message_id, [QueueItem(f"{message_id}.0", "s", "r")])


@pytest.mark.parametrize("bad_id", ["other.0", "{m}", "{m}.", "{m}.xyz", "{m}.0/../x"])
def test_commit_refuses_foreign_item_ids(tmp_path: Path, bad_id: str) -> None:
    """Item ids that are not <message id>.<hex> raise SoftwareError before any file is made."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    with spool.begin() as writer, pytest.raises(SoftwareError):
        spool.commit(writer, message_id, [QueueItem(bad_id.format(m=message_id), "s", "r")])
    assert names(spool) == set()


def test_entries_skip_incomplete_and_report_malformed(tmp_path: Path) -> None:
    """A Q without M and stray files are skipped; a malformed Q is a problem, not an entry."""
    spool = spool_in(tmp_path)
    (good,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Qlonely.0")).write_bytes(b"ID: lonely.0\nSender: s\nRecipient: r\n")
    Path(spool.path("Qbad.0")).write_bytes(b"no colon here\n")
    Path(spool.path("Mbad.0")).write_bytes(b"x\n")
    Path(spool.path("flush")).write_bytes(b"")
    scan = spool.scan()
    assert [e.item for e in scan.entries] == [good]
    assert [p.name for p in scan.problems] == ["Qbad.0"]
    assert isinstance(scan.problems[0].error, DataError)
    assert [p.name for p in spool.problems()] == ["Qbad.0"]


def test_entries_are_sorted_by_arrival(tmp_path: Path) -> None:
    """Items list oldest first by their Q file's mtime."""
    spool = spool_in(tmp_path)
    (first,) = queue(spool, b"x\n", "first@y")
    (second,) = queue(spool, b"x\n", "second@y")
    os.utime(spool.path("Q" + first.id), (1000, 1000))
    os.utime(spool.path("Q" + second.id), (500, 500))
    assert [e.item.recipient for e in spool.entries()] == ["second@y", "first@y"]


def test_claim_excludes_another_process(tmp_path: Path) -> None:
    """While claimed, another process gets None; after release it can claim the item."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    with spool.claim(item.id) as claim:
        assert claim is not None
        assert claim.item == item
        assert claim_elsewhere(spool, item.id) == "none"
        assert [e.locked for e in spool.entries()] == [True]
    assert claim_elsewhere(spool, item.id) == "claimed:a@y"
    assert [e.locked for e in spool.entries()] == [False]


def test_claim_of_missing_or_incomplete_item_is_none(tmp_path: Path) -> None:
    """A vanished item or a Q without its M cannot be claimed."""
    spool = spool_in(tmp_path)
    assert spool.claim("nothing.0") is None
    (item,) = queue(spool, b"x\n", "a@y")
    os.unlink(spool.path("M" + item.id))
    assert spool.claim(item.id) is None


def test_claim_of_malformed_item_raises_and_releases(tmp_path: Path) -> None:
    """A claimed Q that does not parse raises DataError and leaves no lock behind."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Q" + item.id)).write_bytes(b"garbage\n")
    with pytest.raises(DataError):
        spool.claim(item.id)
    fd = os.open(spool.path("Q" + item.id), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_update_rewrites_in_place_and_keeps_arrival(tmp_path: Path) -> None:
    """update changes the Q content on the same inode, keeps its mtime and the lock."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    qpath = spool.path("Q" + item.id)
    os.utime(qpath, ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    inode = os.stat(qpath).st_ino
    later = QueueItem(item.id, item.sender, item.recipient, 2, 1_700_000_300, "451 " + "x" * 500)
    with spool.claim(item.id) as claim:
        assert claim is not None
        assert claim.arrival == pytest.approx(1_600_000_000.123456789)
        claim.update(later)
        long_size = os.stat(qpath).st_size
        claim.update(QueueItem(item.id, item.sender, item.recipient, 3, 5, "short"))
        assert claim_elsewhere(spool, item.id) == "none"
        # never shrunk in place: a crash between write and truncate leaves no old tail
        assert os.stat(qpath).st_size == long_size
    info = os.stat(qpath)
    assert info.st_ino == inode
    assert info.st_mtime_ns == 1_600_000_000_123_456_789
    reread = parse_queue_file(Path(qpath).read_bytes(), qpath)
    assert (reread.attempts, reread.next_try, reread.last_error) == (3, 5, "short")


def test_update_refuses_another_id(tmp_path: Path) -> None:
    """A claim only rewrites its own item."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    with spool.claim(item.id) as claim:
        assert claim is not None
        with pytest.raises(SoftwareError):
            claim.update(QueueItem("other.0", "s", "r"))


def test_delete_removes_one_recipient_only(tmp_path: Path) -> None:
    """delete removes its M and Q; the other recipient's hard link keeps the message."""
    spool = spool_in(tmp_path)
    first, second = queue(spool, b"body\n", "a@y", "b@z")
    with spool.claim(first.id) as claim:
        assert claim is not None
        claim.delete()
    assert names(spool) == {"Q" + second.id, "M" + second.id}
    assert Path(spool.path("M" + second.id)).read_bytes() == b"body\n"
    assert spool.claim(first.id) is None


def test_clean_removes_old_orphans_and_keeps_the_rest(tmp_path: Path) -> None:
    """clean removes old tmp_, lone Q and lone M files; fresh, locked or whole items stay."""
    spool = spool_in(tmp_path)
    now = time.time()
    old = now - 7200
    (whole,) = queue(spool, b"x\n", "a@y")
    files = {
        "tmp_old": old, "tmp_qold": old, "Qorphan.0": old, "Morphan.1": old,
        "tmp_fresh": now, "Qfresh.0": now, "Mfresh.1": now, "Qlocked.0": old,
        "Mstray name": old, "flush": old,
    }
    for name, mtime in files.items():
        Path(spool.path(name)).write_bytes(b"ID: x.0\nSender: s\nRecipient: r\n")
        os.utime(spool.path(name), (mtime, mtime))
    for prefix in "QM":
        os.utime(spool.path(prefix + whole.id), (old, old))
    holder = os.open(spool.path("Qlocked.0"), os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        removed = spool.clean(now)
    finally:
        os.close(holder)
    assert sorted(removed) == ["Morphan.1", "Qorphan.0", "tmp_old", "tmp_qold"]
    assert names(spool) == {
        "tmp_fresh", "Qfresh.0", "Mfresh.1", "Qlocked.0", "Mstray name", "flush",
        "Q" + whole.id, "M" + whole.id,
    }
    assert spool.clean(now + 7200, grace=3600) == sorted(
        ["Mfresh.1", "Qfresh.0", "Qlocked.0", "tmp_fresh"]
    )


def test_message_ids_are_unique_in_one_process() -> None:
    """10 000 ids from one process are distinct hex strings."""
    spool = Spool("/nonexistent")
    ids = [spool.new_message_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(int(i, 16) >= 0 for i in ids)


def test_message_ids_are_unique_across_processes() -> None:
    """Ids made at the same time by four processes never collide."""
    script = (
        "from dma.adapters.spool import Spool\n"
        "s = Spool('/nonexistent')\n"
        "print('\\n'.join(s.new_message_id() for _ in range(2500)))\n"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    ids = []
    for run in runs:
        out, _ = run.communicate(timeout=60)
        assert run.returncode == 0
        ids.extend(out.split())
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000


def test_clean_leaves_an_old_temp_file_that_a_submission_is_still_writing(tmp_path: Path) -> None:
    """A slow submission's temp file, old but still locked by its writer, survives clean()."""
    spool = Spool(str(tmp_path))
    spool.prepare()
    writer = spool.begin()
    writer.file.write(b"Subject: slow\n\n")
    writer.file.flush()
    old = time.time() - 7200
    os.utime(writer.path, (old, old))
    assert spool.clean(time.time()) == []
    assert os.path.exists(writer.path)
    # once its writer is gone (a crash), the same file is stale and goes
    writer.file.close()
    assert spool.clean(time.time()) == [os.path.basename(writer.path)]


def test_item_ids_lists_complete_items_oldest_first(tmp_path: Path) -> None:
    """item_ids gives every Q with its M by arrival (Q mtime), without a Q lacking its M,
    temp files or other names, the same items scan lists."""
    spool = spool_in(tmp_path)
    first, second = queue(spool, b"x\n", "a@y", "b@y")
    (third,) = queue(spool, b"y\n", "c@y")
    for item, moment in ((first, 300), (second, 100), (third, 200)):
        os.utime(spool.path("Q" + item.id), (moment, moment))
    Path(spool.path("Qlonely.0")).write_bytes(b"ID: lonely.0\nSender: \nRecipient: r@x\n")
    Path(spool.path("tmp_leftover")).write_bytes(b"")
    assert spool.item_ids() == [second.id, third.id, first.id]
    assert [entry.item.id for entry in spool.scan().entries] == spool.item_ids()
