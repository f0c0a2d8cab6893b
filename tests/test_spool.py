"""The spool adapter on real files: commit order, listing, locking across processes, cleaning."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dma.adapters.quarantine import DamagedItem, Quarantined
from dma.adapters.spool import Spool, SpoolProblem
from dma.core.errors import CantCreateError, DataError, NoInputError, SoftwareError
from dma.core.queuefile import QueueItem, parse_queue_file

CLAIM_SCRIPT = """
import sys
from dma.adapters.quarantine import DamagedItem, Quarantined
from dma.adapters.spool import Spool, SpoolProblem
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


def test_entries_skip_incomplete_and_quarantine_malformed(tmp_path: Path) -> None:
    """A Q without M and stray files are skipped; a malformed Q is no entry but is moved,
    with its M, to quarantine/<id>/ and reported to on_quarantine once (SPEC 4)."""
    moved: list[Quarantined] = []
    spool = Spool(str(tmp_path / "spool"), on_quarantine=moved.append)
    spool.prepare()
    (good,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Qlonely.0")).write_bytes(b"ID: lonely.0\nSender: s\nRecipient: r\n")
    Path(spool.path("Qbad.0")).write_bytes(b"no colon here\n")
    Path(spool.path("Mbad.0")).write_bytes(b"x\n")
    Path(spool.path("flush")).write_bytes(b"")
    scan = spool.scan()
    assert [e.item for e in scan.entries] == [good]
    assert scan.problems == ()
    assert [(m.item_id, m.name) for m in moved] == [("bad.0", "bad.0")]
    assert "has no ':'" in moved[0].reason
    assert sorted(os.listdir(spool.path("quarantine/bad.0"))) == ["Mbad.0", "Qbad.0", "reason"]
    assert {"Qbad.0", "Mbad.0"}.isdisjoint(names(spool))
    assert spool.scan().problems == () and len(moved) == 1


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
    """A claimed Q that does not parse is moved to the quarantine, DamagedItem (a DataError)
    names it, and no lock is left behind."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Q" + item.id)).write_bytes(b"garbage\n")
    with pytest.raises(DataError) as caught:
        spool.claim(item.id)
    assert isinstance(caught.value, DamagedItem)
    assert f"quarantine/{item.id}" in str(caught.value) and "-Qr" in str(caught.value)
    assert spool.claim(item.id) is None
    fd = os.open(spool.path(f"quarantine/{item.id}/Q{item.id}"), os.O_RDONLY)
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



def test_listing_reads_each_item_when_it_is_asked_for(tmp_path: Path) -> None:
    """listing gives scan's items one at a time, oldest first, each Q file read only when
    its turn comes: an item deleted after the listing began is not listed, and a damaged
    one is moved aside (and reported) at its turn, not before."""
    moved: list[Quarantined] = []
    spool = Spool(str(tmp_path / "spool"), on_quarantine=moved.append)
    spool.prepare()
    first, second, third = queue(spool, b"x\n", "a@y", "b@y", "c@y")
    Path(spool.path("Qbad.0")).write_bytes(b"no colon here\n")
    Path(spool.path("Mbad.0")).write_bytes(b"x\n")
    for name, moment in (("Q" + first.id, 100), ("Q" + second.id, 200), ("Qbad.0", 250),
                         ("Q" + third.id, 300)):
        os.utime(spool.path(name), (moment, moment))
    listing = spool.listing()
    found = next(listing)
    assert not isinstance(found, SpoolProblem) and found.item == first
    os.unlink(spool.path("Q" + second.id))  # delivered meanwhile
    assert moved == []
    rest = list(listing)
    assert [(e.item, e.arrival) for e in rest if not isinstance(e, SpoolProblem)] == [
        (third, 300.0)]
    assert [m.item_id for m in moved] == ["bad.0"]

# --- many recipients: more M links than one inode may have ----------------------------------


def test_commit_spreads_m_links_over_copies_after_max_links(tmp_path: Path) -> None:
    """With max_links 3, seven recipients get M files on three inodes (3, 3, 1 links), each
    a whole copy of the message; no temp file is left."""
    spool = spool_in(tmp_path)
    body = b"Received: x\n\n" + b"line\n" * 5000
    message_id = spool.new_message_id()
    items = [QueueItem(f"{message_id}.{n:x}", "s@x", f"r{n}@y") for n in range(7)]
    with spool.begin() as writer:
        writer.file.write(body)
        spool.commit(writer, message_id, items, max_links=3)
    inodes = Counter(os.stat(spool.path("M" + item.id)).st_ino for item in items)
    assert sorted(inodes.values()) == [1, 3, 3]
    assert all(Path(spool.path("M" + i.id)).read_bytes() == body for i in items)
    assert names(spool) == {f"{p}{i.id}" for i in items for p in "QM"}
    assert [e.item for e in spool.entries()] == items


def test_commit_failure_after_a_copy_removes_the_copy_too(tmp_path: Path) -> None:
    """A commit that fails after it copied the message (a Q name taken) removes every file
    it made, the copies included, and leaves the taken name alone."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    items = [QueueItem(f"{message_id}.{n:x}", "s@x", f"r{n}@y") for n in range(6)]
    Path(spool.path("Q" + items[4].id)).write_bytes(b"someone else's")
    with spool.begin() as writer:
        writer.file.write(b"body\n")
        with pytest.raises(CantCreateError, match="exists"):
            spool.commit(writer, message_id, items, max_links=2)
        assert names(spool) == {"Q" + items[4].id, os.path.basename(writer.path)}


def test_commit_refuses_a_max_links_below_one(tmp_path: Path) -> None:
    """max_links 0 is a bug in the caller, refused before any file is made."""
    spool = spool_in(tmp_path)
    message_id = spool.new_message_id()
    with spool.begin() as writer, pytest.raises(SoftwareError):
        spool.commit(writer, message_id, [QueueItem(f"{message_id}.0", "s", "r")], max_links=0)


_EMLINK_DRIVER = """
import collections, json, os, subprocess, sys
dma, conf, mount = sys.argv[1:4]
count = os.pathconf(mount, "PC_LINK_MAX") + 5
fields = []
for start in range(0, count, 5000):
    chunk = [f"u{n}@example.org" for n in range(start, min(count, start + 5000))]
    fields.append("To: " + ",\\n ".join(chunk))
text = "Subject: many\\n" + "\\n".join(fields) + "\\n\\nbody\\n"
done = subprocess.run([dma, "-C", conf, "-t"], input=text.encode(), capture_output=True)
spool = os.path.join(mount, "spool")
names = os.listdir(spool)
inodes = collections.Counter(os.lstat(os.path.join(spool, n)).st_ino
                             for n in names if n.startswith("M"))
sizes = {os.lstat(os.path.join(spool, n)).st_size for n in names if n.startswith("M")}
print(json.dumps({"count": count, "exit": done.returncode, "stderr": done.stderr.decode()[-500:],
                  "q": sum(n.startswith("Q") for n in names), "links": sorted(inodes.values()),
                  "sizes": sorted(sizes), "other": sorted(n for n in names if n[0] not in "QM")}))
"""


@pytest.mark.slow
def test_t_with_more_recipients_than_an_inode_has_links(tmp_path: Path) -> None:
    """`dma -t` with 5 more recipients than a real loop-mounted ext2 lets one inode have
    links (link() then fails with EMLINK) queues them all: the M links go on from a copy."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "mount", "mkfs.ext2"))):
        pytest.skip("needs root, unshare, mount and mkfs.ext2 for a loop-mounted ext2")
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else tmp_path
    image = base / f"dma-emlink-{os.getpid()}.img"
    mount = tmp_path / "mnt"
    mount.mkdir()
    (tmp_path / "dma.conf").write_text(
        f"SPOOLDIR {mount}/spool\nMAILDIR {mount}/mail\nDEFER\nSMARTHOST 127.0.0.1\n")
    (tmp_path / "driver.py").write_text(_EMLINK_DRIVER)
    dma = Path(sys.executable).parent / "dma"
    script = (f"mount -o loop {image} {mount} || exit 99; "
              f"{sys.executable} {tmp_path}/driver.py {dma} {tmp_path}/dma.conf {mount}")
    try:
        made = subprocess.run(["mkfs.ext2", "-q", "-F", "-b", "2048", "-N", "140000", str(image),
                               "320M"], capture_output=True, timeout=120)
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext2 failed: {made.stderr.decode(errors='replace')}")
        done = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True,
                              timeout=280)
    finally:
        image.unlink(missing_ok=True)
    if done.returncode == 99:
        pytest.skip(f"no loop mount here: {done.stderr.decode(errors='replace')[:300]}")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    facts = json.loads(done.stdout.decode().splitlines()[-1])
    assert facts["exit"] == 0, facts["stderr"]
    assert facts["q"] == facts["count"] and facts["other"] == []
    assert len(facts["sizes"]) == 1
    assert sum(facts["links"]) == facts["count"] and len(facts["links"]) == 2
    assert max(facts["links"]) < facts["count"] - 5


# --- damaged items: the quarantine (SPEC 4) ---------------------------------------------------


def quarantined_spool(tmp_path: Path) -> tuple[Spool, list[Quarantined]]:
    """A prepared spool whose on_quarantine collects what it moves aside."""
    moved: list[Quarantined] = []
    spool = Spool(str(tmp_path / "spool"), on_quarantine=moved.append)
    spool.prepare()
    return spool, moved


def test_claim_of_symlinked_message_moves_the_link_not_its_target(tmp_path: Path) -> None:
    """An M that is a symbolic link makes claim raise DamagedItem; the link itself is in the
    quarantine and its target is neither read, moved nor changed."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    target = tmp_path / "target"
    target.write_bytes(b"secret")
    os.unlink(spool.path("M" + item.id))
    os.symlink(target, spool.path("M" + item.id))
    with pytest.raises(DamagedItem) as caught:
        spool.claim(item.id)
    assert caught.value.moved.reason == f"its message file M{item.id} is a symbolic link"
    held = Path(spool.path(f"quarantine/{item.id}"))
    assert os.readlink(held / f"M{item.id}") == str(target)
    assert target.read_bytes() == b"secret" and names(spool) == {"quarantine"}
    [entry] = spool.quarantine().entries()
    assert (entry.name, entry.item_id, entry.item, entry.size) == (item.id, item.id, item, None)


@pytest.mark.parametrize("odd", ["fifo", "symlink", "directory"])
def test_claim_of_a_queue_file_that_is_not_regular(tmp_path: Path, odd: str) -> None:
    """A Q<id> that is a FIFO, a symbolic link or a directory (with its M) is quarantined by
    claim without being opened, so a FIFO cannot hang the run."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    qpath = spool.path("Q" + item.id)
    os.unlink(qpath)
    {"fifo": os.mkfifo, "directory": os.mkdir,
     "symlink": lambda p: os.symlink("/etc/passwd", p)}[odd](qpath)
    with pytest.raises(DamagedItem, match=f"its queue file Q{item.id} is a"):
        spool.claim(item.id)
    assert names(spool) == {"quarantine"}
    assert sorted(os.listdir(spool.path(f"quarantine/{item.id}"))) == [
        f"M{item.id}", f"Q{item.id}", "reason"]


def test_latin1_queue_file_is_claimed_not_quarantined(tmp_path: Path) -> None:
    """A Q file with a Latin-1 sender (C dma) is no damage: claim reads it with the octet
    kept as a surrogate escape."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Q" + item.id)).write_bytes(
        f"ID: {item.id}\nSender: j\xf6rg@x\nRecipient: a@y\n".encode("latin-1"))
    with spool.claim(item.id) as claim:
        assert claim is not None
        assert claim.item.sender == "j\udcf6rg@x"


def test_an_interrupted_move_is_finished_by_the_next_look(tmp_path: Path) -> None:
    """A crash after Q and M were linked into quarantine/<id>/ but before they left the
    spool: the next scan finishes that move (same directory, first reason kept)."""
    spool, moved = quarantined_spool(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Q" + item.id)).write_bytes(b"garbage\n")
    held = Path(spool.path(f"quarantine/{item.id}"))
    held.mkdir(parents=True)
    for prefix in "QM":
        os.link(spool.path(prefix + item.id), held / f"{prefix}{item.id}")
    (held / "reason").write_text(f"Item: {item.id}\nReason: the first reason\n")
    assert spool.scan().entries == ()
    assert [m.name for m in moved] == [item.id]
    assert names(spool) == {"quarantine"}
    assert os.listdir(spool.path("quarantine")) == [item.id]
    assert [e.reason for e in spool.quarantine().entries()] == ["the first reason"]


def test_a_taken_quarantine_name_gets_a_number(tmp_path: Path) -> None:
    """When quarantine/<id> holds another item of that id, the next one goes to <id>-2; each
    is listed, released or deleted by its own name."""
    spool, moved = quarantined_spool(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    earlier = Path(spool.path(f"quarantine/{item.id}"))
    earlier.mkdir(parents=True)
    (earlier / f"Q{item.id}").write_bytes(b"old garbage")
    os.mkfifo(spool.path("M" + item.id + ".tmp"))
    os.replace(spool.path("M" + item.id + ".tmp"), spool.path("M" + item.id))
    spool.scan()
    assert [m.name for m in moved] == [f"{item.id}-2"]
    quarantine = spool.quarantine()
    assert sorted(e.name for e in quarantine.entries()) == [item.id, f"{item.id}-2"]
    assert quarantine.delete(f"{item.id}-2") == item.id
    assert [e.name for e in quarantine.entries()] == [item.id]


def test_release_checks_the_item_and_never_replaces_a_queued_one(tmp_path: Path) -> None:
    """release refuses an item still damaged (DataError naming why) and one whose name is
    queued again (CantCreateError), changing nothing; a whole one goes back, M first."""
    spool = spool_in(tmp_path)
    (item,) = queue(spool, b"body\n", "a@y")
    text = Path(spool.path("Q" + item.id)).read_bytes()
    Path(spool.path("Q" + item.id)).write_bytes(b"ID: other.0\nSender: s\nRecipient: r\n")
    with pytest.raises(DamagedItem):
        spool.claim(item.id)
    quarantine = spool.quarantine()
    with pytest.raises(DataError, match=r"still damaged: .*says ID 'other\.0'"):
        quarantine.release(item.id)
    held = Path(spool.path(f"quarantine/{item.id}"))
    (held / f"Q{item.id}").write_bytes(text)
    Path(spool.path("Q" + item.id)).write_bytes(b"a newer item of that name")
    with pytest.raises(CantCreateError, match="already holds"):
        quarantine.release(item.id)
    assert names(spool) == {"quarantine", "Q" + item.id}
    assert sorted(os.listdir(held)) == [f"M{item.id}", f"Q{item.id}", "reason"]
    os.unlink(spool.path("Q" + item.id))
    assert quarantine.release(item.id) == item.id
    assert [e.item for e in spool.entries()] == [item]
    assert quarantine.entries() == [] and not held.exists()


def test_unknown_quarantine_names_are_no_input(tmp_path: Path) -> None:
    """release and delete of a name that is not quarantined (or not a queue id) raise
    NoInputError."""
    quarantine = spool_in(tmp_path).quarantine()
    for name in ("nothing.0", "../etc", ""):
        with pytest.raises(NoInputError):
            quarantine.release(name)
        with pytest.raises(NoInputError):
            quarantine.delete(name)


def test_clean_sets_aside_old_lone_files_that_are_not_regular(tmp_path: Path) -> None:
    """clean removes old lone regular files as before; an old lone M directory or Q link is
    moved to the quarantine (and reported) instead of failing the run or staying unseen."""
    spool, moved = quarantined_spool(tmp_path)
    old = time.time() - 7200
    os.mkdir(spool.path("Mlone.1"))
    os.symlink("/etc/passwd", spool.path("Qlone.2"))
    Path(spool.path("Mplain.3")).write_bytes(b"x")
    for name in ("Mlone.1", "Qlone.2", "Mplain.3"):
        os.utime(spool.path(name), (old, old), follow_symlinks=False)
    assert spool.clean(time.time()) == ["Mplain.3"]
    assert sorted(m.name for m in moved) == ["lone.1", "lone.2"]
    assert names(spool) == {"quarantine"}
    reasons = {e.name: e.reason for e in spool.quarantine().entries()}
    assert reasons == {
        "lone.1": "its message file Mlone.1 is a directory and no queue file names it",
        "lone.2": "its queue file Qlone.2 is a symbolic link and it has no message file",
    }


def test_a_listing_leaves_a_locked_item_to_its_holder(tmp_path: Path) -> None:
    """A Q file that reads as damaged while someone holds its lock is reported as a problem,
    not moved: its deliverer may be rewriting it."""
    spool, moved = quarantined_spool(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    Path(spool.path("Q" + item.id)).write_bytes(b"torn")
    holder = os.open(spool.path("Q" + item.id), os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        scan = spool.scan()
    finally:
        os.close(holder)
    assert moved == [] and scan.entries == ()
    assert [p.name for p in scan.problems] == ["Q" + item.id]
    assert "being delivered" in str(scan.problems[0].error)
    spool.scan()
    assert [m.item_id for m in moved] == [item.id]


def test_a_quarantine_that_is_a_symlink_is_never_followed(tmp_path: Path) -> None:
    """If SPOOLDIR/quarantine is a symbolic link, nothing is moved through it: the item
    stays in place and is reported as a problem."""
    spool, moved = quarantined_spool(tmp_path)
    (item,) = queue(spool, b"x\n", "a@y")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, spool.path("quarantine"))
    Path(spool.path("Q" + item.id)).write_bytes(b"garbage")
    scan = spool.scan()
    assert moved == [] and os.listdir(elsewhere) == []
    assert [p.name for p in scan.problems] == ["Q" + item.id]
    assert "cannot be moved" in str(scan.problems[0].error)
    assert {"Q" + item.id, "M" + item.id} <= names(spool)
