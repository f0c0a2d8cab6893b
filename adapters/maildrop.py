"""``SPOOLDIR/maildrop``: where users without privileges hand in mail, and where the
runner takes it from (SPEC 8.2; the file format is core/maildrop.py).

The submitter's side, ``MaildropWriter``: a temporary name opened
O_CREAT|O_EXCL|O_NOFOLLOW|O_WRONLY, mode 0600, locked while it is written (so the
runner leaves a slow writer alone), the message streamed into it, the head's size
field rewritten in place, fsync, rename to a final name made of the time, the pid
and random bits, and the name made durable.  The maildrop (mode 1733) cannot be
opened for reading by its users, so they cannot fsync it: a submitter that may not
open it fsyncs the renamed file again instead, which on ext4, XFS and btrfs commits
the journal transaction that holds the rename (it changed the file's inode too).

The runner's side, ``MaildropDirectory`` (root only): the directory is locked while
one pickup pass runs (flock on the directory itself, which nobody but root can open),
every name is looked at with lstat first and opened O_RDONLY|O_NOFOLLOW|O_NONBLOCK
(a FIFO never blocks, a link is never followed), and the open file must be the one
that lstat saw, a regular file with one link, owned by a uid that names a user, no
larger than ``MAILDROP_MAX_OCTETS``, with a head and recipients that parse.  What
fails is moved, by rename and never read through, into ``SPOOLDIR/quarantine/``
(adapters/quarantine.py, ``move_foreign``).  A temporary name is left alone while
its writer holds its lock or it is younger than an hour.

A user's ``dma -Qd`` goes the same way (``drop_request``): a deletion request
(core/maildrop.py's second record kind) written by temporary name, fsync and rename
like a message; the runner judges it as it judges a message (the same checks of the
file, the owner from fstat) and hands it over as a ``RequestFile``.

``open_watch`` tells a long-lived runner when something arrives: inotify through
libc (ctypes, no new dependency), else polling once a second.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from types import TracebackType

from dma.adapters import system
from dma.adapters.locked_directory import LockedDirectory
from dma.core.errors import CantCreateError, DataError
from dma.core.maildrop import (
    MAX_HEAD_OCTETS,
    MAX_REQUEST_OCTETS,
    MAX_TRAILER_OCTETS,
    DeleteRequest,
    Head,
    MaildropEnvelope,
    is_delete_request,
    parse_delete_request,
    parse_head,
    parse_trailer,
    render_delete_request,
    render_head,
    render_trailer,
)
from dma.core.system_layout import MAILDROP, MAILDROP_MAX_OCTETS
from dma.core.values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

    from dma.adapters.quarantine import Quarantined
    from dma.adapters.system import UserEntry

TEMP_PREFIX = "tmp_"
"""Names a submitter is still writing; anything else is a finished file."""

STALE_SECONDS = 3600.0
"""A temporary name older than this whose writer holds no lock is abandoned."""

FILE_MODE = 0o600
QUARANTINE_PREFIX = "maildrop-"
"""A refused maildrop file's name in the quarantine: this, then its own name."""

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_READ_CHUNK = 1 << 20
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def maildrop_path(spool_directory: str) -> str:
    """The maildrop directory of a spool."""
    return os.path.join(spool_directory, MAILDROP)


def _reason(error: OSError) -> str:
    return error.strerror or os.strerror(error.errno or 0) or str(error)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _pread_exact(fd: int, size: int, offset: int) -> bytes:
    """``size`` octets at ``offset``, fewer only at the end of the file."""
    chunks = []
    got = 0
    while got < size:
        chunk = os.pread(fd, min(size - got, _READ_CHUNK), offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


# --- the submitter's side ---------------------------------------------------------------


class _Bounded:
    """The message's way into the file: counts octets, refuses to pass the size limit."""

    def __init__(self, raw: BinaryIO, limit: int, directory: str) -> None:
        self._raw = raw
        self._left = limit
        self._directory = directory
        self.written = 0

    def write(self, data: bytes) -> int:
        size = len(data)
        if size > self._left:
            raise _too_large(self._directory)
        self._left -= size
        self.written += size
        return self._raw.write(data)

    def writelines(self, lines: Iterator[bytes] | tuple[bytes, ...] | list[bytes]) -> None:
        for line in lines:
            self.write(line)


def _too_large(directory: str) -> CantCreateError:
    return CantCreateError(
        f"the message is too large for the maildrop {directory}: more than "
        f"{MAILDROP_MAX_OCTETS} octets with its envelope",
        hint="send large files another way; nothing was queued",
    )


class MaildropWriter:
    """One submission being written into the maildrop; removed on exit unless finished."""

    def __init__(self, directory: str, envelope: MaildropEnvelope,
                 limit: int = MAILDROP_MAX_OCTETS) -> None:
        """Create the temporary file and write the head (its size field still zero)."""
        self.directory = directory
        self._envelope = envelope
        self._limit = limit
        self.name: str | None = None  # the final name, once finished
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        for _ in range(8):
            temp = TEMP_PREFIX + system.random_hex(8)
            try:
                fd = os.open(os.path.join(directory, temp), flags, FILE_MODE)
                break
            except FileExistsError:
                continue
            except OSError as error:
                raise self._cant("create a file", error) from error
        else:
            raise CantCreateError(f"cannot create a file in the maildrop {directory}",
                                  hint="eight random names were all taken: try again")
        self._temp = temp
        self._fd = fd
        self._raw = os.fdopen(fd, "wb")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the runner leaves it alone
        except OSError:
            pass
        self._head = render_head(envelope, 0)
        if len(self._head) > limit:
            self.close()
            raise _too_large(directory)
        try:
            self._raw.write(self._head)
        except OSError as error:
            self.close()
            raise self._cant("write", error) from error
        self.file = _Bounded(self._raw, limit - len(self._head), directory)

    def _cant(self, what: str, error: OSError) -> CantCreateError:
        return CantCreateError(
            f"cannot {what} in the maildrop {self.directory}: {_reason(error)}",
            hint="check free space and quotas; nothing was queued",
        )

    def __enter__(self) -> MaildropWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def finish(self, recipients: tuple[str, ...]) -> str:
        """Write the recipients, the message's size, fsync, rename; return the final name.

        Once this returns, the message is durably in the maildrop.
        """
        trailer = render_trailer(recipients)
        if len(trailer) > MAX_TRAILER_OCTETS:
            raise DataError(
                f"too many recipients for one message: {len(recipients)}",
                hint="split the recipients over several messages; nothing was queued",
            )
        if len(self._head) + self.file.written + len(trailer) > self._limit:
            raise _too_large(self.directory)
        try:
            self._raw.write(trailer)
            self._raw.flush()
            _write_all(self._fd, render_head(self._envelope, self.file.written), 0)
            os.fsync(self._fd)
            name = _final_name()
            os.rename(os.path.join(self.directory, self._temp),
                      os.path.join(self.directory, name))
        except OSError as error:
            raise self._cant("write the message", error) from error
        self.name = name
        try:
            _sync_name(self.directory, self._fd)
        except OSError as error:
            raise self._cant("make the message durable", error) from error
        return name

    def close(self) -> None:
        """Close the file (dropping its lock); remove it unless it was finished."""
        try:
            self._raw.close()
        except OSError:
            pass
        if self.name is None:
            try:
                os.unlink(os.path.join(self.directory, self._temp))
            except OSError:
                pass


def _final_name() -> str:
    """Unique across processes and hosts: microseconds, pid and 64 random bits."""
    return f"{time.time_ns() // 1000:013x}.{os.getpid()}.{system.random_hex(8)}"


def _sync_name(directory: str, fd: int) -> None:
    """Make a rename into ``directory`` durable: fsync the directory when we may open it,
    else the file ``fd`` again (its inode changed in the same journal transaction as
    the directory)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    except PermissionError:
        os.fsync(fd)
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def drop_request(directory: str, request: DeleteRequest) -> str:
    """Hand a deletion request to the runner: write it into the maildrop as a message is
    written (a temporary name O_EXCL|O_NOFOLLOW 0600, fsync, rename, the name made
    durable); return its final name.  CantCreateError when it cannot be written."""
    data = render_delete_request(request)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    temp = os.path.join(directory, TEMP_PREFIX + system.random_hex(8))
    name = _final_name()
    try:
        fd = os.open(temp, flags, FILE_MODE)
    except OSError as error:
        raise _cant_request(directory, error) from error
    try:
        _write_all(fd, data, 0)
        os.fsync(fd)
        os.rename(temp, os.path.join(directory, name))
        _sync_name(directory, fd)
    except OSError as error:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise _cant_request(directory, error) from error
    finally:
        os.close(fd)
    return name


def _cant_request(directory: str, error: OSError) -> CantCreateError:
    return CantCreateError(
        f"cannot write the deletion request into the maildrop {directory}: {_reason(error)}",
        hint="check free space and quotas; nothing was deleted",
    )


def still_there(directory: str, name: str) -> bool:
    """True while the maildrop file ``name`` (one we wrote: its name is ours to look up,
    though the directory cannot be listed) has not been taken by the runner."""
    try:
        os.lstat(os.path.join(directory, name))
    except FileNotFoundError:
        return False
    return True


# --- the runner's side -------------------------------------------------------------------


@frozen
class Refusal:
    """A maildrop file the runner will not take, and why: it goes to the quarantine."""

    name: str
    reason: str
    info: os.stat_result  # what lstat (or fstat of the open file) saw


class DropFile:
    """An open maildrop file that passed every check the adapter makes."""

    def __init__(self, name: str, fd: int, info: os.stat_result, owner: UserEntry,
                 head: Head, recipients: tuple[str, ...]) -> None:
        self.name = name
        self.info = info
        self.owner = owner
        self.head = head
        self.recipients = recipients
        self._fd: int | None = fd

    def __enter__(self) -> DropFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def message_chunks(self) -> Iterator[bytes]:
        """The message, in chunks, exactly as many octets as the head says."""
        if self._fd is None:
            raise ValueError("maildrop file is closed")
        offset = self.head.length
        left = self.head.message_octets
        while left > 0:
            chunk = os.pread(self._fd, min(left, _READ_CHUNK), offset)
            if not chunk:
                raise DataError(
                    f"maildrop file {self.name} was cut short while it was read",
                    hint="its owner changed it after it was handed in",
                )
            offset += len(chunk)
            left -= len(chunk)
            yield chunk

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@frozen
class RequestFile:
    """A deletion request that passed every check the adapter makes: who asks (the
    file's owner, from fstat), and for which items."""

    name: str
    info: os.stat_result
    owner: UserEntry
    request: DeleteRequest


def _drop_file(name: str, fd: int, held: os.stat_result, owner: UserEntry, start: bytes
               ) -> DropFile:
    """A message file whose head (in ``start``) and trailer parse; DataError if not."""
    head = parse_head(start, name)
    message_end = head.length + head.message_octets
    if message_end > held.st_size:
        raise DataError(f"its message is cut short: the head says "
                        f"{head.message_octets} octets, the file holds "
                        f"{max(0, held.st_size - head.length)}")
    trailer_octets = held.st_size - message_end
    trailer = _pread_exact(fd, min(trailer_octets, MAX_TRAILER_OCTETS + 1), message_end)
    recipients = parse_trailer(trailer, name)
    return DropFile(name, fd, held, owner, head, recipients)


def _request_file(name: str, fd: int, held: os.stat_result, owner: UserEntry
                  ) -> RequestFile:
    """A deletion request file that parses; DataError if not (or if it is too big)."""
    if held.st_size > MAX_REQUEST_OCTETS:
        raise DataError(f"deletion request is {held.st_size} octets, more than "
                        f"{MAX_REQUEST_OCTETS}")
    request = parse_delete_request(_pread_exact(fd, MAX_REQUEST_OCTETS + 1, 0), name)
    return RequestFile(name, held, owner, request)


def _owner(uid: int) -> UserEntry | None:
    """The user that ``uid`` names, when the password database names one, and that
    name leads back to the same uid."""
    import pwd

    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None
    entry = system.user_entry(name)
    return entry if entry is not None and entry.uid == uid else None


def quarantine_name(name: str) -> str:
    """The name a refused maildrop file gets in the quarantine (``-Qd`` takes it)."""
    safe = "".join(char if char in _SAFE else "_" for char in name[:100])
    return QUARANTINE_PREFIX + (safe or "_")


class MaildropDirectory(LockedDirectory):
    """The maildrop as the runner sees it: one pickup pass at a time, under its lock."""

    what = "the maildrop"

    def __init__(self, spool_directory: str) -> None:
        super().__init__(maildrop_path(spool_directory))
        self.spool_directory = spool_directory

    def exists(self) -> bool:
        """True when the maildrop is there (a directory, not a link to one)."""
        try:
            return stat.S_ISDIR(os.lstat(self.path).st_mode)
        except OSError:
            return False

    def names(self) -> list[str]:
        """Every name in the maildrop, in order (the time comes first in ours)."""
        return sorted(entry.name for entry in os.scandir(self.fd))

    def judge(self, name: str, now: float) -> DropFile | RequestFile | Refusal | None:
        """Open and check one name: a DropFile to take, a RequestFile to carry out, a
        Refusal, or None (gone, still being written, or changed under us: the next pass
        looks again).

        Raises OSError when the file cannot be looked at (it stays in the maildrop).
        """
        dir_fd = self.fd
        try:
            seen = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        from dma.adapters.file_kinds import file_kind

        kind = file_kind(seen.st_mode)
        if kind is not None:
            return Refusal(name, f"it is {kind}", seen)
        temporary = name.startswith(TEMP_PREFIX)
        if temporary and seen.st_mtime > now - STALE_SECONDS:
            return None  # a submitter is writing it
        flags = os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENXIO, errno.EMLINK):
                return None  # replaced by a link or a socket since lstat: look again
            raise
        try:
            found = self._check_open(name, fd, seen, temporary)
        except BaseException:
            os.close(fd)
            raise
        if not isinstance(found, DropFile):
            os.close(fd)
        return found

    def _check_open(self, name: str, fd: int, seen: os.stat_result, temporary: bool
                    ) -> DropFile | RequestFile | Refusal | None:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (seen.st_dev, seen.st_ino):
            return None  # replaced since lstat: the next pass looks again
        if not stat.S_ISREG(held.st_mode):
            return Refusal(name, "it is not a regular file", held)
        if temporary:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None  # its writer is still at it, however slowly
            return Refusal(name, "an unfinished submission whose writer went away over "
                           "an hour ago", held)
        if held.st_nlink != 1:
            return Refusal(name, f"it has {held.st_nlink} links (a hard link to a file "
                           "elsewhere is never read)", held)
        owner = _owner(held.st_uid)
        if owner is None:
            return Refusal(name, f"its owner uid {held.st_uid} is no user", held)
        if held.st_size > MAILDROP_MAX_OCTETS:
            return Refusal(name, f"it is {held.st_size} octets, more than the maildrop "
                           f"takes ({MAILDROP_MAX_OCTETS})", held)
        start = _pread_exact(fd, MAX_HEAD_OCTETS + 1, 0)
        try:
            if is_delete_request(start):
                return _request_file(name, fd, held, owner)
            return _drop_file(name, fd, held, owner, start)
        except DataError as error:
            return Refusal(name, str(error), held)

    def refuse(self, refusal: Refusal) -> Quarantined | None:
        """Move a refused file into the quarantine by rename (never followed, never read).

        None when the name no longer holds that file.  Raises OSError when the move
        fails; the file then stays where it is.
        """
        from dma.adapters.quarantine import Quarantine

        return Quarantine(self.spool_directory).move_foreign(
            self.fd, refusal.name, refusal.info, quarantine_name(refusal.name),
            f"maildrop file {refusal.name} (uid {refusal.info.st_uid}): {refusal.reason}",
        )

    def remove(self, drop: DropFile | RequestFile) -> None:
        """Unlink a file the spool now holds (when its name still holds it), durably."""
        dir_fd = self.fd
        try:
            now_there = os.stat(drop.name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (now_there.st_dev, now_there.st_ino) == (drop.info.st_dev, drop.info.st_ino):
            os.unlink(drop.name, dir_fd=dir_fd)
            os.fsync(dir_fd)


# --- noticing new files --------------------------------------------------------------------


class PollWatch:
    """No inotify: look once a second."""

    broken = False

    def wait(self, timeout: float) -> bool:
        """Sleep up to a second; True: the caller should look."""
        time.sleep(max(0.0, min(timeout, 1.0)))
        return True

    def close(self) -> None:
        pass


_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_CREATE = 0x00000100
_IN_Q_OVERFLOW = 0x00004000
_IN_IGNORED = 0x00008000
_IN_ONLYDIR = 0x01000000
_IN_DONT_FOLLOW = 0x02000000
_EVENT_HEAD = 16  # struct inotify_event: int wd; uint32 mask, cookie, len; char name[]


class InotifyWatch:
    """inotify on the maildrop: a new name (created, renamed into it, closed after
    writing) wakes the waiter at once.  ``broken`` once the watch is gone (the
    directory was removed or replaced): the caller opens a new one."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.broken = False

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when a name other than a temporary one
        arrived (or events were lost, or the watch broke)."""
        import select

        try:
            ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout))
        except InterruptedError:
            return False
        if not ready:
            return False
        return self._drain()

    def _drain(self) -> bool:
        wanted = False
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return wanted
            if not data:
                return wanted
            offset = 0
            while offset + _EVENT_HEAD <= len(data):
                mask = int.from_bytes(data[offset + 4:offset + 8], "little")
                length = int.from_bytes(data[offset + 12:offset + 16], "little")
                name = data[offset + _EVENT_HEAD:offset + _EVENT_HEAD + length].rstrip(b"\0")
                offset += _EVENT_HEAD + length
                if mask & _IN_IGNORED:
                    self.broken = True
                    wanted = True
                elif mask & _IN_Q_OVERFLOW or not name.startswith(TEMP_PREFIX.encode()):
                    wanted = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _inotify(path: str) -> InotifyWatch | None:
    """An inotify watch on ``path`` through libc, or None where that cannot be had."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        init = libc.inotify_init1
        add = libc.inotify_add_watch
    except (OSError, AttributeError, ImportError):
        return None
    init.argtypes = [ctypes.c_int]
    init.restype = ctypes.c_int
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add.restype = ctypes.c_int
    fd = init(os.O_NONBLOCK | _CLOEXEC)
    if fd < 0:
        return None
    mask = _IN_CREATE | _IN_MOVED_TO | _IN_CLOSE_WRITE | _IN_ONLYDIR | _IN_DONT_FOLLOW
    if add(fd, os.fsencode(path), mask) < 0:
        os.close(fd)
        return None
    return InotifyWatch(fd)


def open_watch(spool_directory: str) -> InotifyWatch | PollWatch:
    """Something to wait on for new maildrop files: inotify, else polling each second."""
    return _inotify(maildrop_path(spool_directory)) or PollWatch()
