"""The spool directory: crash-safe creation, listing, locking and cleaning of queue items (SPEC 4).

Layout and order are shared with the C dma (docs/design.md): a message is written
to ``tmp_<random>`` and fsynced; per recipient it is hard-linked to ``M<id>`` and
its Q text written to ``tmp_q<random>``, fsynced and put in place as ``Q<id>``;
then the directory is fsynced and the temp name dropped.  So a ``Q`` file exists
only when its ``M`` does, and a crash leaves at worst temp files and orphans,
which ``clean`` removes after an hour.  Whoever delivers an item holds an
exclusive ``flock`` on its Q file, as the C dma does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from dma.core.errors import CantCreateError, DmaError, IOFailure, SoftwareError
from dma.core.queuefile import (
    MAX_QUEUE_FILE_OCTETS,
    QueueItem,
    item_id_from_filename,
    padded,
    parse_queue_file,
    render_queue_file,
)

TYPE_CHECKING = False  # not typing's: submission does not import typing (issue 2)
if TYPE_CHECKING:
    from typing import BinaryIO

    from dma.core.mailq import QueueEntry

FILE_MODE = 0o660
DIR_MODE = 0o700
TEMP_PREFIX = "tmp_"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True, slots=True)
class SpoolProblem:
    """A Q file that could not be read or parsed; it is left in place for a human."""

    name: str
    error: DmaError


@dataclass(frozen=True, slots=True)
class SpoolScan:
    """Everything one pass over the spool directory found."""

    entries: tuple[QueueEntry, ...]
    problems: tuple[SpoolProblem, ...]


def _reason(error: OSError) -> str:
    """The errno text of ``error``, e.g. ``No space left on device``."""
    return error.strerror or os.strerror(error.errno or 0) or str(error)


def _random_hex(octets: int) -> str:
    """``octets`` random octets from the OS in hex, as secrets.token_hex (too heavy to import)."""
    return os.urandom(octets).hex()


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write every octet of ``data`` (at ``offset`` with pwrite when given)."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        if offset is None:
            done += os.write(fd, view[done:])
        else:
            done += os.pwrite(fd, view[done:], offset + done)


def _read_limited(fd: int) -> bytes:
    """Read a Q file from its start, one octet more than a Q file may hold at most."""
    chunks = []
    size = 0
    while size <= MAX_QUEUE_FILE_OCTETS:
        chunk = os.pread(fd, MAX_QUEUE_FILE_OCTETS + 1 - size, size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


class SpoolWriter:
    """A new message being written to ``tmp_<random>``; removed on exit unless committed."""

    def __init__(self, path: str, file: BinaryIO) -> None:
        self.path = path
        self.file = file
        self.committed = False

    def __enter__(self) -> SpoolWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the file and, unless committed, remove it."""
        try:
            self.file.close()
        except OSError:
            pass
        if not self.committed:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class Claim:
    """An item this process holds the exclusive lock on; the lock ends with the claim."""

    def __init__(
        self, spool: Spool, item_id: str, item: QueueItem, fd: int, times_ns: tuple[int, int]
    ) -> None:
        self._spool = spool
        self._item_id = item_id
        self._fd: int | None = fd
        self._times = times_ns  # (atime, mtime) as the claim found them
        self.item = item
        self.queue_path = spool.path("Q" + item_id)
        self.message_path = spool.path("M" + item_id)

    @property
    def arrival(self) -> float:
        """Epoch seconds the item arrived: the Q file's mtime."""
        return self._times[1] / 1e9

    def __enter__(self) -> Claim:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def release(self) -> None:
        """Drop the lock; another process may then claim the item."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _locked_fd(self) -> int:
        """The locked descriptor; using a released claim is a bug."""
        if self._fd is None:
            raise SoftwareError(
                f"queue item {self._item_id} is no longer claimed", hint="this is a bug"
            )
        return self._fd

    def update(self, item: QueueItem) -> None:
        """Rewrite the Q file in place, keeping the lock and the arrival time (its mtime).

        In place, not by rename: the lock belongs to this inode, and a new inode
        would let a second process claim the item while we still deliver it.
        The mtime is restored before the fsync so the fsync makes it durable.
        """
        fd = self._locked_fd()
        if item.id != self.item.id:
            raise SoftwareError(
                f"cannot rewrite queue item {self.item.id} as {item.id}", hint="this is a bug"
            )
        try:
            data = padded(render_queue_file(item), os.fstat(fd).st_size)
            _write_all(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.utime(fd, ns=self._times)
            os.fsync(fd)
        except OSError as error:
            raise IOFailure(
                f"cannot rewrite queue file {self.queue_path}: {_reason(error)}",
                hint="check the spool file system (space, errors)",
            ) from error
        self.item = item

    def delete(self, *, sync: bool = True) -> None:
        """Remove the item: M first, then Q (other recipients keep their M links).

        ``sync=False`` leaves the directory fsync to the caller, who batches many
        deletions into one (a crash before it can only repeat a delivery).
        """
        self._locked_fd()
        try:
            for path in (self.message_path, self.queue_path):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            if sync:
                self._spool.sync_directory()
        except OSError as error:
            raise IOFailure(
                f"cannot delete queue item {self._item_id} in {self._spool.directory}: "
                f"{_reason(error)}",
                hint="check the spool directory's owner and permissions",
            ) from error


class Spool:
    """One spool directory, shared with other dma processes and possibly the C dma."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def path(self, name: str) -> str:
        """The full path of ``name`` in the spool directory."""
        return os.path.join(self.directory, name)

    def prepare(self) -> None:
        """Create the spool directory (mode 0700) if it does not exist yet."""
        try:
            os.mkdir(self.directory, DIR_MODE)
        except FileExistsError:
            pass
        except FileNotFoundError:
            try:
                os.makedirs(self.directory, DIR_MODE, exist_ok=True)
            except OSError as error:
                raise self._cant("create the spool directory", error) from error
        except OSError as error:
            raise self._cant("create the spool directory", error) from error
        if not os.path.isdir(self.directory):
            raise CantCreateError(
                f"spool directory {self.directory} is not a directory",
                hint="remove it or set SPOOLDIR in dma.conf to a directory",
            )

    def _cant(self, what: str, error: OSError) -> DmaError:
        """CantCreateError (IOFailure for an I/O error) naming the spool and the errno text."""
        kind = IOFailure if error.errno == errno.EIO else CantCreateError
        return kind(
            f"cannot {what} in {self.directory}: {_reason(error)}",
            hint="check that the spool directory exists, is writable and has space",
        )

    def new_message_id(self) -> str:
        """A fresh message id: microseconds since the epoch, then 48 random bits, in hex.

        The time part keeps ids in arrival order; the random part keeps processes
        on other machines sharing the spool from ever picking the same id.
        """
        return f"{time.time_ns() // 1000:013x}{_random_hex(6)}"

    def _create_temp(self, prefix: str) -> tuple[str, int]:
        """Create ``<prefix><random>`` exclusively, mode 0660; return its path and fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        for _ in range(8):
            path = self.path(prefix + _random_hex(8))
            try:
                fd = os.open(path, flags, FILE_MODE)
            except FileExistsError:
                continue
            try:
                os.fchmod(fd, FILE_MODE)
            except OSError:
                os.close(fd)
                os.unlink(path)
                raise
            return path, fd
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), prefix)

    def begin(self) -> SpoolWriter:
        """Start a new message: a writer on a fresh temp file in the spool."""
        try:
            path, fd = self._create_temp(TEMP_PREFIX)
        except OSError as error:
            raise self._cant("create a message file", error) from error
        # Locked while it is written, as the C dma does: a slow writer (a cron job
        # printing once an hour) keeps an old mtime, and clean() must not take it.
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        return SpoolWriter(path, os.fdopen(fd, "wb"))

    def sync_directory(self) -> None:
        """fsync the directory so that links, renames and unlinks survive a crash."""
        fd = os.open(self.directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def commit(self, writer: SpoolWriter, message_id: str, items: Sequence[QueueItem]) -> None:
        """Queue the written message for ``items`` (ids ``<message_id>.<hex>``), crash safely.

        On any failure everything made so far is removed and CantCreateError (or
        IOFailure) is raised; the writer's temp file is left to the writer.
        """
        if writer.committed or writer.file.closed:
            raise SoftwareError(
                f"message file {writer.path} is already committed or closed", hint="this is a bug"
            )
        texts = self._check_items(message_id, items)
        made: list[str] = []
        try:
            writer.file.flush()
            os.fsync(writer.file.fileno())
            for item, text in zip(items, texts, strict=True):
                message_path = self.path("M" + item.id)
                os.link(writer.path, message_path)
                made.append(message_path)
                temp_path, fd = self._create_temp(TEMP_PREFIX + "q")
                made.append(temp_path)
                try:
                    _write_all(fd, text)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                # link, not rename: never replace a Q file that already exists
                queue_path = self.path("Q" + item.id)
                os.link(temp_path, queue_path)
                made.insert(0, queue_path)
                os.unlink(temp_path)
                made.remove(temp_path)
            self.sync_directory()
        except OSError as error:
            for path in made:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            try:
                self.sync_directory()
            except OSError:
                pass
            raise self._cant(f"queue message {message_id}", error) from error
        # Queued and durable: from here on a failure only leaves a temp file for clean().
        # No directory fsync after the unlink: if a crash undoes it, clean() removes
        # the stale temp file an hour later, and submission saves one fsync.
        writer.committed = True
        try:
            writer.file.close()
            os.unlink(writer.path)
        except OSError:
            pass

    @staticmethod
    def _check_items(message_id: str, items: Sequence[QueueItem]) -> list[bytes]:
        """Render every Q text up front, refusing ids that do not belong to ``message_id``."""
        if not items:
            raise SoftwareError(f"message {message_id} has no recipients to queue")
        seen: set[str] = set()
        texts = []
        for item in items:
            head, dot, tail = item.id.rpartition(".")
            if (
                head != message_id
                or not dot
                or item_id_from_filename("Q" + item.id) != item.id
                or not all(c in "0123456789abcdef" for c in tail)
                or not tail
                or item.id in seen
            ):
                raise SoftwareError(
                    f"queue item id {item.id!r} is not a new <{message_id}>.<hex> id",
                    hint="this is a bug",
                )
            seen.add(item.id)
            texts.append(render_queue_file(item))
        return texts

    def _open_queue_file(self, name: str, flags: int) -> int:
        """Open a Q file without following links and without blocking on odd files."""
        fd = os.open(self.path(name), flags | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file", name)
        return fd

    def _message_size(self, item_id: str) -> int | None:
        """Octets of ``M<id>``, or None when it does not exist (or is not a plain file)."""
        try:
            info = os.lstat(self.path("M" + item_id))
        except FileNotFoundError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def item_ids(self) -> list[str]:
        """The ids of every item with its Q and M files, oldest first (Q mtime).

        For a plain queue run: a stat per file instead of reading every Q file here
        and again when it is claimed (the claim parses it under its lock, and
        reports a damaged one).
        """
        try:
            entries = list(os.scandir(self.directory))
        except OSError as error:
            raise IOFailure(
                f"cannot list spool directory {self.directory}: {_reason(error)}",
                hint="check that it exists and is readable",
            ) from error
        names = {entry.name for entry in entries}
        found: list[tuple[float, str]] = []
        for entry in entries:
            item_id = item_id_from_filename(entry.name)
            if item_id is None or "M" + item_id not in names:
                continue  # not complete (yet): the C dma writes Q before linking M
            try:
                found.append((entry.stat(follow_symlinks=False).st_mtime, item_id))
            except FileNotFoundError:
                continue  # delivered while we looked
            except OSError:
                found.append((0.0, item_id))  # let the claim say what is wrong
        found.sort()
        return [item_id for _mtime, item_id in found]

    def scan(self, *, probe_locks: bool = True) -> SpoolScan:
        """Every complete item (Q parses, M exists), oldest first, and the Q files that failed.

        ``probe_locks`` asks each Q file for a shared lock to tell whether it is
        being delivered; that costs an open per item and, for an instant, makes a
        concurrent claim of that item fail, so queue runners pass False.
        """
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory))
        except OSError as error:
            raise IOFailure(
                f"cannot list spool directory {self.directory}: {_reason(error)}",
                hint="check that it exists and is readable",
            ) from error
        from dma.core.mailq import QueueEntry  # listing only: keeps submission light

        entries: list[QueueEntry] = []
        problems: list[SpoolProblem] = []
        for name in names:
            item_id = item_id_from_filename(name)
            if item_id is None:
                continue
            size = self._message_size(item_id)
            if size is None:
                continue  # not complete (yet): the C dma writes Q before linking M
            try:
                fd = self._open_queue_file(name, os.O_RDONLY)
            except FileNotFoundError:
                continue  # delivered while we looked
            except OSError as error:
                problems.append(SpoolProblem(name, self._read_error(name, error)))
                continue
            try:
                data = _read_limited(fd)
                mtime = os.fstat(fd).st_mtime
                locked = probe_locks and not self._try_lock(fd, fcntl.LOCK_SH)
            except OSError as error:
                problems.append(SpoolProblem(name, self._read_error(name, error)))
                continue
            finally:
                os.close(fd)
            try:
                item = parse_queue_file(data, self.path(name))
            except DmaError as error:
                problems.append(SpoolProblem(name, error))
                continue
            entries.append(QueueEntry(item=item, arrival=mtime, size=size, locked=locked))
        entries.sort(key=lambda e: (e.arrival, e.item.id))
        return SpoolScan(tuple(entries), tuple(problems))

    def _read_error(self, name: str, error: OSError) -> DmaError:
        return IOFailure(
            f"cannot read queue file {self.path(name)}: {_reason(error)}",
            hint="check the spool directory's owner and permissions",
        )

    @staticmethod
    def _try_lock(fd: int, mode: int) -> bool:
        """Take ``mode`` without waiting; True on success (a shared probe is dropped at once)."""
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if mode == fcntl.LOCK_SH:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return True

    def entries(self, *, probe_locks: bool = True) -> list[QueueEntry]:
        """Complete items, oldest first; malformed Q files are skipped (see ``problems``)."""
        return list(self.scan(probe_locks=probe_locks).entries)

    def problems(self) -> list[SpoolProblem]:
        """Q files (with their M) that cannot be read or parsed, for logging."""
        return list(self.scan(probe_locks=False).problems)

    def claim(self, item_id: str) -> Claim | None:
        """Lock ``item_id`` for delivery; None if another process holds it or it is gone.

        After the lock is taken the Q name must still be this file and M must
        still exist: otherwise whoever held the lock before us has finished it.
        A Q file that no longer parses raises DataError.
        """
        name = "Q" + item_id
        if item_id_from_filename(name) != item_id:
            raise SoftwareError(f"bad queue item id {item_id!r}", hint="this is a bug")
        try:
            fd = self._open_queue_file(name, os.O_RDWR)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._claim_error(item_id, error) from error
        try:
            if not self._try_lock(fd, fcntl.LOCK_EX):
                os.close(fd)
                return None
            held = os.fstat(fd)
            try:
                now_there = os.lstat(self.path(name))
            except FileNotFoundError:
                now_there = None
            if (
                now_there is None
                or (now_there.st_dev, now_there.st_ino) != (held.st_dev, held.st_ino)
                or self._message_size(item_id) is None
            ):
                os.close(fd)
                return None
            item = parse_queue_file(_read_limited(fd), self.path(name))
        except OSError as error:
            os.close(fd)
            raise self._claim_error(item_id, error) from error
        except BaseException:
            os.close(fd)
            raise
        return Claim(self, item_id, item, fd, (held.st_atime_ns, held.st_mtime_ns))

    def _claim_error(self, item_id: str, error: OSError) -> DmaError:
        return IOFailure(
            f"cannot acquire queue item {item_id} in {self.directory}: {_reason(error)}",
            hint="check the spool directory's owner and permissions",
        )

    def clean(self, now: float, grace: float = 3600.0) -> list[str]:
        """Remove what a crash left, older than ``grace`` seconds; return the names removed.

        That is ``tmp_*`` files, a Q without its M (never one that is locked) and
        an M without its Q.  Malformed Q files stay for a human to look at.
        """
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory))
        except OSError as error:
            raise IOFailure(
                f"cannot list spool directory {self.directory}: {_reason(error)}",
                hint="check that it exists and is readable",
            ) from error
        present = set(names)
        cutoff = now - grace
        removed: list[str] = []
        for name in names:
            if name.startswith(TEMP_PREFIX):
                if self._older(name, cutoff) and self._remove_unlocked_temp(name):
                    removed.append(name)
                continue
            elif name.startswith("M") and item_id_from_filename("Q" + name[1:]) == name[1:]:
                stale = "Q" + name[1:] not in present and self._older(name, cutoff)
                if stale and os.path.lexists(self.path("Q" + name[1:])):
                    stale = False  # queued since we listed
            elif item_id_from_filename(name) is not None:
                if "M" + name[1:] in present or not self._older(name, cutoff):
                    continue
                if self._remove_unlocked_orphan(name):
                    removed.append(name)
                continue
            else:
                continue
            if stale:
                try:
                    os.unlink(self.path(name))
                except FileNotFoundError:
                    continue
                removed.append(name)
        if removed:
            try:
                self.sync_directory()
            except OSError:
                pass
        return removed

    def _older(self, name: str, cutoff: float) -> bool:
        """True when ``name`` was last modified before ``cutoff`` (False if it is gone)."""
        try:
            return os.lstat(self.path(name)).st_mtime < cutoff
        except FileNotFoundError:
            return False

    def _remove_unlocked_temp(self, name: str) -> bool:
        """Remove a stale temp file unless a submission still holds its lock."""
        try:
            fd = os.open(self.path(name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            if not self._try_lock(fd, fcntl.LOCK_EX):
                return False
            os.unlink(self.path(name))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    def _remove_unlocked_orphan(self, name: str) -> bool:
        """Remove a Q whose M is missing, holding its lock so no deliverer owns it."""
        try:
            fd = os.open(self.path(name), os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            if not self._try_lock(fd, fcntl.LOCK_EX):
                return False
            held = os.fstat(fd)
            try:
                now_there = os.lstat(self.path(name))
            except FileNotFoundError:
                return False
            if (now_there.st_dev, now_there.st_ino) != (held.st_dev, held.st_ino):
                return False
            if os.path.lexists(self.path("M" + name[1:])):
                return False
            os.unlink(self.path(name))
            return True
        except OSError:
            return False
        finally:
            os.close(fd)
