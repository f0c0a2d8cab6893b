"""Local delivery into real mbox files and Maildirs, with real processes (SPEC 5.2)."""

from __future__ import annotations

import fcntl
import io
import mailbox
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from dma.adapters import mailbox as local
from dma.core.errors import CantCreateError, TempFailure
from dma.core.mbox import mbox_record, unquote_line

MOMENT = datetime(2026, 11, 25, 2, 45, 6)


def spooled(tag: str, sender: str = "alice@example.org", body_lines: int = 3) -> bytes:
    """A spooled M file: our Received header first, headers, blank line, a body to quote."""
    body = "".join(f"line {n} of {tag}\n" for n in range(body_lines))
    return (
        f"Received: from localhost (localhost [127.0.0.1])\n"
        f"\tby mx.example.org (pydma); Wed, 25 Nov 2026 02:45:06 +0000\n"
        f"From: {sender or 'Mail Delivery System <MAILER-DAEMON@mx.example.org>'}\n"
        f"To: bob@example.org\n"
        f"Subject: message {tag}\n"
        f"\n"
        f"From the start of {tag}\n"
        f">From a quote in {tag}\n"
        f"{body}"
    ).encode()


def read_mbox(path: Path) -> list[tuple[str, bytes]]:
    """Every message in an mbox as (envelope From_ text, unquoted message bytes)."""
    box = mailbox.mbox(path, create=False)
    try:
        result = []
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            lines = re.findall(rb"[^\n]*\n", raw)
            result.append((box.get_message(key).get_from(), b"".join(map(unquote_line, lines))))
        return result
    finally:
        box.close()


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with ``args``; dma is importable there."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter; it prints ``ready`` once it holds its lock."""
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    return child


# --- mbox ---------------------------------------------------------------------------


def test_mbox_messages_read_back_identical(tmp_path: Path) -> None:
    """mailbox.mbox reads each delivered message back, unquoted, byte-identical to the spool."""
    box = tmp_path / "bob"
    messages = [spooled("one"), spooled("two", sender=""), spooled("three", body_lines=0)]
    senders = ["alice@example.org", "", "carol@example.org"]
    for message, sender in zip(messages, senders, strict=True):
        assert local.deliver(str(box), io.BytesIO(message), sender, MOMENT) == str(box)
    got = read_mbox(box)
    assert [body for _, body in got] == messages
    assert [envelope for envelope, _ in got] == [
        "alice@example.org Wed Nov 25 02:45:06 2026",
        "MAILER-DAEMON Wed Nov 25 02:45:06 2026",
        "carol@example.org Wed Nov 25 02:45:06 2026",
    ]


def test_mbox_file_bytes(tmp_path: Path) -> None:
    """The file holds exactly From_ line, quoted message and one blank line per record."""
    box = tmp_path / "bob"
    local.deliver(str(box), io.BytesIO(b"Subject: a\n\nFrom me\n"), "a@b", MOMENT)
    local.deliver(str(box), io.BytesIO(b"Subject: b\n\n>From you"), "c@d", MOMENT)
    assert box.read_bytes() == (
        b"From a@b Wed Nov 25 02:45:06 2026\nSubject: a\n\n>From me\n\n"
        b"From c@d Wed Nov 25 02:45:06 2026\nSubject: b\n\n>>From you\n\n"
    )


def test_mbox_created_0600_and_lock_removed(tmp_path: Path) -> None:
    """A missing mailbox is created mode 0600, and no dotlock is left behind."""
    box = tmp_path / "bob"
    old_umask = os.umask(0)
    try:
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(box.stat().st_mode) == 0o600
    assert not (tmp_path / "bob.lock").exists()


def test_mbox_appends_to_existing_mode_kept(tmp_path: Path) -> None:
    """An existing mailbox keeps its content and mode; the record goes after the old end."""
    box = tmp_path / "bob"
    box.write_bytes(b"From old@x Mon Jan  1 00:00:00 2024\nSubject: old\n\nold\n\n")
    box.chmod(0o620)
    local.deliver(str(box), io.BytesIO(spooled("new")), "a@b", MOMENT)
    assert stat.S_IMODE(box.stat().st_mode) == 0o620
    assert [body for _, body in read_mbox(box)] == [b"Subject: old\n\nold\n", spooled("new")]


def test_s_nail_lists_delivered_messages(tmp_path: Path) -> None:
    """s-nail (Debian package s-nail) lists the delivered messages with senders and subjects."""
    s_nail = shutil.which("s-nail")
    if s_nail is None:
        pytest.skip("s-nail is not installed (apt-get install s-nail)")
    box = tmp_path / "bob"
    for tag in ("one", "two", "three"):
        message = spooled(tag, sender=f"{tag}@example.org")
        local.deliver(str(box), io.BytesIO(message), f"{tag}@example.org", MOMENT)
    before = box.read_bytes()
    listing = subprocess.run(
        [s_nail, "-:/", "-N", "-R", "-H", "-S", "headline=%m|%f|%s", "-f", str(box)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HOME": str(tmp_path), "LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", "")},
    )
    assert listing.returncode == 0, listing.stderr
    rows = [[field.strip() for field in line.split("|")] for line in listing.stdout.splitlines()]
    assert rows == [
        ["1", "one@example.org", "message one"],
        ["2", "two@example.org", "message two"],
        ["3", "three@example.org", "message three"],
    ]
    assert box.read_bytes() == before


def test_concurrent_deliveries_with_lock_holder(tmp_path: Path) -> None:
    """8 processes x 50 deliveries while a reader or C-dma-like process locks: 400 whole
    messages."""
    box = tmp_path / "bob"
    stop = tmp_path / "stop"
    writer = """
        import io, sys
        from datetime import datetime
        from dma.adapters.mailbox import deliver
        box, worker = sys.argv[1], sys.argv[2]
        for n in range(50):
            tag = f"w{worker}-m{n}"
            body = (f"Subject: {tag}\\n\\nFrom {tag}\\n" + f"{tag} body\\n" * 40).encode()
            deliver(box, io.BytesIO(body), f"{tag}@example.org", datetime(2026, 1, 1))
    """
    # Takes the fcntl lock alone, the dotlock alone, or both (as mutt, procmail and
    # mailx variously do), or flock alone (as the C dma does); while holding, the
    # mailbox must neither grow nor hold a half record.
    holder = """
        import fcntl, os, sys, time
        box, stop = sys.argv[1], sys.argv[2]
        rounds = 0
        while not os.path.exists(stop):
            mode = rounds % 4
            if mode in (1, 2):
                while True:
                    try:
                        os.close(os.open(box + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                        break
                    except FileExistsError:
                        time.sleep(0.001)
            fd = os.open(box, os.O_RDWR | os.O_CREAT, 0o600)
            if mode in (0, 2):
                fcntl.lockf(fd, fcntl.LOCK_EX)
            if mode == 3:
                fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0)  # closing another fd would drop the fcntl lock
            time.sleep(0.003)
            if os.fstat(fd).st_size != size or (data and not data.endswith(b"\\n\\n")):
                print(f"mailbox changed under lock mode {mode}", flush=True)
                sys.exit(1)
            os.close(fd)
            if mode in (1, 2):
                os.unlink(box + ".lock")
            rounds += 1
            time.sleep(0.002)
        print(rounds, flush=True)
    """
    locker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(holder), str(box), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), str(box), str(w)])
        for w in range(8)
    ]
    try:
        assert [w.wait(timeout=120) for w in writers] == [0] * 8
    finally:
        stop.touch()
        out, _ = locker.communicate(timeout=30)
    assert locker.returncode == 0, out
    assert int(out) > 0
    got = read_mbox(box)
    assert len(got) == 400
    seen = set()
    for envelope, message in got:
        tag = envelope.split("@")[0]
        expected = (f"Subject: {tag}\n\nFrom {tag}\n" + f"{tag} body\n" * 40).encode()
        assert message == expected
        seen.add(tag)
    assert seen == {f"w{w}-m{n}" for w in range(8) for n in range(50)}


def other_uid() -> int:
    """A uid that is not ours (nobody's when we are root)."""
    return 65534 if os.getuid() != 65534 else 65533


PLANTER_UID = 4321  # neither root nor the mailbox's user


def planted(box: Path) -> int:
    """Make ``box`` (and what is in it) belong to neither root nor other_uid(); its uid."""
    if os.geteuid() != 0:
        return os.getuid()  # ours, which is not other_uid() either
    for path in (box, *box.rglob("*")):
        os.chown(path, PLANTER_UID, PLANTER_UID)
    return PLANTER_UID


def test_mbox_owned_by_someone_else_refused(tmp_path: Path) -> None:
    """With an owner given, an mbox that belongs to another uid is refused temporarily and
    left untouched (whoever made it could read the mail)."""
    box = tmp_path / "bob"
    box.write_bytes(b"planted\n")
    planter = planted(box)
    with pytest.raises(TempFailure, match=f"mailbox {box} belongs to uid {planter}") as caught:
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT,
                      owner=(other_uid(), os.getgid()))
    assert "stays queued" in str(caught.value)
    assert box.read_bytes() == b"planted\n"
    assert not (tmp_path / "bob.lock").exists()


def test_mailbox_of_root_accepted_for_any_owner(tmp_path: Path) -> None:
    """An mbox or Maildir that belongs to root (an administrator made it) is no trap:
    delivering for another user's uid goes into it."""
    if os.geteuid() != 0:
        pytest.skip("needs root, for a root-owned mailbox")
    box = tmp_path / "bob"
    box.write_bytes(b"")
    local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT,
                  owner=(other_uid(), os.getgid()))
    assert [body for _, body in read_mbox(box)] == [spooled("x")]
    maildir = make_maildir(tmp_path / "carol")
    local.deliver(str(maildir), io.BytesIO(spooled("y")), "a@b", MOMENT,
                  owner=(other_uid(), os.getgid()))
    assert len(os.listdir(maildir / "new")) == 1


def test_mbox_owned_by_the_owner_accepted(tmp_path: Path) -> None:
    """With an owner given, an mbox that already belongs to that uid gets the mail."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT,
                  owner=(os.getuid(), os.getgid()))
    assert [body for _, body in read_mbox(box)] == [spooled("x")]


def test_failed_chown_of_a_new_mailbox_leaves_nothing(tmp_path: Path) -> None:
    """When giving a new mailbox to its owner fails (EPERM), the file we created is removed,
    no descriptor is left open, and the failure is temporary."""
    nobody = pwd.getpwnam("nobody")
    with tempfile.TemporaryDirectory(prefix="dma-chown-") as place:
        os.chmod(place, 0o777)  # the unprivileged child must be able to create files here
        box = os.path.join(place, "bob")
        result = run_python(
            """
            import io, os, sys
            from datetime import datetime
            from dma.adapters.mailbox import deliver
            from dma.core.errors import TempFailure
            if os.geteuid() == 0:  # drop root (after the imports: Python lives under
                os.setgroups([])   # /root) so that fchown to root fails for real
                os.setgid(int(sys.argv[3]))
                os.setuid(int(sys.argv[2]))
            def lowest_free_fd():
                fd = os.open("/dev/null", os.O_RDONLY)
                os.close(fd)
                return fd
            before = lowest_free_fd()
            try:
                deliver(sys.argv[1], io.BytesIO(b"x\\n"), "a@b", datetime(2026, 1, 1),
                        owner=(0, 0))
            except TempFailure as error:
                print("TempFailure", error)
            print("fds", before == lowest_free_fd())
            print("exists", os.path.lexists(sys.argv[1]))
            """,
            box, str(nobody.pw_uid), str(nobody.pw_gid),
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"TempFailure cannot give mailbox {box} to its user"), lines
        assert "Operation not permitted" in lines[0]
        assert lines[1:] == ["fds True", "exists False"]
        assert os.listdir(place) == []


def test_writable_but_unreadable_mailbox_gets_the_mail() -> None:
    """A mailbox we may write but not read (mode 0620 through our group, as the C dma's
    setgid-mail set-up has it) still gets the record appended."""
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0 and os.getuid() != nobody.pw_uid:
        pytest.skip("needs root, to hand the mailbox to another user")
    with tempfile.TemporaryDirectory(prefix="dma-0620-") as place:
        os.chmod(place, 0o777)  # room for the dotlock
        box = Path(place) / "bob"
        box.write_bytes(b"From old@x Mon Jan  1 00:00:00 2024\n\nold\n\n")
        os.chown(box, 0, nobody.pw_gid)
        box.chmod(0o620)
        result = run_python(
            """
            import io, os, sys
            from datetime import datetime
            from dma.adapters.mailbox import deliver
            os.setgroups([])
            os.setgid(int(sys.argv[3]))
            os.setuid(int(sys.argv[2]))
            deliver(sys.argv[1], io.BytesIO(b"Subject: w\\n\\nw\\n"), "a@b",
                    datetime(2026, 1, 1))
            """,
            str(box), str(nobody.pw_uid), str(nobody.pw_gid),
        )
        assert result.returncode == 0, result.stderr
        assert [body for _, body in read_mbox(box)] == [b"\nold\n", b"Subject: w\n\nw\n"]


def test_partial_last_line_is_ended_before_the_next_record(tmp_path: Path) -> None:
    """A mailbox cut off in the middle of a line gets the line and a blank line ended before
    the new record, so mailbox.mbox still finds both messages."""
    box = tmp_path / "bob"
    cut = b"From old@x Mon Jan  1 00:00:00 2024\nSubject: old\n\nhalf a li"
    box.write_bytes(cut)
    local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    record = b"".join(mbox_record(io.BytesIO(spooled("x")), "a@b", MOMENT))
    assert box.read_bytes() == cut + b"\n\n" + record
    assert read_mbox(box) == [
        ("old@x Mon Jan  1 00:00:00 2024", b"Subject: old\n\nhalf a li\n"),
        ("a@b Wed Nov 25 02:45:06 2026", spooled("x")),
    ]


def test_record_after_a_writer_killed_mid_append(tmp_path: Path) -> None:
    """After a writer is SIGKILLed mid-append, the next record starts after a blank line and
    mailbox.mbox reads both messages back."""
    box = tmp_path / "bob"
    local.deliver(str(box), io.BytesIO(spooled("first")), "a@b", MOMENT)
    first_length = box.stat().st_size
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import sys
            from datetime import datetime
            from dma.adapters.mailbox import deliver
            deliver(sys.argv[1], sys.stdin.buffer, "killed@x", datetime(2026, 1, 1))
            """), str(box)],
        stdin=subprocess.PIPE,
    )
    assert writer.stdin is not None
    try:
        # More than one write's worth, then the writer waits for the rest of its input.
        writer.stdin.write(b"Subject: killed\n\n" + (b"y" * 70 + b"\n") * 2000)
        writer.stdin.flush()
        deadline = time.monotonic() + 30
        while box.stat().st_size <= first_length + 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.kill()
        writer.wait()
        writer.stdin.close()
    crashed = box.read_bytes()
    assert len(crashed) > first_length + 64 * 1024 and not crashed.endswith(b"\n\n")
    # Its dotlock outlives it; stale_lock_age=0 takes it over at once.
    local.deliver(str(box), io.BytesIO(spooled("after")), "a@b", MOMENT, stale_lock_age=0)
    record = b"".join(mbox_record(io.BytesIO(spooled("after")), "a@b", MOMENT))
    assert box.read_bytes() == crashed + b"\n" + record
    got = read_mbox(box)
    assert [envelope.split()[0] for envelope, _ in got] == ["a@b", "killed@x", "a@b"]
    assert got[0][1] == spooled("first") and got[2][1] == spooled("after")
    assert got[1][1].startswith(b"Subject: killed\n\n" + b"y" * 70 + b"\n")


def test_record_after_a_writer_killed_mid_line(tmp_path: Path) -> None:
    """A writer killed by SIGXFSZ at a file size limit stops in the middle of a line; the
    next record still reads back as a message of its own."""
    box = tmp_path / "bob"
    local.deliver(str(box), io.BytesIO(spooled("first")), "a@b", MOMENT)
    limit = box.stat().st_size + 5000 + 17
    result = run_python(
        """
        import io, resource, signal, sys
        from datetime import datetime
        from dma.adapters.mailbox import deliver
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it by default
        limit = int(sys.argv[2])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        message = b"Subject: big\\n\\n" + (b"z" * 70 + b"\\n") * 2000
        deliver(sys.argv[1], io.BytesIO(message), "killed@x", datetime(2026, 1, 1))
        """,
        str(box),
        str(limit),
    )
    assert result.returncode == -signal.SIGXFSZ, result.stderr
    crashed = box.read_bytes()
    assert len(crashed) == limit and not crashed.endswith(b"\n")
    local.deliver(str(box), io.BytesIO(spooled("after")), "a@b", MOMENT, stale_lock_age=0)
    record = b"".join(mbox_record(io.BytesIO(spooled("after")), "a@b", MOMENT))
    assert box.read_bytes() == crashed + b"\n\n" + record
    got = read_mbox(box)
    assert [envelope.split()[0] for envelope, _ in got] == ["a@b", "killed@x", "a@b"]
    assert got[2][1] == spooled("after")


def test_symlinked_mailbox_refused(tmp_path: Path) -> None:
    """A mailbox that is a symlink is refused permanently and its target is untouched."""
    target = tmp_path / "shadow"
    target.write_bytes(b"secret\n")
    box = tmp_path / "bob"
    box.symlink_to(target)
    with pytest.raises(CantCreateError, match=str(box)):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert target.read_bytes() == b"secret\n"
    assert box.is_symlink()


def test_dangling_symlink_mailbox_refused(tmp_path: Path) -> None:
    """A symlink to a missing file is refused, and the file it names is not created."""
    box = tmp_path / "bob"
    box.symlink_to(tmp_path / "created-elsewhere")
    with pytest.raises(CantCreateError, match="symbolic link"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert not (tmp_path / "created-elsewhere").exists()


def test_symlink_race_after_check_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A symlink planted between the check and the open is still refused by O_NOFOLLOW."""
    target = tmp_path / "shadow"
    target.write_bytes(b"secret\n")
    box = tmp_path / "bob"
    real_lstat = os.lstat
    planted: list[str] = []

    def lstat_then_plant(path: str) -> os.stat_result:
        result = real_lstat(path)
        if path == str(box) and not planted:
            planted.append(path)
            os.unlink(path)
            os.symlink(target, path)
        return result

    box.write_bytes(b"")
    monkeypatch.setattr(os, "lstat", lstat_then_plant)
    with pytest.raises(CantCreateError, match="symbolic link"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert planted == [str(box)]
    assert target.read_bytes() == b"secret\n"


def test_fifo_mailbox_refused_without_hanging(tmp_path: Path) -> None:
    """A FIFO in the mailbox's place is refused at once instead of blocking the open."""
    box = tmp_path / "bob"
    os.mkfifo(box)
    with pytest.raises(CantCreateError, match="not a regular file"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT, lock_timeout=1)


def test_hard_linked_mailbox_refused(tmp_path: Path) -> None:
    """A mailbox with a second hard link is refused and neither name is written."""
    other = tmp_path / "other"
    other.write_bytes(b"keep\n")
    box = tmp_path / "bob"
    os.link(other, box)
    with pytest.raises(CantCreateError, match="hard links"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert other.read_bytes() == b"keep\n"


def test_plain_directory_refused(tmp_path: Path) -> None:
    """A directory without cur/, new/ and tmp/ is neither mbox nor Maildir: refused."""
    box = tmp_path / "bob"
    (box / "cur").mkdir(parents=True)
    (box / "new").mkdir()
    with pytest.raises(CantCreateError, match="not a Maildir"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)


def test_write_error_rolls_back(tmp_path: Path) -> None:
    """A write failing with EFBIG (RLIMIT_FSIZE) truncates to the old length: TempFailure."""
    box = tmp_path / "bob"
    local.deliver(str(box), io.BytesIO(spooled("first")), "a@b", MOMENT)
    before = box.read_bytes()
    result = run_python(
        """
        import io, resource, signal, sys
        from datetime import datetime
        from dma.adapters.mailbox import deliver
        from dma.core.errors import TempFailure
        box, limit = sys.argv[1], int(sys.argv[2])
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        message = b"Subject: big\\n\\n" + b"x" * 70 + b"\\n" * 2000
        try:
            deliver(box, io.BytesIO(message * 20), "a@b", datetime(2026, 1, 1))
        except TempFailure as error:
            print("TempFailure", error)
        """,
        str(box),
        str(len(before) + 5000),
    )
    assert result.stdout.startswith("TempFailure"), result.stdout + result.stderr
    assert str(box) in result.stdout and "rolled back" in result.stdout
    assert box.read_bytes() == before
    assert not (tmp_path / "bob.lock").exists()
    local.deliver(str(box), io.BytesIO(spooled("after")), "a@b", MOMENT)
    assert [body for _, body in read_mbox(box)] == [spooled("first"), spooled("after")]


def test_stale_dotlock_taken_over(tmp_path: Path) -> None:
    """A dotlock older than stale_lock_age is taken over and removed after delivery."""
    box = tmp_path / "bob"
    lock = tmp_path / "bob.lock"
    lock.write_text("999999\n")
    old = time.time() - 120
    os.utime(lock, (old, old))
    local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT, stale_lock_age=60)
    assert [body for _, body in read_mbox(box)] == [spooled("x")]
    assert not lock.exists()


HOLD_DOTLOCK = """
    import os, sys, time
    fd = os.open(sys.argv[1] + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, f"{os.getpid()}\\n".encode())
    os.close(fd)
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
    os.unlink(sys.argv[1] + ".lock")
"""

HOLD_FCNTL = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
"""

# The C dma's only lock (reference 5.4): flock, which on Linux does not see fcntl locks.
HOLD_FLOCK = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    time.sleep(float(sys.argv[2]))
"""

HOLDERS = [HOLD_DOTLOCK, HOLD_FCNTL, HOLD_FLOCK]
HOLDER_IDS = ["dotlock", "fcntl", "flock"]


@pytest.mark.parametrize("holder", HOLDERS, ids=HOLDER_IDS)
def test_held_lock_times_out(tmp_path: Path, holder: str) -> None:
    """A fresh lock held by a live process makes delivery wait, then fail temporarily."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    child = start_python(holder, str(box), "30")
    try:
        started = time.monotonic()
        with pytest.raises(TempFailure, match="locked"):
            local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT, lock_timeout=0.4)
        assert time.monotonic() - started >= 0.4
    finally:
        child.kill()
        child.wait()
    assert box.read_bytes() == b""
    assert (tmp_path / "bob.lock").exists() == (holder is HOLD_DOTLOCK)


@pytest.mark.parametrize("holder", HOLDERS, ids=HOLDER_IDS)
def test_delivery_waits_for_released_lock(tmp_path: Path, holder: str) -> None:
    """Delivery waits while a lock is held and completes once it is released."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    child = start_python(holder, str(box), "0.3")
    try:
        started = time.monotonic()
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT, lock_timeout=10)
        assert time.monotonic() - started >= 0.2
    finally:
        child.wait(timeout=10)
    assert [body for _, body in read_mbox(box)] == [spooled("x")]


def test_waiting_for_flock_holds_no_other_lock(tmp_path: Path) -> None:
    """While delivery waits for a flock holder it keeps neither the dotlock nor the fcntl
    lock, so a reader taking those two meanwhile is not blocked."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    holder = start_python(HOLD_FLOCK, str(box), "1.5")
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent("""
            import io, sys
            from datetime import datetime
            from dma.adapters.mailbox import deliver
            deliver(sys.argv[1], io.BytesIO(b"Subject: w\\n\\nw\\n"), "a@b",
                    datetime(2026, 1, 1), lock_timeout=20)
            """), str(box)],
    )
    try:
        time.sleep(0.2)
        took_both = False
        deadline = time.monotonic() + 1.0
        while not took_both and time.monotonic() < deadline:
            try:
                os.close(os.open(str(box) + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                time.sleep(0.001)
                continue
            fd = os.open(box, os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                took_both = True
            except OSError:
                pass
            finally:
                os.close(fd)
                os.unlink(str(box) + ".lock")
            time.sleep(0.001)
        assert took_both
        assert writer.wait(timeout=30) == 0
    finally:
        holder.wait(timeout=10)
        writer.kill()
        writer.wait()
    assert [body for _, body in read_mbox(box)] == [b"Subject: w\n\nw\n"]


def test_mailbox_replaced_while_waiting(tmp_path: Path) -> None:
    """If a reader renames a new mailbox into place while we wait, the mail goes there."""
    box = tmp_path / "bob"
    box.write_bytes(b"From old@x Mon Jan  1 00:00:00 2024\n\nold\n\n")
    child = start_python(
        """
        import os, sys, time
        box = sys.argv[1]
        os.close(os.open(box + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        print("ready", flush=True)
        time.sleep(0.3)
        with open(box + ".new", "wb") as f:
            f.write(b"From kept@x Mon Jan  1 00:00:00 2024\\n\\nkept\\n\\n")
        os.rename(box + ".new", box)
        os.unlink(box + ".lock")
        """,
        str(box),
    )
    try:
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT, lock_timeout=10)
    finally:
        child.wait(timeout=10)
    assert [body for _, body in read_mbox(box)] == [b"\nkept\n", spooled("x")]


def test_no_dotlock_possible_uses_fcntl_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the directory forbids a dotlock (EACCES), the fcntl lock alone guards delivery."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    real_open = os.open

    def no_lock_files(path: str, flags: int, mode: int = 0o777, **kwargs: int) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", no_lock_files)
    local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    monkeypatch.undo()
    assert [body for _, body in read_mbox(box)] == [spooled("x")]
    child = start_python(HOLD_FCNTL, str(box), "30")
    try:
        monkeypatch.setattr(os, "open", no_lock_files)
        with pytest.raises(TempFailure, match="fcntl"):
            local.deliver(str(box), io.BytesIO(spooled("y")), "a@b", MOMENT, lock_timeout=0.2)
    finally:
        child.kill()
        child.wait()


# --- Maildir ------------------------------------------------------------------------


def make_maildir(path: Path) -> Path:
    """A fresh Maildir with cur/, new/ and tmp/."""
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


def test_maildir_delivery_reads_back_identical(tmp_path: Path) -> None:
    """Maildir deliveries land in new/ with ,S=<size>; mailbox.Maildir reads them back as is."""
    box = make_maildir(tmp_path / "bob")
    messages = [spooled("one"), spooled("two", sender=""), b"Subject: no final newline"]
    places = [local.deliver(str(box), io.BytesIO(m), "a@b", MOMENT) for m in messages]
    assert len(set(places)) == 3
    for place, message in zip(places, messages, strict=True):
        assert Path(place).parent == box / "new"
        assert place.endswith(f",S={len(message)}")
        assert Path(place).read_bytes() == message
        assert stat.S_IMODE(Path(place).stat().st_mode) == 0o600
    assert os.listdir(box / "tmp") == []
    reader = mailbox.Maildir(box, factory=None, create=False)
    assert sorted(reader.get_bytes(key) for key in reader.iterkeys()) == sorted(messages)


def test_maildir_owned_by_someone_else_refused(tmp_path: Path) -> None:
    """With an owner given, a Maildir that belongs to another uid is refused temporarily and
    nothing is written into it."""
    box = make_maildir(tmp_path / "bob")
    planter = planted(box)
    with pytest.raises(TempFailure, match=f"mailbox {box} belongs to uid {planter}"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT,
                      owner=(other_uid(), os.getgid()))
    assert [os.listdir(box / sub) for sub in ("cur", "new", "tmp")] == [[], [], []]


def test_maildir_concurrent_processes_unique(tmp_path: Path) -> None:
    """Four processes delivering 25 messages each to one Maildir lose none of them."""
    box = make_maildir(tmp_path / "bob")
    code = """
        import io, sys
        from datetime import datetime
        from dma.adapters.mailbox import deliver
        for n in range(25):
            deliver(sys.argv[1], io.BytesIO(f"Subject: {sys.argv[2]}-{n}\\n\\nx\\n".encode()),
                    "a@b", datetime(2026, 1, 1))
    """
    workers = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(box), str(w)])
        for w in range(4)
    ]
    assert [w.wait(timeout=60) for w in workers] == [0] * 4
    reader = mailbox.Maildir(box, factory=None, create=False)
    subjects = {reader.get_message(key)["Subject"] for key in reader.iterkeys()}
    assert subjects == {f"{w}-{n}" for w in range(4) for n in range(25)}


def test_maildir_symlinked_subdir_refused(tmp_path: Path) -> None:
    """A Maildir whose new/ is a symlink is refused and the link target stays empty."""
    box = tmp_path / "bob"
    (box / "cur").mkdir(parents=True)
    (box / "tmp").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (box / "new").symlink_to(elsewhere)
    with pytest.raises(CantCreateError):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert os.listdir(elsewhere) == []
    assert os.listdir(box / "tmp") == []


def test_symlinked_maildir_refused(tmp_path: Path) -> None:
    """A mailbox path that is a symlink to a Maildir is refused like any symlink."""
    real = make_maildir(tmp_path / "real")
    box = tmp_path / "bob"
    box.symlink_to(real)
    with pytest.raises(CantCreateError, match="symbolic link"):
        local.deliver(str(box), io.BytesIO(spooled("x")), "a@b", MOMENT)
    assert os.listdir(real / "new") == []


def test_maildir_s_nail_lists(tmp_path: Path) -> None:
    """s-nail reads a Maildir we delivered to and lists the subjects."""
    s_nail = shutil.which("s-nail")
    if s_nail is None:
        pytest.skip("s-nail is not installed (apt-get install s-nail)")
    box = make_maildir(tmp_path / "bob")
    for tag in ("one", "two"):
        local.deliver(str(box), io.BytesIO(spooled(tag, f"{tag}@x.org")), "a@b", MOMENT)
        time.sleep(0.01)
    listing = subprocess.run(
        [s_nail, "-:/", "-N", "-R", "-H", "-S", "headline=%f|%s", "-f", f"maildir://{box}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"HOME": str(tmp_path), "LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", "")},
    )
    assert listing.returncode == 0, listing.stderr
    rows = sorted(tuple(f.strip() for f in line.split("|")) for line in listing.stdout.splitlines())
    assert rows == [("one@x.org", "message one"), ("two@x.org", "message two")]


def test_file_system_type_is_what_statfs_reports(tmp_path: Path) -> None:
    """The f_type we read through libc (to spot NFS, where flock and fcntl locks collide)
    is the one coreutils' `stat -f` reports for the same directory."""
    for directory in (tmp_path, Path("/dev/shm")):
        if not directory.is_dir():
            continue
        reported = subprocess.run(["stat", "-f", "-c", "%t", str(directory)],
                                  capture_output=True, text=True, check=True).stdout.strip()
        fd = os.open(directory, os.O_RDONLY)
        try:
            assert local.file_system_type(fd) == int(reported, 16)
            assert local._on_nfs(fd) is (int(reported, 16) == 0x6969)
        finally:
            os.close(fd)
