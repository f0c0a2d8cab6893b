"""Mailbox dotlocks (SPEC 5.2, issue 7 finding 6): ``dma.adapters.mailbox`` with real
files and processes, then end to end through ``dma -q``.

A ``<user>.lock`` that is no lock file (a directory, a FIFO, a socket, a symlink) and a
dotlock left by a process that has died must not hold the user's mail: the first is
worked around (the fcntl and flock locks still exclude other writers), reported and
left alone, the second is taken over at once.  A dotlock of a live process, or one we
cannot attribute to a process of this host, still makes delivery wait.  Lock waits
are bounded so that the old behaviour (waiting out 60 s, taking over after 300 s)
fails these tests in seconds.
"""

from __future__ import annotations

import contextlib
import io
import mailbox
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DmaSite

from dma.adapters import mailbox as local
from dma.adapters.mailbox import MailboxLocked
from dma.core.dotlock import lock_content

MOMENT = datetime(2026, 11, 25, 2, 45, 6)
MESSAGE = b"Subject: locks\n\nbody\n"
# Lock waits of the adapter tests: one that old code would wait out (and fail), one
# that a held lock is expected to wait out.
PATIENT = 5.0
SHORT = 0.3


def dead_pid() -> int:
    """The pid of a process that has run and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def bodies(box: Path) -> list[bytes]:
    """The raw message of every record in the mbox ``box``."""
    mbox = mailbox.mbox(box, create=False)
    try:
        return [mbox.get_bytes(key) for key in mbox.iterkeys()]
    finally:
        mbox.close()


def deliver_quickly(box: Path) -> str:
    """Deliver MESSAGE to ``box`` with a patient lock wait, and check it took under two
    seconds and arrived; what deliver returned."""
    started = time.monotonic()
    where = local.deliver(str(box), io.BytesIO(MESSAGE), "a@b", MOMENT, lock_timeout=PATIENT)
    assert time.monotonic() - started < 2.0
    assert bodies(box)[-1] == MESSAGE
    return where


# --- the adapter: something at the lock's name that is no lock file ------------------------


def make_directory(lock: Path) -> str:
    """A directory with a file in it (a mkdir lock of some program, or a prank)."""
    lock.mkdir()
    (lock / "inside").write_text("kept\n")
    return "a directory"


def make_empty_directory(lock: Path) -> str:
    """An empty directory."""
    lock.mkdir()
    return "a directory"


def make_fifo(lock: Path) -> str:
    """A FIFO nobody writes: opening it for reading would hang."""
    os.mkfifo(lock)
    return "a FIFO"


def make_socket(lock: Path) -> str:
    """A bound Unix socket (its file stays after the socket is closed)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(lock))
    return "a socket"


def make_symlink(lock: Path) -> str:
    """A symlink to a file that must be neither followed nor changed."""
    target = lock.parent / "target"
    target.write_text("target\n")
    lock.symlink_to(target)
    return "a symbolic link"


def make_dangling_symlink(lock: Path) -> str:
    """A symlink to nothing: following it would create its target."""
    lock.symlink_to(lock.parent / "nowhere")
    return "a symbolic link"


NOT_LOCK_FILES = [make_directory, make_empty_directory, make_fifo, make_socket,
                  make_symlink, make_dangling_symlink]


def snapshot(lock: Path) -> tuple[int, int, int, list[str]]:
    """What a non-regular file is: its type, inode, mtime, and its entries or target."""
    info = lock.lstat()
    listing = sorted(os.listdir(lock)) if stat.S_ISDIR(info.st_mode) else []
    if stat.S_ISLNK(info.st_mode):
        listing = [os.readlink(lock)]
    return stat.S_IFMT(info.st_mode), info.st_ino, info.st_mtime_ns, listing


@pytest.mark.parametrize("make", NOT_LOCK_FILES, ids=lambda make: make.__name__[5:])
def test_no_lock_file_at_the_locks_name_does_not_block(
    tmp_path: Path, make: Callable[[Path], str]
) -> None:
    """Something at bob.lock that is no regular file lets delivery go ahead at once; the
    note names it, and it is left exactly as it was, never followed."""
    box = tmp_path / "bob"
    lock = tmp_path / "bob.lock"
    kind = make(lock)
    before = snapshot(lock)
    where = deliver_quickly(box)
    assert where.startswith(f"{box} (no dotlock: {lock} is {kind}, not a lock file")
    assert snapshot(lock) == before
    target = {"target"} if make is make_symlink else set()
    assert set(os.listdir(tmp_path)) == {"bob", "bob.lock", *target}
    if target:
        assert (tmp_path / "target").read_text() == "target\n"


HOLD_FCNTL = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    time.sleep(30)
"""

HOLD_FLOCK = """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("ready", flush=True)
    time.sleep(30)
"""


@contextlib.contextmanager
def held(code: str, box: Path) -> Iterator[None]:
    """Run ``code`` (which takes a lock on ``box`` and says ready) for the block."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(box)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        yield
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("holder", "kind"), [(HOLD_FCNTL, "fcntl"), (HOLD_FLOCK, "flock")],
                         ids=["fcntl", "flock"])
def test_without_the_dotlock_the_kernel_locks_still_exclude(
    tmp_path: Path, holder: str, kind: str
) -> None:
    """With a directory at bob.lock, a program holding an fcntl or a flock lock on the
    mailbox still keeps delivery out until the lock timeout."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    make_directory(tmp_path / "bob.lock")
    with held(holder, box):
        started = time.monotonic()
        with pytest.raises(MailboxLocked, match=kind):
            local.deliver(str(box), io.BytesIO(MESSAGE), "a@b", MOMENT, lock_timeout=SHORT)
        assert time.monotonic() - started >= SHORT
    assert box.read_bytes() == b""


# --- the adapter: dotlocks of processes that are gone -------------------------------------


@pytest.mark.parametrize("shape", ["{pid}\n", "{pid}", "  {pid}\n\n", "{pid}:{host}\n",
                                   "{pid}\x00"],
                         ids=["ours-or-liblockfile", "bare", "blanks", "dovecot", "nul"])
def test_lock_of_a_dead_process_is_taken_over_at_once(tmp_path: Path, shape: str) -> None:
    """A fresh bob.lock naming a process of this host that has exited is stale at once:
    delivery goes ahead, the note says so, and no lock is left behind."""
    box = tmp_path / "bob"
    lock = tmp_path / "bob.lock"
    pid = dead_pid()
    lock.write_bytes(shape.format(pid=pid, host=socket.gethostname()).encode())
    where = deliver_quickly(box)
    assert where == f"{box} (took over the stale lock {lock} (process {pid} is gone))"
    assert not lock.exists()


def test_lock_of_a_zombie_is_taken_over_at_once(tmp_path: Path) -> None:
    """A bob.lock naming a process that has exited but is not yet reaped (a zombie, which
    kill(pid, 0) still finds) is stale at once too."""
    box = tmp_path / "bob"
    lock = tmp_path / "bob.lock"
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_bytes().rpartition(b")")[2].split()[0] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        lock.write_text(f"{child.pid}\n")
        where = deliver_quickly(box)
        assert f"process {child.pid} is gone" in where
    finally:
        child.wait()
    assert not lock.exists()


@pytest.mark.parametrize(
    "shape",
    ["{own}\n", "{own}:{host}\n", "{parent}\n", "{dead}:elsewhere.example\n", "",
     "0\n", "not a pid\n", "99999999\n", "-1\n", "{dead}" + " " * 200, "{dead}:\n"],
    ids=["own", "own-dovecot", "parent", "other-host", "empty", "svr4", "text",
         "beyond-pid-max", "negative", "overlong", "empty-host"],
)
def test_lock_of_a_live_or_unknown_process_still_blocks(tmp_path: Path, shape: str) -> None:
    """A fresh bob.lock naming a live process, another host's process, or none we can
    read, keeps delivery waiting until the lock timeout; the lock is left as it was."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    lock = tmp_path / "bob.lock"
    content = shape.format(own=os.getpid(), parent=os.getppid(), dead=dead_pid(),
                           host=socket.gethostname()).encode()
    lock.write_bytes(content)
    started = time.monotonic()
    with pytest.raises(MailboxLocked, match="locked by another program") as caught:
        local.deliver(str(box), io.BytesIO(MESSAGE), "a@b", MOMENT, lock_timeout=SHORT)
    assert time.monotonic() - started >= SHORT
    assert str(lock) in str(caught.value)
    assert lock.read_bytes() == content
    assert box.read_bytes() == b""


def test_lock_of_a_dead_process_on_a_shared_file_system_waits_for_its_age(
    tmp_path: Path
) -> None:
    """On a file system other hosts share (NFS and the like) a bare pid may be another
    host's: a fresh lock naming a pid dead here still blocks, an old one is taken over."""
    box = tmp_path / "bob"
    box.write_bytes(b"")
    lock = tmp_path / "bob.lock"
    pid = dead_pid()
    lock.write_text(f"{pid}\n")
    got = local._try_dotlock(str(box), 300, shared=True)
    assert got.held_by == str(lock) and got.dotlock is None
    old = time.time() - 400
    os.utime(lock, (old, old))
    got = local._try_dotlock(str(box), 300, shared=True)
    assert got.dotlock is not None and got.held_by is None
    assert "untouched for" in got.note
    local._remove_dotlock(got.dotlock)
    assert not lock.exists()


def test_stale_lock_we_may_not_remove_does_not_block(tmp_path: Path) -> None:
    """In a sticky world-writable MAILDIR an unprivileged deliverer cannot remove root's
    stale lock (EPERM): it delivers under the kernel locks, says so, leaves the lock."""
    nobody = pwd.getpwnam("nobody")
    if os.geteuid() != 0:
        pytest.skip("needs root, to deliver as another user than the lock's owner")
    with tempfile.TemporaryDirectory(prefix="dma-sticky-") as place:
        os.chmod(place, 0o1777)
        box = Path(place) / "nobody"
        box.write_bytes(b"")
        os.chown(box, nobody.pw_uid, nobody.pw_gid)
        lock = Path(place) / "nobody.lock"
        lock.write_text(f"{dead_pid()}\n")
        result = subprocess.run(
            [sys.executable, "-c", textwrap.dedent("""
                import io, os, sys, time
                from datetime import datetime
                from dma.adapters.mailbox import deliver, file_system_type
                file_system_type(1)  # load ctypes while the interpreter is readable
                os.setgroups([])
                os.setgid(int(sys.argv[3]))
                os.setuid(int(sys.argv[2]))
                started = time.monotonic()
                print(deliver(sys.argv[1], io.BytesIO(b"Subject: s\\n\\ns\\n"), "a@b",
                              datetime(2026, 1, 1), lock_timeout=5))
                print(time.monotonic() - started)
                """), str(box), str(nobody.pw_uid), str(nobody.pw_gid)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, result.stderr
        where, took = result.stdout.splitlines()
        assert float(took) < 2.0
        assert f"{lock} is stale" in where and "cannot be removed" in where
        assert lock.exists()
        assert bodies(box) == [b"Subject: s\n\ns\n"]


def test_our_lock_names_us_and_this_host(tmp_path: Path) -> None:
    """While we hold bob.lock it holds our pid and host name as ``<pid>:<host>``."""
    box = tmp_path / "bob"
    got = local._try_dotlock(str(box), 300)
    try:
        assert got.dotlock is not None
        assert (tmp_path / "bob.lock").read_bytes() == lock_content(
            os.getpid(), socket.gethostname())
        assert (tmp_path / "bob.lock").read_bytes().startswith(f"{os.getpid()}".encode())
    finally:
        local._remove_dotlock(got.dotlock)
    assert not (tmp_path / "bob.lock").exists()


# The torture below: deliverers append while crashers take the locks and die holding
# them (leaving a dotlock with their dead pid).  Each deliverer checks, with all locks
# taken, that the dotlock is its own and nobody else is inside.
DELIVERER = """
    import io, os, sys
    from datetime import datetime
    from dma.adapters import mailbox as local
    box, worker, rounds, crash = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    real_append = local._append

    def checked_append(fd, path, *rest):
        with open(box + ".lock", "rb") as lock:
            owner = lock.read().split(b":")[0].strip()
        assert owner == str(os.getpid()).encode(), (owner, os.getpid())
        if crash == "crash":
            os._exit(0)
        inside = os.open(box + ".inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        try:
            real_append(fd, path, *rest)
        finally:
            os.close(inside)
            os.unlink(box + ".inside")

    local._append = checked_append
    for n in range(rounds):
        tag = f"w{worker}-m{n}"
        local.deliver(box, io.BytesIO(f"Subject: {tag}\\n\\n{tag}\\n".encode()), "a@b",
                      datetime(2026, 1, 1), lock_timeout=30)
"""


def test_deliverers_and_dying_lock_holders(tmp_path: Path) -> None:
    """4 deliverers x 20 messages while 12 processes in turn take the locks and die
    holding them: every message arrives once, no deliverer ever finds a dotlock not its
    own or another writer inside, and no dead holder's lock costs a wait."""
    box = tmp_path / "bob"
    deliverer = textwrap.dedent(DELIVERER)
    started = time.monotonic()
    workers = [subprocess.Popen([sys.executable, "-c", deliverer, str(box), str(w), "20", "-"])
               for w in range(4)]
    for c in range(12):
        crasher = subprocess.run(
            [sys.executable, "-c", deliverer, str(box), f"c{c}", "1", "crash"],
            capture_output=True, text=True, timeout=60, check=False)
        assert crasher.returncode == 0, crasher.stderr
    assert [w.wait(timeout=120) for w in workers] == [0] * 4
    assert time.monotonic() - started < 60
    subjects = sorted(bytes(b).split(b"\n")[0] for b in bodies(box))
    assert subjects == sorted(f"Subject: w{w}-m{n}".encode() for w in range(4) for n in range(20))


# --- end to end through dma -q --------------------------------------------------------------

# $DMA_LOCK_TIMEOUT of these runs: the old code waited it out and deferred; a run that
# does not wait takes well under QUICK seconds.
LOCK_WAIT = "20"
QUICK = 10.0


def queued_for_root(site: DmaSite, subject: str) -> str:
    """Queue one message for root (DEFER on) and make the configuration deliver; its id."""
    (item_id,) = site.send(["-f", "alice@example.org", "root"],
                           f"Subject: {subject}\n\nhello\n".encode())
    site.write_config(defer=False)
    site.maildir.mkdir(exist_ok=True)
    return item_id


def run_queue(site: DmaSite) -> tuple[float, str]:
    """Run ``dma -q -v`` with a bounded lock wait; (seconds it took, what it logged)."""
    started = time.monotonic()
    done = site.run(["-q", "-v"], env={"DMA_LOCK_TIMEOUT": LOCK_WAIT})
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return elapsed, done.stderr.decode(errors="replace")


def subjects(box: Path) -> list[str]:
    """The Subject of every message in the mbox ``box``."""
    mbox = mailbox.mbox(box, create=False)
    try:
        return [str(mbox[key]["Subject"]) for key in mbox.iterkeys()]
    finally:
        mbox.close()


def test_queue_run_delivers_past_a_directory_named_like_the_lock(site: DmaSite) -> None:
    """A directory named root.lock in MAILDIR neither delays nor defers root's mail; it is
    reported in the log and left where it is."""
    queued_for_root(site, "past a directory")
    lock = site.maildir / "root.lock"
    lock.mkdir()
    (lock / "inside").write_text("someone's\n")
    elapsed, log = run_queue(site)
    assert site.queue() == [], log
    assert elapsed < QUICK, log
    assert subjects(site.maildir / "root") == ["past a directory"]
    assert "root.lock is a directory" in log, log
    assert (lock / "inside").read_text() == "someone's\n"


def test_queue_run_delivers_past_a_fifo_named_like_the_lock(site: DmaSite) -> None:
    """A FIFO named root.lock neither hangs nor defers delivery, and stays a FIFO."""
    queued_for_root(site, "past a fifo")
    lock = site.maildir / "root.lock"
    os.mkfifo(lock)
    elapsed, log = run_queue(site)
    assert site.queue() == [], log
    assert elapsed < QUICK, log
    assert subjects(site.maildir / "root") == ["past a fifo"]
    assert "root.lock is a FIFO" in log, log
    assert lock.is_fifo()


def test_queue_run_takes_over_the_lock_of_a_dead_process_at_once(site: DmaSite) -> None:
    """A fresh root.lock holding the pid of a process that has exited is stale at once:
    the mail is delivered within seconds and the lock is gone afterwards."""
    queued_for_root(site, "after a crash")
    pid = dead_pid()
    lock = site.maildir / "root.lock"
    lock.write_text(f"{pid}\n")
    elapsed, log = run_queue(site)
    assert site.queue() == [], log
    assert elapsed < QUICK, log
    assert subjects(site.maildir / "root") == ["after a crash"]
    assert not lock.exists()
    assert f"process {pid}" in log, log


def test_queue_run_defers_behind_the_lock_of_a_live_process(site: DmaSite) -> None:
    """A fresh root.lock naming a live process (this test) makes the run wait the lock
    timeout and defer; once it is removed the next run delivers."""
    item_id = queued_for_root(site, "behind a live lock")
    lock = site.maildir / "root.lock"
    lock.write_text(f"{os.getpid()}\n")
    site.maildir.joinpath("root").write_bytes(b"")
    started = time.monotonic()
    done = site.run(["-q"], env={"DMA_LOCK_TIMEOUT": "1"})
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert elapsed >= 1
    assert [item["id"] for item in site.queue()] == [item_id]
    error = site.queue_file(item_id).decode()
    assert f"X-Last-Error: mailbox {site.maildir / 'root'} is locked by another program" in error
    assert lock.read_text() == f"{os.getpid()}\n"
    assert site.maildir.joinpath("root").read_bytes() == b""
    lock.unlink()
    _, log = run_queue(site)
    assert site.queue() == [], log
    assert subjects(site.maildir / "root") == ["behind a live lock"]


KILLED_WHILE_LOCKING = """
    import io, os, signal, sys
    from datetime import datetime
    from dma.adapters import mailbox as local
    real_open, real_link = os.open, os.link

    def dying_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        if str(path).endswith(".lock") and flags & os.O_CREAT:
            os.kill(os.getpid(), signal.SIGKILL)  # created, nothing written yet
        return fd

    def dying_link(source, target, *args, **kwargs):
        real_link(source, target, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)  # the lock is in place

    os.open, os.link = dying_open, dying_link
    local.deliver(sys.argv[1], io.BytesIO(b"Subject: x\\n\\nx\\n"), "a@b", datetime(2026, 1, 1))
"""


def test_a_lock_is_never_left_empty_by_a_killed_deliverer(tmp_path: Path) -> None:
    """A deliverer killed at the worst moment of taking the dotlock leaves a lock that
    names its dead pid (the lock is written first, then linked into place), so the next
    delivery takes it over at once; a lock created empty would hold the mailbox for the
    five minutes of the age rule."""
    box = tmp_path / "bob"
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_WHILE_LOCKING),
                             str(box)], capture_output=True, timeout=60, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    lock = tmp_path / "bob.lock"
    assert lock.exists() and lock.read_bytes().strip()
    started = time.monotonic()
    local.deliver(str(box), io.BytesIO(b"Subject: y\n\ny\n"), "a@b", MOMENT, lock_timeout=10)
    assert time.monotonic() - started < 5
    assert not lock.exists()
