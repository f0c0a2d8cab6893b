"""The maildrop directory (adapters/maildrop.py): the submitter's writer, the runner's
checks and its watch, on real files in a temporary spool."""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

import pytest

from dma.adapters.maildrop import (
    DropFile,
    InotifyWatch,
    MaildropDirectory,
    MaildropWriter,
    PollWatch,
    Refusal,
    RequestFile,
    drop_request,
    open_watch,
    quarantine_name,
    still_there,
)
from dma.core.errors import CantCreateError
from dma.core.maildrop import (
    MAX_REQUEST_OCTETS,
    REQUEST_MAGIC,
    DeleteRequest,
    MaildropEnvelope,
    parse_maildrop,
    render_maildrop,
)

ENVELOPE = MaildropEnvelope(sender="alice@example.org", recipients=(), dsn_ret="HDRS")
MESSAGE = b"Subject: hi\n\nhello\n"


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    (tmp_path / "maildrop").mkdir(mode=0o1733)
    return tmp_path


def test_the_writer_leaves_one_finished_file(spool: Path) -> None:
    """finish() renames the file to a time.pid.random name, mode 0600, that parses back to
    the envelope, recipients and message written."""
    with MaildropWriter(str(spool / "maildrop"), ENVELOPE) as writer:
        writer.file.write(MESSAGE[:5])
        writer.file.writelines((MESSAGE[5:],))
        name = writer.finish(("bob", "carol@example.com"))
    assert re.fullmatch(rf"[0-9a-f]{{13}}\.{os.getpid()}\.[0-9a-f]{{16}}", name)
    assert os.listdir(spool / "maildrop") == [name]
    path = spool / "maildrop" / name
    assert path.stat().st_mode & 0o7777 == 0o600
    parsed = parse_maildrop(path.read_bytes(), name)
    assert parsed.message == MESSAGE
    assert parsed.envelope == MaildropEnvelope(
        sender="alice@example.org", recipients=("bob", "carol@example.com"), dsn_ret="HDRS")


def test_an_unfinished_write_leaves_nothing(spool: Path) -> None:
    """An error before finish() removes the temporary file."""
    with pytest.raises(RuntimeError), MaildropWriter(str(spool / "maildrop"), ENVELOPE) as w:
        w.file.write(MESSAGE)
        raise RuntimeError("the submission failed")
    assert os.listdir(spool / "maildrop") == []


def test_the_writer_stops_at_the_size_limit(spool: Path) -> None:
    """A message that would pass the limit is refused as it streams (exit 73), and
    nothing stays behind."""
    with pytest.raises(CantCreateError, match="too large for the maildrop") as raised, \
            MaildropWriter(str(spool / "maildrop"), ENVELOPE, limit=300) as writer:
        for _ in range(100):
            writer.file.write(b"x" * 50 + b"\n")
    assert raised.value.exit_code == 73
    assert os.listdir(spool / "maildrop") == []


def _drop(spool: Path, name: str, data: bytes) -> Path:
    path = spool / "maildrop" / name
    path.write_bytes(data)
    return path


def test_a_good_file_is_taken_and_a_temporary_one_left(spool: Path) -> None:
    """A finished file that parses is a DropFile with its owner; a young temporary name,
    and an old one whose writer holds its lock, are left alone; an old unlocked one is
    refused as abandoned."""
    good = render_maildrop(MaildropEnvelope("a@b", ("bob",)), MESSAGE)
    _drop(spool, "good", good)
    _drop(spool, "tmp_young", good)
    old = _drop(spool, "tmp_locked", good)
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    abandoned = _drop(spool, "tmp_gone", good)
    os.utime(abandoned, (time.time() - 7200, time.time() - 7200))
    holder = os.open(old, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with MaildropDirectory(str(spool)) as maildrop:
            now = time.time()
            found = maildrop.judge("good", now)
            assert isinstance(found, DropFile)
            with found:
                assert (found.owner.uid, found.recipients) == (os.getuid(), ("bob",))
                assert b"".join(found.message_chunks()) == MESSAGE
            assert maildrop.judge("tmp_young", now) is None
            assert maildrop.judge("tmp_locked", now) is None
            gone = maildrop.judge("tmp_gone", now)
            assert isinstance(gone, Refusal) and "unfinished" in gone.reason
            assert maildrop.judge("not-there", now) is None
    finally:
        os.close(holder)


def test_a_refused_file_is_renamed_into_the_quarantine(spool: Path) -> None:
    """refuse() moves the very file (whatever its name) to quarantine/maildrop-<name>,
    with a reason naming the file and its owner; the maildrop no longer holds it."""
    path = _drop(spool, "bad name\n", b"not a maildrop file")
    inode = path.stat().st_ino
    with MaildropDirectory(str(spool)) as maildrop:
        refusal = maildrop.judge("bad name\n", time.time())
        assert isinstance(refusal, Refusal)
        moved = maildrop.refuse(refusal)
    assert moved is not None and moved.name == "maildrop-bad_name_"
    held = spool / "quarantine" / "maildrop-bad_name_" / "Mmaildrop-bad_name_"
    assert held.stat().st_ino == inode
    reason = (spool / "quarantine" / "maildrop-bad_name_" / "reason").read_text()
    assert f"Reason: maildrop file bad name  (uid {os.getuid()}): " in reason
    assert os.listdir(spool / "maildrop") == []


def test_quarantine_names_are_safe() -> None:
    """Names for the quarantine keep letters, digits, dot, dash and underscore only."""
    assert quarantine_name("661ef.42.abc") == "maildrop-661ef.42.abc"
    assert quarantine_name("../x y") == "maildrop-.._x_y"
    assert quarantine_name("") == "maildrop-_"
    assert len(quarantine_name("x" * 300)) == len("maildrop-") + 100


def test_inotify_wakes_for_a_finished_name_not_a_temporary_one(spool: Path) -> None:
    """The watch stays quiet while a temporary file is written and wakes at once when
    it is renamed to its final name."""
    watch = open_watch(str(spool))
    assert isinstance(watch, InotifyWatch)
    try:
        temp = _drop(spool, "tmp_writing", b"x")
        assert watch.wait(0.2) is False
        started = time.monotonic()
        temp.rename(spool / "maildrop" / "final")
        assert watch.wait(5.0) is True
        assert time.monotonic() - started < 0.5
    finally:
        watch.close()


def test_without_inotify_the_runner_looks_each_second() -> None:
    """The fallback sleeps at most a second and always says to look."""
    started = time.monotonic()
    assert PollWatch().wait(10.0) is True
    assert 0.9 <= time.monotonic() - started < 2.0


def test_a_deletion_request_is_written_and_judged_like_a_message(spool: Path) -> None:
    """drop_request leaves one finished 0600 file that the runner judges as a RequestFile
    of its owner naming the ids; the submitter can tell when it is gone."""
    directory = str(spool / "maildrop")
    name = drop_request(directory, DeleteRequest(("a.0", "b.1")))
    assert os.listdir(directory) == [name]
    assert re.fullmatch(r"[0-9a-f]{13}\.[0-9]+\.[0-9a-f]{16}", name)
    assert (spool / "maildrop" / name).stat().st_mode & 0o777 == 0o600
    assert still_there(directory, name)
    with MaildropDirectory(str(spool)) as maildrop:
        found = maildrop.judge(name, time.time())
        assert isinstance(found, RequestFile)
        assert found.request.item_ids == ("a.0", "b.1")
        assert found.owner.uid == os.getuid()
        maildrop.remove(found)
    assert not still_there(directory, name)


@pytest.mark.parametrize(("data", "says"), [
    (REQUEST_MAGIC + b"Item: ../etc/passwd\nEnd: 1\n", "is no queue item id"),
    (REQUEST_MAGIC + b"Item: a.0\n", "does not end with an End line"),
    (REQUEST_MAGIC + b"Item: a.0\n" * (MAX_REQUEST_OCTETS // 10) + b"End: 1\n",
     "more than 65536"),
])
def test_a_bad_request_is_refused(spool: Path, data: bytes, says: str) -> None:
    """A file that starts like a request but is no good one is refused with the reason."""
    _drop(spool, "request", data)
    with MaildropDirectory(str(spool)) as maildrop:
        refusal = maildrop.judge("request", time.time())
    assert isinstance(refusal, Refusal) and says in refusal.reason


def test_a_request_through_a_hard_link_is_refused(spool: Path) -> None:
    """A request is checked as a message is: one with two links is never read."""
    path = _drop(spool, "request", REQUEST_MAGIC + b"Item: a.0\nEnd: 1\n")
    os.link(path, spool / "elsewhere")
    with MaildropDirectory(str(spool)) as maildrop:
        refusal = maildrop.judge("request", time.time())
    assert isinstance(refusal, Refusal) and "2 links" in refusal.reason
