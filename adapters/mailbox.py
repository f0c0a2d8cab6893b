"""Local delivery into a user's mailbox: an mbox file, or a Maildir directory (SPEC 5.2).

mbox: append one mboxrd record under the locks that mail programs honour (an fcntl
write lock, the flock lock that the C dma takes, and a ``<mailbox>.lock`` dotlock),
fsync, and on any failure cut the file back to its old length so a reader never sees
half a message.  A dotlock whose process is gone is stale at once (older ones after
``stale_lock_age``); something at the dotlock's name that is no regular file is left
alone and reported, and the kernel locks guard the mailbox without it.  Maildir:
write ``tmp/<unique>``, fsync, link it into ``new/``, fsync ``new/``; no locks needed.
Symlinks are never followed: a mailbox that is a link is refused.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import itertools
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, BinaryIO, Literal

from dma.adapters.file_kinds import file_kind
from dma.core.dotlock import LOCK_READ_LIMIT, lock_content, lock_pid
from dma.core.errors import CantCreateError, DmaError, TempFailure
from dma.core.maildir import maildir_filename, with_size
from dma.core.mbox import (
    AppendIntent,
    from_line,
    length_to_restore,
    mbox_record,
    parse_intent,
    render_intent,
)
from dma.core.values import frozen

MAILBOX_MODE = 0o600
INTENT_DIR = ".mbox-intents"
# A separator line anywhere: "From <sender> <ctime>", as mbox writers put it.
_GLUED_SEPARATOR = re.compile(
    rb"From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct"
    rb"|Nov|Dec) [ \d]\d \d\d:\d\d(?::\d\d)? ")
_SEPARATOR_TAIL = 600  # octets kept between chunks: a separator's sender fits in it
"""Where, under the spool, an mbox append announces itself (see ``AppendIntent``)."""
_INTENT_READ_LIMIT = 4096
DOTLOCK_MODE = 0o644
_CHUNK = 64 * 1024
_NFS_SUPER_MAGIC = 0x6969  # statfs f_type of NFS (linux/magic.h)
# File systems other hosts (or their containers) may write too: a bare pid in a
# dotlock there may be another host's, so only its age can make it stale.
# linux/magic.h: NFS, SMB, CIFS, SMB2, Coda, AFS (two), Ceph, 9p, FUSE (sshfs and
# the like), GFS2, OCFS2, NCP; and Lustre, GPFS.
_SHARED_FILE_SYSTEMS = frozenset({
    _NFS_SUPER_MAGIC, 0x517B, 0xFF534D42, 0xFE534D42, 0x73757245, 0x5346414F,
    0x6B414653, 0x00C36400, 0x01021997, 0x65735546, 0x01161970, 0x7461636F, 0x564C,
    0x0BD00BD0, 0x47504653,
})
_POLL_FIRST = 0.005
_POLL_MAX = 0.1
# Errors that say "the dotlock cannot be made here at all" (e.g. /var/mail not
# writable by us): then the fcntl lock alone guards the mailbox, as with mutt's
# fallback, rather than deferring the mail forever.
_NO_DOTLOCK_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
# Link(2) refusals after which a rename into new/ is the portable fallback.
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
# Opened O_RDWR when we may read it (to look at its last bytes), else O_WRONLY.
_OPEN_MBOX = os.O_APPEND | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_maildir_sequence = itertools.count(1)


class MailboxLocked(TempFailure):
    """The mailbox stayed locked by another program until the lock timeout: try later."""


@frozen
class _Dotlock:
    """A dotlock we created: its path, and a descriptor of it kept open while we hold
    it, so that its inode cannot be reused and we only ever remove our own."""

    path: str
    fd: int


@frozen
class _Locks:
    """One try at the locks: all of them (``held_by`` None; ``dotlock`` None when
    there was none to take) or none, and who holds what we did not get; ``note``
    says what was worked around (a stale lock taken over, a dotlock left out)."""

    dotlock: _Dotlock | None = None
    held_by: str | None = None
    note: str = ""


# What stands at a dotlock's name (_existing_lock): a live lock, nothing any more
# (try to create it again), or something that keeps the dotlock from being made.
_Verdict = Literal["held", "again", "without"]
_KERNEL_LOCKS_ALONE = "delivered under the fcntl and flock locks alone"


def deliver(
    path: str,
    message: BinaryIO,
    sender: str,
    moment: datetime,
    *,
    lock_timeout: float = 60.0,
    stale_lock_age: float = 300.0,
    owner: tuple[int, int] | None = None,
    intent_dir: str | None = None,
    mode: int = MAILBOX_MODE,
) -> str:
    """Deliver ``message`` (a spooled M file, read from its current position) to ``path``.

    ``path`` is ``MAILDIR/<user>``: a directory holding cur/, new/ and tmp/ gets a
    Maildir delivery, anything else an appended mbox record (created with ``mode``,
    0600 unless told, if missing, owned by ``owner`` (uid, gid) when given, else by
    the calling process; see ``new_mailbox_owner``).  With
    ``owner`` given, an existing mailbox or Maildir of another uid is refused.
    ``moment`` dates the mbox separator line.
    Returns the file the message went into, for the log, followed by a note in
    parentheses when a lock was not taken as usual (a stale dotlock taken over, a
    dotlock left out because something that is no lock file sits at its name).
    Raises TempFailure when a retry may work (a full disk, I/O errors; MailboxLocked,
    a TempFailure, when a lock is held past ``lock_timeout``) and CantCreateError when
    the mailbox is a symlink or neither a regular file nor a Maildir.  Nothing
    half-written is left behind either way; with ``intent_dir`` (a directory of
    ours, under the spool) not even by a writer that was killed: each mbox append
    writes its intent there first, and the next writer undoes what a dead one cut
    short (``AppendIntent``).
    """
    try:
        info: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise _failure(exc, path, "cannot look at mailbox") from exc
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise _symlink_refused(path)
        if stat.S_ISDIR(info.st_mode):
            return _deliver_maildir(path, message, owner)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path)
    return _deliver_mbox(path, message, sender, moment, lock_timeout, stale_lock_age,
                         (owner, mode), intent_dir)


def new_mailbox_owner(maildir: str, uid: int, gid: int) -> tuple[tuple[int, int], int]:
    """Owner (uid, gid) and mode of a new mbox for the user ``uid`` (group ``gid``), as
    the host has them (SPEC 8.2).

    A MAILDIR of root's whose group is ``MAIL_GROUP`` (Debian's root:mail 2775
    /var/mail, also Fedora's root:mail 0775 /var/spool/mail): ``<user>:mail``
    ``core/system_layout.MAILBOX_MODE`` (0660), as useradd and the host's MTAs make
    them.  Anything else (a MAILDIR of the user's, one of root's group, or one that
    cannot be looked at): ``<user>:<user's group>`` 0600, as before.
    """
    import grp

    from dma.core.system_layout import MAIL_GROUP
    from dma.core.system_layout import MAILBOX_MODE as SHARED_MAILBOX_MODE

    try:
        info = os.stat(maildir)
        group = grp.getgrgid(info.st_gid).gr_name
    except (OSError, KeyError):
        return (uid, gid), MAILBOX_MODE
    if info.st_uid == 0 and group == MAIL_GROUP and stat.S_ISDIR(info.st_mode):
        return (uid, info.st_gid), SHARED_MAILBOX_MODE
    return (uid, gid), MAILBOX_MODE


# --- mbox -------------------------------------------------------------------------


def _deliver_mbox(
    path: str,
    message: BinaryIO,
    sender: str,
    moment: datetime,
    lock_timeout: float,
    stale_lock_age: float,
    new_file: tuple[tuple[int, int] | None, int] = (None, MAILBOX_MODE),
    intent_dir: str | None = None,
) -> str:
    """Open, lock, check the file is still the one at ``path``, append, unlock.

    ``new_file``: the owner (see ``deliver``) and the mode of the mailbox if made now.

    A mail reader may replace the mailbox (rename a rewritten copy over it) while we
    wait for the locks; appending to the old inode would lose the mail, so then we
    let go and start again on the new file.
    """
    deadline = time.monotonic() + lock_timeout
    while True:
        fd = _open_mbox(path, *new_file)
        try:
            locks = _lock(fd, path, deadline, stale_lock_age)
            try:
                if _still_at(fd, path):
                    intent = _intent_path(intent_dir, path)
                    notes = [locks.note, _undo_interrupted(fd, intent)]
                    head = _missing_end(fd, os.fstat(fd).st_size) + from_line(sender, moment)
                    _append(fd, path, mbox_record(message, sender, moment), head, intent)
                    note = "; ".join(n for n in notes if n)
                    return f"{path} ({note})" if note else path
            finally:
                _unlock(fd, locks.dotlock)
        finally:
            os.close(fd)
        if time.monotonic() >= deadline:
            raise TempFailure(
                f"mailbox {path} kept being replaced while we waited for its lock",
                hint="delivery will be retried",
            )


def _open_mbox(path: str, owner: tuple[int, int] | None = None,
               mode: int = MAILBOX_MODE) -> int:
    """Open the mailbox for appending, creating it exclusively when missing.

    O_NOFOLLOW refuses a symlink (even one planted after our lstat), O_EXCL never
    opens a file someone else created in between, O_NONBLOCK keeps a FIFO from
    hanging us until we can refuse it.  A file we create is given to ``owner``
    with ``mode`` (whatever the umask); should that fail it is removed again, so that
    no empty mailbox its user cannot read stays behind.  An existing mailbox must
    already belong to ``owner``.
    """
    created = False
    try:
        try:
            fd = _open_existing(path)
        except FileNotFoundError:
            try:
                fd = os.open(path, _OPEN_MBOX | os.O_RDWR | os.O_CREAT | os.O_EXCL, MAILBOX_MODE)
            except FileExistsError:
                fd = _open_existing(path)
            else:
                created = True
    except OSError as exc:
        raise _failure(exc, path, "cannot open mailbox") from exc
    ours: tuple[int, int] | None = None  # (device, inode) of the file we created
    try:
        info = os.fstat(fd)
        if created:
            ours = (info.st_dev, info.st_ino)
            info = _give_new_mailbox(fd, path, owner, mode)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path)
        if info.st_nlink != 1:
            raise CantCreateError(
                f"mailbox {path} has {info.st_nlink} hard links; refusing to append",
                hint="a linked mailbox can make mail land in another file; give it one name",
            )
        _check_owner(info, path, owner)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException as exc:
        os.close(fd)
        if ours is not None:
            _remove_created(path, ours)
        if isinstance(exc, OSError):
            raise _failure(exc, path, "cannot open mailbox") from exc
        raise
    return fd


def _give_new_mailbox(fd: int, path: str, owner: tuple[int, int] | None,
                      mode: int) -> os.stat_result:
    """Give the mailbox just created to ``owner``, then ``mode`` (which the umask may
    have cut: 0660 under umask 022); its stat after."""
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        if mode != MAILBOX_MODE:
            os.fchmod(fd, mode)
    except OSError as exc:
        raise _failure(exc, path, "cannot give mailbox", "to its user") from exc
    return os.fstat(fd)


def _open_existing(path: str) -> int:
    """Open an existing mailbox read-write (to look at its end), else write-only.

    A mailbox may be writable but not readable for us (mode 0620, group mail).
    """
    try:
        return os.open(path, _OPEN_MBOX | os.O_RDWR)
    except PermissionError:
        return os.open(path, _OPEN_MBOX | os.O_WRONLY)


def _remove_created(path: str, created: tuple[int, int]) -> None:
    """Remove the mailbox we just created, if ``path`` still names that very file."""
    try:
        info = os.lstat(path)
    except OSError:
        return
    if (info.st_dev, info.st_ino) == created:
        _unlink_quietly(path)


def _check_owner(info: os.stat_result, path: str, owner: tuple[int, int] | None) -> None:
    """Refuse a mailbox that does not belong to ``owner``, as procmail does.

    Whoever may create files in MAILDIR could otherwise make a victim's mailbox
    before the first delivery and read everything that lands in it.  A mailbox of
    root's is no such trap (root can read every mailbox anyway): an administrator
    may have made it, so it is accepted.
    """
    if owner is None or info.st_uid in (owner[0], 0):
        return
    raise TempFailure(
        f"mailbox {path} belongs to uid {info.st_uid}, not to its user (uid {owner[0]});"
        " refusing to deliver into it",
        hint="someone else owns it and could read the mail; the mail stays queued until"
        " an administrator gives the mailbox to its user (chown) or removes it",
    )


def _lock(fd: int, path: str, deadline: float, stale_lock_age: float) -> _Locks:
    """Take the fcntl lock, the flock lock and the dotlock, waiting until ``deadline``.

    All or nothing on each try, and never holding one while waiting for another:
    readers take them in any order (mutt fcntl first, procmail the dotlock first, the
    C dma flock alone), so hold-and-wait could deadlock.  flock is needed as well as
    fcntl because on Linux the two kinds do not see each other (except on NFS, where
    flock is an fcntl lock in disguise: there fcntl alone excludes the C dma).
    Returns what was taken: our dotlock (None when the directory does not allow one,
    or a non-regular file sits at its name) and a note on what was worked around.
    """
    delay = _POLL_FIRST
    file_system = file_system_type(fd)
    use_flock = file_system != _NFS_SUPER_MAGIC
    shared = file_system is None or file_system in _SHARED_FILE_SYSTEMS
    while True:
        got = _try_all_locks(fd, path, stale_lock_age, use_flock=use_flock, shared=shared)
        if got.held_by is None:
            return got
        now = time.monotonic()
        if now >= deadline:
            raise MailboxLocked(
                f"mailbox {path} is locked by another program ({got.held_by})",
                hint="delivery will be retried; remove a lock file no program holds",
            )
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, _POLL_MAX)


def _on_nfs(fd: int) -> bool:
    """Whether ``fd`` lives on NFS, where Linux emulates flock with fcntl locks.

    There our flock would conflict with our own fcntl lock (their owners differ) and
    every delivery would wait out its lock timeout.
    """
    return file_system_type(fd) == _NFS_SUPER_MAGIC


def file_system_type(fd: int) -> int | None:
    """statfs(2) f_type of the file system holding ``fd``; None when libc cannot say.

    Python has no fstatfs, so ask libc through ctypes (only local delivery pays for it).
    """
    libc = _libc()
    if libc is None:
        return None
    import ctypes

    buffer = ctypes.create_string_buffer(256)  # struct statfs is 120 octets on Linux
    try:
        if libc.fstatfs(fd, buffer) != 0:
            return None
    except AttributeError:  # a libc without fstatfs
        return None
    return int(ctypes.c_long.from_buffer(buffer).value & 0xFFFFFFFF)


@functools.cache
def _libc() -> Any:
    """The C library already loaded into this process (no ldconfig run), looked up once."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except (ImportError, OSError):
        return None


def _try_all_locks(
    fd: int, path: str, stale_lock_age: float, *, use_flock: bool = True, shared: bool = True
) -> _Locks:
    """Try each lock once: all of them, or none and what is held by someone else.

    The kernel locks come first (as mutt takes them), the dotlock last: so only a
    process holding the mailbox's fcntl and flock locks ever judges a dotlock stale
    and takes it over, and two of our deliverers can never both take over one.
    """
    if not _try_kernel_lock(fd, path, fcntl.lockf):
        return _Locks(held_by="an fcntl lock on it")
    try:
        if use_flock and not _try_kernel_lock(fd, path, fcntl.flock):
            _release_kernel_locks(fd)
            return _Locks(held_by="a flock lock on it")
        got = _try_dotlock(path, stale_lock_age, shared)
    except BaseException:
        _release_kernel_locks(fd)
        raise
    if got.held_by is not None:
        _release_kernel_locks(fd)
    return got


def _try_dotlock(path: str, stale_lock_age: float, shared: bool = True) -> _Locks:
    """Try once to create ``<path>.lock`` holding our pid; take over a stale one.

    Returns our lock; or no lock and who holds it; or no lock and nobody waited for:
    when no dotlock can be made in this directory at all (the fcntl and flock locks
    then guard the mailbox alone, as with mutt's fallback, rather than deferring the
    mail forever), or when something that is no lock file sits at its name, or a
    stale lock cannot be removed (the note says which).  ``shared``: the directory
    is on a file system other hosts write too, where a bare pid may be theirs.
    """
    lock_path = path + ".lock"
    notes: list[str] = []
    for _attempt in range(3):
        try:
            lock_fd = _make_dotlock(lock_path)
        except OSError as exc:
            if exc.errno in _NO_DOTLOCK_ERRNOS:
                return _Locks(note="; ".join(filter(None, notes)))
            raise _failure(exc, lock_path, "cannot create lock file") from exc
        if lock_fd is None:
            state, text = _existing_lock(lock_path, stale_lock_age, shared)
            if state == "held":
                return _Locks(held_by=text)
            notes.append(text)
            if state == "without":
                return _Locks(note="; ".join(filter(None, notes)))
            continue
        return _Locks(dotlock=_Dotlock(lock_path, lock_fd), note="; ".join(filter(None, notes)))
    return _Locks(held_by=f"{lock_path}, made again each time it was taken over")


def _make_dotlock(lock_path: str) -> int | None:
    """Create ``lock_path`` already holding our ``<pid>:<host>``; its open descriptor, or
    None when someone else's lock is there.

    As liblockfile does: the content goes into a file of our own first, which is then
    hard-linked to the lock's name, so a lock is never seen empty (a process killed
    between creating and writing it would leave an empty lock that only its age could
    clear, holding the mailbox for minutes).  Where hard links are refused, the lock
    is created in place with O_EXCL.
    """
    content = lock_content(os.getpid(), socket.gethostname())
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    own = f"{lock_path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(own, flags, DOTLOCK_MODE)
    try:
        _write_all(fd, content)
        try:
            os.link(own, lock_path, follow_symlinks=False)
        except FileExistsError:
            if os.fstat(fd).st_nlink != 2:  # 2: linked after all (a lost NFS reply)
                os.close(fd)
                return None
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            os.close(fd)
            return _make_dotlock_in_place(lock_path, flags, content)
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(own)
    return fd


def _make_dotlock_in_place(lock_path: str, flags: int, content: bytes) -> int | None:
    """The lock created at its name with O_EXCL (no hard links here); None when taken."""
    try:
        fd = os.open(lock_path, flags, DOTLOCK_MODE)
    except FileExistsError:
        return None
    try:
        _write_all(fd, content)
    except BaseException:
        _remove_dotlock(_Dotlock(lock_path, fd))
        raise
    return fd


def _existing_lock(
    lock_path: str, stale_lock_age: float, shared: bool
) -> tuple[_Verdict, str]:
    """Judge what stopped us creating ``lock_path``: ("held", by whom), ("again", note)
    when it is gone now (its holder let go, or we removed it as stale), or
    ("without", note) when no dotlock can be had while it is there.

    Something other than a regular file (a directory, FIFO, socket, symlink) is no
    dotlock of any mail program, and no dotlock program can take the lock while it
    sits there, so leaving the dotlock out excludes nobody: it is reported, never
    followed, opened or removed (it may be another program's, e.g. a mkdir lock,
    and removing things in a world-writable MAILDIR is how attacks start).  A
    regular file is stale when the process it names (of this host: see
    ``dma.core.dotlock``) is gone, else once untouched for ``stale_lock_age``.
    """
    try:
        seen = os.lstat(lock_path)
    except FileNotFoundError:
        return "again", ""
    except OSError as exc:
        raise _failure(exc, lock_path, "cannot look at lock file") from exc
    if not stat.S_ISREG(seen.st_mode):
        return "without", (
            f"no dotlock: {lock_path} is {file_kind(seen.st_mode)}, not a lock file"
            f" (left alone; remove it); {_KERNEL_LOCKS_ALONE}"
        )
    pinned = _open_lock(lock_path)
    try:
        if pinned is None:  # unreadable for us: its age alone decides
            info, content = seen, b""
        else:
            info = os.fstat(pinned)
            if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
                return "again", ""  # replaced between our looks: look again
            content = os.pread(pinned, LOCK_READ_LIMIT + 1, 0)
        pid = lock_pid(content, socket.gethostname(), shared=shared)
        age = time.time() - info.st_mtime
        if pid is not None and not _process_alive(pid):
            why = f"process {pid} is gone"
        elif age > stale_lock_age:
            why = f"untouched for {int(age)} s"
        else:
            return "held", lock_path if pid is None else f"{lock_path} of process {pid}"
        return _remove_stale(lock_path, info, why)
    except OSError as exc:
        raise _failure(exc, lock_path, "cannot read lock file") from exc
    finally:
        if pinned is not None:
            os.close(pinned)


def _open_lock(lock_path: str) -> int | None:
    """Open someone's lock file to read it (and so that its inode stays ours to compare:
    it cannot be reused while open); None when we may not read it."""
    try:
        return os.open(
            lock_path,
            os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
        )
    except OSError:
        return None


def _remove_stale(lock_path: str, judged: os.stat_result, why: str) -> tuple[_Verdict, str]:
    """Remove the stale lock ``judged`` if ``lock_path`` still names that very file,
    untouched since; ("again", note) when it is gone, ("without", note) when we may not
    remove it (a sticky MAILDIR, another user's file): a stale lock guards nothing."""
    try:
        now = os.lstat(lock_path)
    except FileNotFoundError:
        return "again", ""
    same = (now.st_dev, now.st_ino, now.st_mtime_ns, now.st_ctime_ns) == (
        judged.st_dev, judged.st_ino, judged.st_mtime_ns, judged.st_ctime_ns
    )
    if not same:
        return "again", ""
    try:
        os.unlink(lock_path)
    except FileNotFoundError:
        return "again", ""
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return "without", (
            f"no dotlock: {lock_path} is stale ({why}) but cannot be removed ({reason});"
            f" {_KERNEL_LOCKS_ALONE}"
        )
    return "again", f"took over the stale lock {lock_path} ({why})"


def _process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still hold a lock.

    kill(pid, 0): ESRCH says it is gone, EPERM that it lives under another uid.  A
    zombie (exited, not yet reaped) is gone too: it will never remove its lock.
    Anything we cannot tell counts as alive, and the lock's age decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether /proc says ``pid`` has exited (state Z or X); False when it cannot say."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            line = stat_file.read(1024)
    except OSError:
        return False
    fields = line.rpartition(b")")[2].split()  # the command name may hold anything
    return bool(fields) and fields[0] in (b"Z", b"X")


def _remove_dotlock(dotlock: _Dotlock | None) -> None:
    """Remove our dotlock, unless it was taken over as stale and is someone else's now.

    Its descriptor was kept open, so an inode number equal to ours is ours.
    """
    if dotlock is None:
        return
    try:
        here = os.lstat(dotlock.path)
        ours = os.fstat(dotlock.fd)
        if (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino):
            _unlink_quietly(dotlock.path)
    except OSError:
        pass
    finally:
        os.close(dotlock.fd)


def _try_kernel_lock(fd: int, path: str, take: Callable[[int, int], Any]) -> bool:
    """Try once for a whole-file exclusive lock with ``take``: fcntl.lockf (the kind
    mutt and mailx test) or fcntl.flock (the kind the C dma takes)."""
    try:
        take(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise _failure(exc, path, "cannot lock mailbox") from exc
    return True


def _unlock(fd: int, dotlock: _Dotlock | None) -> None:
    """Remove our dotlock, then release the flock and fcntl locks (the reverse of
    taking them)."""
    _remove_dotlock(dotlock)
    _release_kernel_locks(fd)


def _release_kernel_locks(fd: int) -> None:
    """Release the flock and fcntl locks (either may not be held: unlocking is harmless)."""
    for release in (fcntl.flock, fcntl.lockf):
        try:
            release(fd, fcntl.LOCK_UN)
        except OSError:
            pass  # closing the descriptor releases it anyway


def _still_at(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file we opened and locked."""
    try:
        here = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _failure(exc, path, "cannot look at mailbox") from exc
    ours = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (ours.st_dev, ours.st_ino)


def _append(fd: int, path: str, record: Iterable[bytes], head: bytes,
            intent: str | None) -> None:
    """Write ``head`` and then ``record`` after its first chunk (the separator line,
    which ``head`` ends with) at the end, and fsync; on any failure truncate to the
    old length.

    ``head`` starts with the newlines a mailbox whose last writer died mid-append
    lacks (else the new separator line would be glued to that text).  With
    ``intent``, the append is announced there before its first octet and the
    announcement removed once the record is durable.
    """
    old_length = os.fstat(fd).st_size
    if intent is not None:
        info = os.fstat(fd)
        try:
            _write_intent(intent, AppendIntent(info.st_dev, info.st_ino, old_length, head))
        except OSError:  # a full or unwritable spool: append without it, as without a spool
            intent = None
    try:
        chunks = iter(record)
        next(chunks)  # the separator line, which ``head`` holds
        pending = bytearray(head)
        for chunk in chunks:
            pending += chunk
            if len(pending) >= _CHUNK:
                _write_all(fd, pending)
                pending.clear()
        if pending:
            _write_all(fd, pending)
        os.fsync(fd)
    except BaseException as exc:
        rolled_back = _truncate(fd, old_length)
        if rolled_back and intent is not None:
            _remove_intent(intent)
        if isinstance(exc, OSError):
            note = (
                f"rolled back to {old_length} bytes"
                if rolled_back
                else f"and could not roll back to {old_length} bytes"
            )
            raise _failure(exc, path, f"cannot write mailbox ({note})") from exc
        raise
    if intent is not None:
        _remove_intent(intent)


def _intent_path(directory: str | None, mailbox: str) -> str | None:
    """The intent file of ``mailbox`` under ``directory`` (created on first use)."""
    if directory is None:
        return None
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError:
        return None  # no intent then: the append still rolls itself back on errors
    return os.path.join(directory, hashlib.sha256(os.fsencode(mailbox)).hexdigest()[:40])


def _write_intent(path: str, intent: AppendIntent) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    try:
        _write_all(fd, render_intent(intent))
    finally:
        os.close(fd)


def _remove_intent(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # gone already, or no file of ours: the next writer judges it again
        pass


def _undo_interrupted(fd: int, intent_path: str | None) -> str:
    """Cut off a record that a killed writer left half written (we hold every lock, so
    its writer is gone); a note for the log when something was removed."""
    if intent_path is None:
        return ""
    try:
        intent_fd = os.open(intent_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:  # none (the usual case), or nothing we can read: nothing to undo
        return ""
    try:
        intent = parse_intent(os.read(intent_fd, _INTENT_READ_LIMIT))
    except OSError:
        intent = None
    finally:
        os.close(intent_fd)
    note = ""
    if intent is not None:
        info = os.fstat(fd)
        try:
            found = os.pread(fd, len(intent.head), intent.offset)
            later = _separator_after(fd, intent.offset + len(intent.head), info.st_size)
        except OSError:  # a mailbox we may only append to: nothing can be judged
            found, later = b"", True
        cut = length_to_restore(intent, info.st_dev, info.st_ino, info.st_size, found, later)
        if cut is not None and _truncate(fd, cut):
            note = (f"removed {info.st_size - cut} bytes of a message cut short by a "
                    "delivery that was killed; it is delivered whole again")
    _remove_intent(intent_path)
    return note


def _separator_after(fd: int, start: int, end: int) -> bool:
    """True when another record may begin between ``start`` (a line start) and ``end``:
    a line starting ``From ``, or a separator line glued to the cut text by a writer
    that appends without a newline first (``cat >>``): then the cut one must stay."""
    carry = b"\n"
    position = start
    while position < end:
        chunk = os.pread(fd, min(_CHUNK * 16, end - position), position)
        if not chunk:
            break
        window = carry + chunk
        if b"\nFrom " in window or _GLUED_SEPARATOR.search(window):
            return True
        carry = window[-_SEPARATOR_TAIL:]
        position += len(chunk)
    return False


def _missing_end(fd: int, length: int) -> bytes:
    """The newlines a non-empty mailbox of ``length`` bytes lacks to end in a blank line.

    Nothing when the descriptor is write-only (a mailbox we may not read): then we
    cannot know and write the record as always.
    """
    if length == 0:
        return b""
    try:
        tail = os.pread(fd, 2, max(0, length - 2))
    except OSError as exc:
        if exc.errno == errno.EBADF:
            return b""
        raise
    if tail.endswith(b"\n\n"):
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _truncate(fd: int, length: int) -> bool:
    """Cut the mailbox back to ``length`` and make that durable; say if it worked."""
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    except OSError:
        return False
    return True


# --- Maildir ----------------------------------------------------------------------


def _deliver_maildir(path: str, message: BinaryIO, owner: tuple[int, int] | None = None) -> str:
    """Write tmp/<unique>, fsync, move it to new/<unique>,S=<size>, fsync new/."""
    try:
        top = os.open(path, _OPEN_DIR)
    except OSError as exc:
        raise _failure(exc, path, "cannot open Maildir") from exc
    try:
        _check_owner(os.fstat(top), path, owner)
        for sub in ("cur", "new", "tmp"):
            try:
                info = os.stat(sub, dir_fd=top, follow_symlinks=False)
            except FileNotFoundError:
                info = None
            if info is None or not stat.S_ISDIR(info.st_mode):
                raise CantCreateError(
                    f"mailbox {path} is a directory but not a Maildir (no {sub}/ in it)",
                    hint="create cur/, new/ and tmp/ in it, or remove it for an mbox",
                )
        tmp = os.open("tmp", _OPEN_DIR, dir_fd=top)
        try:
            new = os.open("new", _OPEN_DIR, dir_fd=top)
            try:
                final = _write_maildir(path, message, tmp, new, owner)
            finally:
                os.close(new)
        finally:
            os.close(tmp)
    except OSError as exc:
        raise _failure(exc, path, "cannot deliver to Maildir") from exc
    finally:
        os.close(top)
    return os.path.join(path, "new", final)


def _write_maildir(
    path: str, message: BinaryIO, tmp: int, new: int, owner: tuple[int, int] | None = None
) -> str:
    """The tmp-then-new dance inside open directories; returns the name in new/."""
    now = time.time_ns()
    unique = maildir_filename(
        now // 1_000_000_000,
        now // 1000 % 1_000_000,
        os.getpid(),
        next(_maildir_sequence),
        socket.gethostname(),
        secrets.token_hex(8),
    )
    fd = os.open(
        unique,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        MAILBOX_MODE,
        dir_fd=tmp,
    )
    try:
        if owner is not None:
            os.fchown(fd, *owner)  # root delivering: the file must be the user's to read
        size = 0
        while chunk := message.read(_CHUNK):
            _write_all(fd, chunk)
            size += len(chunk)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(unique, tmp)
        raise
    os.close(fd)
    final = with_size(unique, size)
    try:
        os.link(unique, final, src_dir_fd=tmp, dst_dir_fd=new, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            _unlink_quietly(unique, tmp)
            raise
        os.rename(unique, final, src_dir_fd=tmp, dst_dir_fd=new)
    else:
        _unlink_quietly(unique, tmp)
    os.fsync(new)
    return final


# --- shared -----------------------------------------------------------------------


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """os.write until all of ``data`` is written (regular files may write short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        view = view[written:]


def _unlink_quietly(name: str, dir_fd: int | None = None) -> None:
    """Remove a file of ours if it is still there; cleanup must not hide the real error."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def _symlink_refused(path: str) -> CantCreateError:
    return CantCreateError(
        f"mailbox {path} is a symbolic link; refusing to follow it",
        hint="replace the link with a regular file or a Maildir",
    )


def _not_regular(path: str) -> CantCreateError:
    return CantCreateError(
        f"mailbox {path} is not a regular file",
        hint="make it a regular file, or a Maildir with cur/, new/ and tmp/",
    )


def _failure(exc: OSError, path: str, what: str, after: str = "") -> DmaError:
    """Map an OS error to ours: a symlink refusal is permanent, the rest is retried.

    Full disks, quotas, size limits, I/O errors and permissions can all be fixed
    without the sender's help, so they wait in the queue (the C dma does the same).
    """
    if exc.errno == errno.ELOOP:
        return _symlink_refused(path)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    named = f"{what} {path} {after}" if after else f"{what} {path}"
    return TempFailure(f"{named}: {reason}", hint="delivery will be retried")
