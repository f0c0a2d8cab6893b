"""Local delivery into a user's mailbox: an mbox file, or a Maildir directory (SPEC 5.2).

mbox: append one mboxrd record under the locks that mail programs honour (a
``<mailbox>.lock`` dotlock, an fcntl write lock, and the flock lock that the C dma
takes), fsync, and on any failure cut the file back to its old length so a reader
never sees half a message.  Maildir:
write ``tmp/<unique>``, fsync, link it into ``new/``, fsync ``new/``; no locks needed.
Symlinks are never followed: a mailbox that is a link is refused.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import itertools
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO

from dma.core.errors import CantCreateError, DmaError, TempFailure
from dma.core.maildir import maildir_filename, with_size
from dma.core.mbox import mbox_record

MAILBOX_MODE = 0o600
DOTLOCK_MODE = 0o644
_CHUNK = 64 * 1024
_NFS_SUPER_MAGIC = 0x6969  # statfs f_type of NFS (linux/magic.h)
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


@dataclass(frozen=True, slots=True)
class _Dotlock:
    """A dotlock we created: its path and identity, so we only ever remove our own."""

    path: str
    device: int
    inode: int


def deliver(
    path: str,
    message: BinaryIO,
    sender: str,
    moment: datetime,
    *,
    lock_timeout: float = 60.0,
    stale_lock_age: float = 300.0,
    owner: tuple[int, int] | None = None,
) -> str:
    """Deliver ``message`` (a spooled M file, read from its current position) to ``path``.

    ``path`` is ``MAILDIR/<user>``: a directory holding cur/, new/ and tmp/ gets a
    Maildir delivery, anything else an appended mbox record (created 0600 if missing,
    owned by ``owner`` (uid, gid) when given, else by the calling process).  With
    ``owner`` given, an existing mailbox or Maildir of another uid is refused.
    ``moment`` dates the mbox separator line.
    Returns the file the message went into, for the log.  Raises TempFailure when a
    retry may work (a full disk, I/O errors; MailboxLocked, a TempFailure, when a
    lock is held past ``lock_timeout``) and
    CantCreateError when the mailbox is a symlink or neither a regular file nor a
    Maildir.  Nothing half-written is left behind either way.
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
    return _deliver_mbox(path, message, sender, moment, lock_timeout, stale_lock_age, owner)


# --- mbox -------------------------------------------------------------------------


def _deliver_mbox(
    path: str,
    message: BinaryIO,
    sender: str,
    moment: datetime,
    lock_timeout: float,
    stale_lock_age: float,
    owner: tuple[int, int] | None = None,
) -> str:
    """Open, lock, check the file is still the one at ``path``, append, unlock.

    A mail reader may replace the mailbox (rename a rewritten copy over it) while we
    wait for the locks; appending to the old inode would lose the mail, so then we
    let go and start again on the new file.
    """
    deadline = time.monotonic() + lock_timeout
    while True:
        fd = _open_mbox(path, owner)
        try:
            dotlock = _lock(fd, path, deadline, stale_lock_age)
            try:
                if _still_at(fd, path):
                    _append(fd, path, mbox_record(message, sender, moment))
                    return path
            finally:
                _unlock(fd, dotlock)
        finally:
            os.close(fd)
        if time.monotonic() >= deadline:
            raise TempFailure(
                f"mailbox {path} kept being replaced while we waited for its lock",
                hint="delivery will be retried",
            )


def _open_mbox(path: str, owner: tuple[int, int] | None = None) -> int:
    """Open the mailbox for appending, creating it exclusively when missing.

    O_NOFOLLOW refuses a symlink (even one planted after our lstat), O_EXCL never
    opens a file someone else created in between, O_NONBLOCK keeps a FIFO from
    hanging us until we can refuse it.  A file we create is given to ``owner``;
    should that fail it is removed again, so that no empty mailbox its user cannot
    read stays behind.  An existing mailbox must already belong to ``owner``.
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
            if owner is not None:
                try:
                    os.fchown(fd, *owner)
                except OSError as exc:
                    raise _failure(exc, path, "cannot give mailbox", "to its user") from exc
                info = os.fstat(fd)
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


def _lock(fd: int, path: str, deadline: float, stale_lock_age: float) -> _Dotlock | None:
    """Take the dotlock, the fcntl lock and the flock lock, waiting until ``deadline``.

    All or nothing on each try, and never holding one while waiting for another:
    readers take them in any order (mutt fcntl first, procmail the dotlock first, the
    C dma flock alone), so hold-and-wait could deadlock.  flock is needed as well as
    fcntl because on Linux the two kinds do not see each other (except on NFS, where
    flock is an fcntl lock in disguise: there fcntl alone excludes the C dma).
    Returns our dotlock, or None when the directory does not allow one.
    """
    delay = _POLL_FIRST
    use_flock = not _on_nfs(fd)
    while True:
        dotlock, held = _try_all_locks(fd, path, stale_lock_age, use_flock=use_flock)
        if held is None:
            return dotlock
        now = time.monotonic()
        if now >= deadline:
            raise MailboxLocked(
                f"mailbox {path} is locked by another program ({held})",
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
    fd: int, path: str, stale_lock_age: float, *, use_flock: bool = True
) -> tuple[_Dotlock | None, str | None]:
    """Try each lock once; returns (our dotlock, None) holding all of them, or
    (None, what is held by someone else) holding none."""
    available, dotlock = _try_dotlock(path, stale_lock_age)
    if not available:
        return None, f"{path}.lock"
    fcntl_held = False
    try:
        if not _try_kernel_lock(fd, path, fcntl.lockf):
            _remove_dotlock(dotlock)
            return None, "an fcntl lock on it"
        fcntl_held = True
        if use_flock and not _try_kernel_lock(fd, path, fcntl.flock):
            _release(fd, dotlock, fcntl_held=True)
            return None, "a flock lock on it"
    except BaseException:
        _release(fd, dotlock, fcntl_held=fcntl_held)
        raise
    return dotlock, None


def _try_dotlock(path: str, stale_lock_age: float) -> tuple[bool, _Dotlock | None]:
    """Try once to create ``<path>.lock`` holding our pid; take over a stale one.

    Returns (True, lock) when we hold it, (False, None) when someone else does, and
    (True, None) when no dotlock can be made in this directory at all.
    """
    lock_path = path + ".lock"
    for _attempt in range(2):
        try:
            fd = os.open(
                lock_path,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                DOTLOCK_MODE,
            )
        except FileExistsError:
            if _remove_if_stale(lock_path, stale_lock_age):
                continue
            return False, None
        except OSError as exc:
            if exc.errno in _NO_DOTLOCK_ERRNOS:
                return True, None
            raise _failure(exc, lock_path, "cannot create lock file") from exc
        try:
            os.write(fd, f"{os.getpid()}\n".encode("ascii"))
            info = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            _unlink_quietly(lock_path)
            raise _failure(exc, lock_path, "cannot write lock file") from exc
        os.close(fd)
        return True, _Dotlock(lock_path, info.st_dev, info.st_ino)
    return False, None


def _remove_if_stale(lock_path: str, stale_lock_age: float) -> bool:
    """Remove a dotlock untouched for longer than ``stale_lock_age``; say if we did.

    Its holder died without cleaning up.  The lock is looked at again just before
    removal so that a fresh lock made in between by another taker survives.
    """
    try:
        first = os.lstat(lock_path)
        if time.time() - first.st_mtime <= stale_lock_age:
            return False
        again = os.lstat(lock_path)
        if (again.st_ino, again.st_mtime_ns) != (first.st_ino, first.st_mtime_ns):
            return False
        os.unlink(lock_path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def _remove_dotlock(dotlock: _Dotlock | None) -> None:
    """Remove our dotlock, unless it was taken over as stale and is someone else's now."""
    if dotlock is None:
        return
    try:
        info = os.lstat(dotlock.path)
    except OSError:
        return
    if (info.st_dev, info.st_ino) == (dotlock.device, dotlock.inode):
        _unlink_quietly(dotlock.path)


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
    """Release the flock and fcntl locks, then our dotlock (the reverse of taking them)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass  # closing the descriptor releases it anyway
    _release(fd, dotlock, fcntl_held=True)


def _release(fd: int, dotlock: _Dotlock | None, *, fcntl_held: bool) -> None:
    """Release the fcntl lock when we hold it, then our dotlock."""
    if fcntl_held:
        try:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        except OSError:
            pass  # closing the descriptor releases it anyway
    _remove_dotlock(dotlock)


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


def _append(fd: int, path: str, chunks: Iterable[bytes]) -> None:
    """Write ``chunks`` at the end and fsync; on any failure truncate to the old length.

    A mailbox whose last writer died mid-append may end without its blank line, or
    in the middle of a line; the missing newlines go first, or the new separator
    line would be glued to that text and not be seen by readers.
    """
    old_length = os.fstat(fd).st_size
    try:
        pending = bytearray(_missing_end(fd, old_length))
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
        if isinstance(exc, OSError):
            note = (
                f"rolled back to {old_length} bytes"
                if rolled_back
                else f"and could not roll back to {old_length} bytes"
            )
            raise _failure(exc, path, f"cannot write mailbox ({note})") from exc
        raise


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
