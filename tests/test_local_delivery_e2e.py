"""Local delivery end to end through the real console scripts (SPEC 5.1, 5.2, 5.7, 2.3).

Each test submits with ``sendmail -C conf`` into a private spool and MAILDIR under
tmp_path and looks at what lands in the mailboxes, the Q files and ``mailq``: mbox
and Maildir delivery read back with Python's ``mailbox``, detached delivery,
ownership of new mailboxes, refusal of mailboxes planted by others, user names in
another case, mailboxes locked by another program, full disks (a small tmpfs),
deferral of a symlinked mailbox, expiry bounces, double bounces, bounces that cannot
be made, refused aliases, and s-nail reading the result.
The remote side is a dead smarthost on loopback, so nothing ever leaves the machine.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import errno
import mailbox
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DmaSite

# A queue lifetime short enough to pass inside a test.
LIFETIME = "QUEUELIFETIME 1s\n"
EXPIRY_WAIT = 1.2
# Body lines an mbox must quote (mboxrd: every ^>*From gets one more '>').
QUOTED_BODY = (
    b"Subject: quoting\n\nFrom the start of a line\n>From an already quoted line\n"
    b">>From twice quoted\nFromage is not a separator\n  From indented is not either\n"
    b"From \nlast line\n"
)


# --- fixtures and helpers ----------------------------------------------------------------


def _run_admin(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run useradd/userdel, retrying while another process holds the passwd lock."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    for _ in range(50):
        if done.returncode == 0 or "lock" not in done.stderr.lower():
            break
        time.sleep(0.2)
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return done


@pytest.fixture(scope="module")
def testuser() -> Iterator[str]:
    """A throwaway local user (a second mailbox owner), removed with userdel -r afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating a local user needs root (the CI runs these tests as root)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not installed (Debian package passwd)")
    name = "dmat" + secrets.token_hex(4)
    done = _run_admin(["useradd", "-m", "-s", "/usr/sbin/nologin", name])
    assert done.returncode == 0, done.stderr
    try:
        yield name
    finally:
        _run_admin(["userdel", "-r", name])


def deliverable(site: DmaSite, extra: str = "") -> None:
    """Rewrite the site's dma.conf so that submissions and queue runs deliver (no DEFER)."""
    site.write_config(extra, defer=False)


def mailbox_path(site: DmaSite, user: str) -> Path:
    """MAILDIR/<user>: where local delivery puts a user's mail."""
    return site.maildir / user


def queue_then_deliver(site: DmaSite, args: list[str], message: bytes) -> tuple[str, bytes]:
    """Spool with DEFER, keep a copy of the M file, then deliver it with ``dma -q``.

    Returns the item id and the spooled message as it was before delivery.
    """
    site.write_config()
    (item_id,) = site.send(args, message)
    spooled = site.message(item_id)
    deliverable(site)
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    return item_id, spooled


def mboxrd_unquote(record: bytes) -> bytes:
    """Undo mboxrd quoting: remove one '>' from every line matching ^>+From ."""
    return re.sub(rb"(?m)^>(>*From )", rb"\1", record)


def symlinked_mailbox(site: DmaSite, user: str) -> Path:
    """Make MAILDIR/<user> a symlink to an empty file; return the link's target."""
    site.maildir.mkdir(exist_ok=True)
    target = site.root / f"target-of-{user}"
    target.write_bytes(b"")
    mailbox_path(site, user).symlink_to(target)
    return target


def queue_file_keys(site: DmaSite, item_id: str) -> dict[str, str]:
    """The Q file's ``Key: value`` lines as a dict."""
    lines = site.queue_file(item_id).decode().splitlines()
    return dict(line.split(": ", 1) for line in lines if ": " in line)


def read_mbox(path: Path) -> list[mailbox.mboxMessage]:
    """Every message of an mbox file, in order, as Python's mailbox module reads it."""
    box = mailbox.mbox(path, create=False)
    try:
        return [box[key] for key in box.iterkeys()]
    finally:
        box.close()


def mbox_bytes(path: Path) -> list[bytes]:
    """The raw record of every message of an mbox file (without its From_ line)."""
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


# --- mbox and Maildir ---------------------------------------------------------------------


def test_d_delivers_to_an_mbox_that_unquotes_to_the_spooled_message(site: DmaSite) -> None:
    """An mbox record written by delivery has its From lines quoted, and unquoting it gives
    back the spooled M file byte for byte."""
    user = "root"
    _, spooled = queue_then_deliver(site, ["-f", "alice@example.org", user], QUOTED_BODY)
    raw = mailbox_path(site, user).read_bytes()
    assert raw.startswith(b"From alice@example.org ")
    assert b"\n>From the start of a line\n" in raw
    assert b"\n>>From an already quoted line\n" in raw
    assert b"\n>>>From twice quoted\n" in raw
    assert b"\n>From \n" in raw
    assert b"\nFromage is not a separator\n" in raw
    assert b"\n  From indented is not either\n" in raw
    (record,) = mbox_bytes(mailbox_path(site, user))
    assert mboxrd_unquote(record) == spooled
    (message,) = read_mbox(mailbox_path(site, user))
    assert message["Subject"] == "quoting"
    assert message.get_from().startswith("alice@example.org ")


def test_d_foreground_delivery_appends_each_message_in_order(site: DmaSite) -> None:
    """`sendmail -D` exits 0 once delivered; a second message is appended after the first."""
    deliverable(site)
    for number in (1, 2):
        done = site.run(["-D", "-f", f"s{number}@example.org", "root"],
                        f"Subject: number {number}\n\nbody {number}\n".encode(),
                        program="sendmail")
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    messages = read_mbox(mailbox_path(site, "root"))
    assert [m["Subject"] for m in messages] == ["number 1", "number 2"]
    assert [m.get_payload() for m in messages] == ["body 1\n", "body 2\n"]
    assert site.queue() == []


def test_maildir_delivery_lands_in_new_identical_to_the_spool(site: DmaSite) -> None:
    """When MAILDIR/<user> holds cur/, new/ and tmp/, the message lands in new/ and
    mailbox.Maildir reads it byte-identical to the spooled M file."""
    box = mailbox_path(site, "root")
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    _, spooled = queue_then_deliver(site, ["-f", "m@example.org", "root"], QUOTED_BODY)
    assert os.listdir(box / "tmp") == [] and os.listdir(box / "cur") == []
    (name,) = os.listdir(box / "new")
    assert (box / "new" / name).read_bytes() == spooled
    maildir = mailbox.Maildir(box, factory=None, create=False)
    assert [maildir.get_bytes(key) for key in maildir.iterkeys()] == [spooled]
    assert not (site.maildir / "root.lock").exists()


def test_detached_submission_arrives_within_seconds(site: DmaSite) -> None:
    """Without -D the sendmail call returns at once and a detached child delivers the mail."""
    deliverable(site)
    done = site.run(["-f", "bg@example.org", "root"], b"Subject: detached\n\nhello\n",
                    program="sendmail")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    box = mailbox_path(site, "root")
    deadline = time.monotonic() + 10
    messages: list[mailbox.mboxMessage] = []
    while time.monotonic() < deadline:
        if box.exists() and not (site.maildir / "root.lock").exists():
            messages = read_mbox(box)
            if messages:
                break
        time.sleep(0.05)
    assert [m["Subject"] for m in messages] == ["detached"]
    while site.queue() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.queue() == []


def test_root_delivery_creates_the_mailbox_owned_by_the_user_0600(
    site: DmaSite, testuser: str
) -> None:
    """A mailbox that a root delivery creates belongs to its user and group, mode 0600."""
    deliverable(site)
    done = site.run(["-D", "-f", "o@example.org", testuser], b"Subject: mine\n\nx\n")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    info = os.lstat(mailbox_path(site, testuser))
    entry = pwd.getpwnam(testuser)
    assert stat.S_ISREG(info.st_mode)
    assert (info.st_uid, info.st_gid) == (entry.pw_uid, entry.pw_gid)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert [m["Subject"] for m in read_mbox(mailbox_path(site, testuser))] == ["mine"]


# --- ownership, names, locks and full disks --------------------------------------------------


def test_mailbox_planted_by_another_user_is_not_written(site: DmaSite, testuser: str) -> None:
    """A root delivery refuses a mailbox that another uid created in MAILDIR: nothing is
    written, the item stays queued with the reason, and once the mailbox is given to its
    user `dma -q` delivers."""
    deliverable(site)
    site.maildir.mkdir()
    box = mailbox_path(site, testuser)
    box.write_bytes(b"")
    nobody = pwd.getpwnam("nobody")
    os.chown(box, nobody.pw_uid, nobody.pw_gid)
    box.chmod(0o644)
    done = site.run(["-D", "-f", "o@example.org", testuser], b"Subject: private\n\nx\n")
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    assert box.read_bytes() == b""
    (item,) = site.queue()
    error = queue_file_keys(site, str(item["id"]))["X-Last-Error"]
    assert f"mailbox {box} belongs to uid {nobody.pw_uid}" in error, error
    assert "stays queued" in error

    entry = pwd.getpwnam(testuser)
    os.chown(box, entry.pw_uid, entry.pw_gid)
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert [m["Subject"] for m in read_mbox(box)] == ["private"]


def test_recipient_in_another_case_goes_to_the_users_own_mailbox(
    site: DmaSite, testuser: str
) -> None:
    """An item queued for the user's name in upper case (as the C dma, which keeps names
    verbatim, may queue it) lands in MAILDIR/<user>, created for that user."""
    (item_id,) = site.send(["-f", "c@example.org", testuser], b"Subject: shouted\n\nx\n")
    queue_file = site.spool / f"Q{item_id}"
    text = queue_file.read_text()
    shouted = re.sub(r"(?m)^Recipient: .*$", f"Recipient: {testuser.upper()}", text)
    assert shouted != text
    queue_file.write_text(shouted)
    deliverable(site)
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert os.listdir(site.maildir) == [testuser]
    box = mailbox_path(site, testuser)
    entry = pwd.getpwnam(testuser)
    assert (box.stat().st_uid, box.stat().st_gid) == (entry.pw_uid, entry.pw_gid)
    assert [m["Subject"] for m in read_mbox(box)] == ["shouted"]


# Holds flock on the mailbox (as the C dma does) until its stdin is closed.
HOLD_FLOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
fcntl.flock(fd, fcntl.LOCK_EX)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def flock_held(path: Path) -> Iterator[None]:
    """Another process holds flock(LOCK_EX) on ``path`` for the duration of the block."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FLOCK, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_locked_mailbox_costs_one_lock_wait_per_queue_run(site: DmaSite) -> None:
    """Two queued items for a user whose mailbox another program keeps locked cost a
    `dma -q` run one lock wait, not two; both stay queued and arrive once it is free."""
    ids = [site.send(["-f", "a@example.org", "root"], f"Subject: n{n}\n\nx\n".encode())[0]
           for n in (1, 2)]
    site.maildir.mkdir()
    box = mailbox_path(site, "root")
    box.write_bytes(b"")
    deliverable(site)
    wait = 3.0
    with flock_held(box):
        started = time.monotonic()
        done = site.run(["-q"], env={"DMA_LOCK_TIMEOUT": str(wait)})
        elapsed = time.monotonic() - started
        assert box.read_bytes() == b""
    assert wait <= elapsed < 2 * wait, done.stderr.decode(errors="replace")
    errors = sorted(queue_file_keys(site, item_id)["X-Last-Error"] for item_id in ids)
    assert errors == [
        f"mailbox {box} is locked by another program (a flock lock on it)"
        " (delivery will be retried; remove a lock file no program holds)",
        f"mailbox {box} is locked by another program; tried earlier in this run",
    ]

    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert sorted(m["Subject"] for m in read_mbox(box)) == ["n1", "n2"]


@pytest.fixture
def small_maildir(site: DmaSite) -> Iterator[Path]:
    """MAILDIR on a 64 KiB tmpfs of its own, so that the disk can be filled for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as MAILDIR needs root (the CI runs as root)")
    site.maildir.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=1777", "tmpfs",
                           str(site.maildir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield site.maildir
    finally:
        if subprocess.run(["umount", str(site.maildir)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(site.maildir)], check=False)


def fill_disk(directory: Path, leave_pages: int) -> Path:
    """Fill the file system of ``directory`` with one file, then free ``leave_pages`` pages
    of it again; returns the filler file."""
    page = os.sysconf("SC_PAGE_SIZE")
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"f" * page)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    size = filler.stat().st_size // page * page
    os.truncate(filler, size - leave_pages * page)
    return filler


def test_full_disk_rolls_the_mbox_back_and_keeps_the_mail_queued(
    site: DmaSite, small_maildir: Path
) -> None:
    """On a full disk a delivery that wrote part of its record cuts the mbox back to its
    old length and the item stays queued; once space is freed `dma -q` delivers it once."""
    deliverable(site)
    done = site.run(["-D", "-f", "a@example.org", "root"], b"Subject: small\n\nfits\n")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    box = mailbox_path(site, "root")
    before = box.read_bytes()
    filler = fill_disk(small_maildir, leave_pages=2)  # a dotlock and part of the record
    big = b"Subject: big\n\n" + b"b" * 79 + b"\n" + (b"z" * 79 + b"\n") * 500
    done = site.run(["-D", "-f", "a@example.org", "root"], big)
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    assert box.read_bytes() == before
    assert not (small_maildir / "root.lock").exists()
    (item,) = site.queue()
    error = queue_file_keys(site, str(item["id"]))["X-Last-Error"]
    assert f"cannot write mailbox (rolled back to {len(before)} bytes) {box}" in error, error
    assert "No space left on device" in error, error
    spooled = site.message(str(item["id"]))

    filler.unlink()
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert [m["Subject"] for m in read_mbox(box)] == ["small", "big"]
    assert mboxrd_unquote(mbox_bytes(box)[1]) == spooled


def test_full_disk_leaves_nothing_in_a_maildir_and_keeps_the_mail_queued(
    site: DmaSite, small_maildir: Path
) -> None:
    """On a full disk a Maildir delivery leaves nothing in tmp/ or new/ and the item stays
    queued; once space is freed `dma -q` delivers it once."""
    box = mailbox_path(site, "root")
    for sub in ("cur", "new", "tmp"):
        (box / sub).mkdir(parents=True)
    filler = fill_disk(small_maildir, leave_pages=1)  # part of the message fits
    deliverable(site)
    big = b"Subject: big\n\n" + (b"z" * 79 + b"\n") * 500
    done = site.run(["-D", "-f", "a@example.org", "root"], big)
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    assert [os.listdir(box / sub) for sub in ("cur", "new", "tmp")] == [[], [], []]
    (item,) = site.queue()
    error = queue_file_keys(site, str(item["id"]))["X-Last-Error"]
    assert f"cannot deliver to Maildir {box}: No space left on device" in error, error
    spooled = site.message(str(item["id"]))

    filler.unlink()
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert os.listdir(box / "tmp") == []
    maildir = mailbox.Maildir(box, factory=None, create=False)
    assert [maildir.get_bytes(key) for key in maildir.iterkeys()] == [spooled]


# --- deferral, expiry and bounces -----------------------------------------------------------


def test_symlinked_mailbox_defers_then_delivers_once_fixed(site: DmaSite) -> None:
    """A symlinked mailbox gets nothing written through the link; the item is deferred with
    the reason in mailq and the Q file, and `dma -q` delivers it once the link is gone."""
    deliverable(site)
    target = symlinked_mailbox(site, "root")
    done = site.run(["-D", "-f", "s@example.org", "root"], b"Subject: linked\n\nx\n")
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    assert target.read_bytes() == b""
    (item,) = site.queue()
    item_id = str(item["id"])
    keys = queue_file_keys(site, item_id)
    assert keys["X-Attempts"] == "1"
    assert int(keys["X-Next-Try"]) > time.time()
    assert "symbolic link" in keys["X-Last-Error"]
    assert str(mailbox_path(site, "root")) in keys["X-Last-Error"]
    listing = site.run([], program="mailq")
    assert listing.returncode == 0
    assert item_id in listing.stdout.decode()
    assert "symbolic link" in listing.stdout.decode()

    mailbox_path(site, "root").unlink()
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert target.read_bytes() == b""
    assert [m["Subject"] for m in read_mbox(mailbox_path(site, "root"))] == ["linked"]


def test_expired_item_bounces_into_the_local_senders_mailbox(
    site: DmaSite, testuser: str
) -> None:
    """After QUEUELIFETIME, `dma -q` bounces a still-failing item: the sender's mailbox gets a
    multipart/report naming the recipient, and the original leaves the queue."""
    deliverable(site, LIFETIME)
    target = symlinked_mailbox(site, "root")
    done = site.run(["-D", "-f", testuser, "root"], b"Subject: doomed\n\nbody\n")
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    (item,) = site.queue()
    original = str(item["id"])
    time.sleep(EXPIRY_WAIT)

    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert not any(original in name for name in site.spool_names())
    assert target.read_bytes() == b""
    (record,) = mbox_bytes(mailbox_path(site, testuser))
    assert mailbox_path(site, testuser).read_bytes().startswith(b"From MAILER-DAEMON ")
    report = email.message_from_bytes(record, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert "MAILER-DAEMON@" in str(report["From"])
    assert testuser in str(report["To"])
    parts = {part.get_content_type(): part for part in report.iter_parts()}
    assert "message/delivery-status" in parts
    status = parts["message/delivery-status"].as_string()
    assert re.search(r"Final-Recipient: rfc822; ?root\b", status), status
    assert re.search(r"Action: failed", status), status
    assert "Subject: doomed" in record.decode(errors="replace")


def test_expired_bounce_with_null_sender_is_discarded(site: DmaSite) -> None:
    """An expiring item with the null sender is dropped with a log line, never bounced: the
    queue ends empty and no mailbox receives anything."""
    deliverable(site, LIFETIME)
    target = symlinked_mailbox(site, "root")
    done = site.run(["-D", "-f", "", "root"], b"Subject: bounce of nothing\n\nx\n")
    assert done.returncode == 75, done.stderr.decode(errors="replace")
    (item,) = site.queue()
    assert item["sender"] == ""
    time.sleep(EXPIRY_WAIT)

    done = site.run(["-q", "-v"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    assert {n for n in site.spool_names() if n[:1] in "QM"} == set()
    log = done.stderr.decode(errors="replace")
    assert str(item["id"]) in log and "discard" in log, log
    assert "bounced" not in log.replace("never bounced", ""), log
    assert os.listdir(site.maildir) == ["root"]
    assert target.read_bytes() == b""


def test_null_sender_written_as_angle_brackets_is_discarded_too(site: DmaSite) -> None:
    """`-f '<>'` is the null sender as well: its expiry discards it instead of bouncing."""
    deliverable(site, LIFETIME)
    symlinked_mailbox(site, "root")
    site.run(["-D", "-f", "<>", "root"], b"x\n")
    (item,) = site.queue()
    assert item["sender"] == ""
    time.sleep(EXPIRY_WAIT)
    assert site.run(["-q"]).returncode == 0
    assert site.queue() == []
    assert os.listdir(site.maildir) == ["root"]


NOBODY_TO_BOUNCE_TO = "postmaster: gone-admin-xyz\nroot: gone-admin-xyz\n"
"""Aliases that leave a bounce nobody: neither the postmaster nor root is a user."""


def test_bounce_that_cannot_be_made_keeps_the_original(site: DmaSite) -> None:
    """When the sender is an unknown local name and no postmaster can have the bounce,
    the expired item stays queued with the reason in its Q file and mailq, and its
    arrival time is kept."""
    unknown = "nosuchuser" + secrets.token_hex(3)
    (item_id,) = site.send(["-f", "root", "root"], b"Subject: orphan\n\nbody\n")
    site.write_aliases(NOBODY_TO_BOUNCE_TO)
    spooled = site.message(item_id)
    queue_file = site.spool / f"Q{item_id}"
    arrival = os.stat(queue_file)
    text = queue_file.read_text()
    rewritten = re.sub(r"(?m)^Sender: .*$", f"Sender: {unknown}", text)
    assert rewritten != text
    queue_file.write_text(rewritten)
    os.utime(queue_file, ns=(arrival.st_atime_ns, arrival.st_mtime_ns))
    deliverable(site, LIFETIME)
    target = symlinked_mailbox(site, "root")
    time.sleep(EXPIRY_WAIT)

    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    (item,) = site.queue()
    assert item["id"] == item_id and item["sender"] == unknown
    assert site.message(item_id) == spooled
    keys = queue_file_keys(site, item_id)
    assert "cannot bounce" in keys["X-Last-Error"]
    assert unknown in keys["X-Last-Error"]
    assert os.stat(queue_file).st_mtime_ns == arrival.st_mtime_ns
    listing = site.run(["-bp"]).stdout.decode()
    assert "cannot bounce" in listing and unknown in listing
    assert target.read_bytes() == b""
    assert os.listdir(site.maildir) == ["root"]
    assert [n for n in site.spool_names() if n.startswith("Q")] == [f"Q{item_id}"]


def test_bounce_that_cannot_be_made_counts_the_attempt_and_backs_off(site: DmaSite) -> None:
    """An item whose bounce could not be made records the attempt and a next try in the
    future, like any other temporary failure (SPEC 5.1)."""
    (item_id,) = site.send(["-f", "root", "root"], b"Subject: orphan\n\nbody\n")
    site.write_aliases(NOBODY_TO_BOUNCE_TO)
    queue_file = site.spool / f"Q{item_id}"
    arrival = os.stat(queue_file)
    queue_file.write_text(re.sub(r"(?m)^Sender: .*$", "Sender: nosuchuser" + secrets.token_hex(3),
                                 queue_file.read_text()))
    os.utime(queue_file, ns=(arrival.st_atime_ns, arrival.st_mtime_ns))
    deliverable(site, LIFETIME)
    symlinked_mailbox(site, "root")
    time.sleep(EXPIRY_WAIT)

    assert site.run(["-q"]).returncode == 0
    keys = queue_file_keys(site, item_id)
    assert "cannot bounce" in keys["X-Last-Error"]
    assert keys.get("X-Attempts") == "1"
    assert int(keys.get("X-Next-Try", "0")) > time.time()


# --- aliases -------------------------------------------------------------------------------


def test_command_alias_is_refused_at_submission(site: DmaSite) -> None:
    """An alias to `|cmd` fails the submission naming the alias and its line; nothing is
    queued and the command never runs."""
    marker = site.root / "command-ran"
    script = site.root / "run.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    site.write_aliases(f"# first line\nroot: root\npiped: |{script}\n")
    deliverable(site)
    done = site.run(["-D", "piped"], b"Subject: run me\n\nx\n", program="sendmail")
    assert done.returncode == 65
    error = done.stderr.decode(errors="replace")
    assert "'piped'" in error and f"{site.aliases}:3" in error, error
    assert "command" in error
    assert site.queue() == []
    assert {n for n in site.spool_names() if n[:1] in "QM"} == set()
    time.sleep(0.2)
    assert not marker.exists()


def test_file_alias_is_refused_at_submission(site: DmaSite) -> None:
    """An alias to `/file` fails the submission naming the alias and its line; nothing is
    queued and the file is never created."""
    written = site.root / "written-by-alias"
    site.write_aliases(f"filed: {written}\n")
    deliverable(site)
    done = site.run(["-D", "filed"], b"Subject: write me\n\nx\n", program="sendmail")
    assert done.returncode == 65
    error = done.stderr.decode(errors="replace")
    assert "'filed'" in error and f"{site.aliases}:1" in error, error
    assert "file" in error
    assert site.queue() == []
    assert not written.exists()


def test_alias_listing_itself_and_a_user_delivers_to_both(site: DmaSite, testuser: str) -> None:
    """`root: root, <testuser>` delivers one copy into each of the two mailboxes."""
    site.write_aliases(f"root: root, {testuser}\n")
    deliverable(site)
    done = site.run(["-D", "-f", "a@example.org", "root"], b"Subject: both\n\nhi\n")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    for user in ("root", testuser):
        messages = read_mbox(mailbox_path(site, user))
        assert [m["Subject"] for m in messages] == ["both"], user
    assert site.queue() == []


# --- a real mail reader ----------------------------------------------------------------------


def test_s_nail_lists_delivered_messages(site: DmaSite) -> None:
    """s-nail lists the messages that dma delivered, with their senders and subjects."""
    s_nail = shutil.which("s-nail")
    if s_nail is None:
        pytest.skip("s-nail is not installed (scripts/setup installs it)")
    deliverable(site)
    senders = ("one@example.org", "two@example.org", "three@example.org")
    for number, sender in enumerate(senders, start=1):
        body = f"Subject: message {number}\n\nFrom line {number}\n".encode()
        done = site.run(["-D", "-f", sender, "root"], body)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
    box = mailbox_path(site, "root")
    before = box.read_bytes()
    listing = subprocess.run(
        [s_nail, "-:/", "-N", "-R", "-H", "-S", "headline=%m|%f|%s", "-f", str(box)],
        capture_output=True, text=True, timeout=30, check=False,
        env={"HOME": str(site.root), "LC_ALL": "C.UTF-8", "PATH": os.environ.get("PATH", "")},
    )
    assert listing.returncode == 0, listing.stderr
    rows = [[field.strip() for field in line.split("|")] for line in listing.stdout.splitlines()]
    assert rows == [
        [str(number), sender, f"message {number}"]
        for number, sender in enumerate(senders, start=1)
    ]
    assert box.read_bytes() == before


def test_bounce_now_returns_an_item_to_its_local_sender(site: DmaSite, testuser: str) -> None:
    """`dma -Qb ID` bounces a queued item at once: the sender gets a report, the queue empties."""
    site.write_config()  # DEFER: the item waits in the queue
    (item_id,) = site.send(["-f", testuser, "someone@example.org"], b"Subject: recall\n\nbody\n")
    deliverable(site)
    done = site.run(["-Qb", item_id])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert site.queue() == []
    (record,) = mbox_bytes(mailbox_path(site, testuser))
    report = email.message_from_bytes(record, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = next(
        p for p in report.iter_parts() if p.get_content_type() == "message/delivery-status"
    ).as_string()
    assert re.search(r"Final-Recipient: rfc822; ?someone@example.org", status), status
    assert "by the mail administrator" in record.decode(errors="replace")


def test_bounce_now_of_an_unknown_item_is_an_error(site: DmaSite) -> None:
    """`dma -Qb` with an id that is not queued exits 66 naming it and changes nothing."""
    site.write_config()
    (item_id,) = site.send(["root"], b"Subject: stays\n\nbody\n")
    done = site.run(["-Qb", "deadbeef.0"])
    assert done.returncode == 66
    assert b"deadbeef.0" in done.stderr
    assert [entry["id"] for entry in site.queue()] == [item_id]
