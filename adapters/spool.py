"""The spool directory: crash-safe creation, listing, locking and cleaning of queue items (SPEC 4).

Layout and order are shared with the C dma (docs/design.md): a message is written
to ``tmp_<random>`` and fsynced; per recipient it is hard-linked to ``M<id>`` and
its Q text written to ``tmp_q<random>``, fsynced and put in place as ``Q<id>``;
then the directory is fsynced and the temp name dropped.  So a ``Q`` file exists
only when its ``M`` does, and a crash leaves at worst temp files and orphans,
which ``clean`` removes after an hour.  Whoever delivers an item holds an
exclusive ``flock`` on its Q file, as the C dma does.  An item found damaged (its
Q names another item or is no queue file, its Q or M is not a regular file) is
moved to ``SPOOLDIR/quarantine/`` (adapters/quarantine.py), never skipped in
silence, deleted or delivered as something else (SPEC 4).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from dma.core.errors import CantCreateError, DataError, DmaError, IOFailure, SoftwareError
from dma.core.queuefile import (
    MAX_QUEUE_FILE_OCTETS,
    QueueItem,
    item_id_from_filename,
    padded,
    parse_queue_item,
    render_queue_file,
)
from dma.core.values import frozen

TYPE_CHECKING = False  # not typing's: submission does not import typing (issue 2)
if TYPE_CHECKING:
    from typing import BinaryIO

    from dma.adapters.quarantine import Quarantine, Quarantined
    from dma.core.mailq import QueueEntry

FILE_MODE = 0o660
"""Q, M and temp files of a spool of one user's (embedded mode, SPEC 8.1)."""
DIR_MODE = 0o700
TEMP_PREFIX = "tmp_"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@frozen
class SpoolProblem:
    """A Q file that could not be read, or a damaged item that could not be moved aside."""

    name: str
    error: DmaError


@frozen
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
        """Close the file and, unless committed, remove it.

        Never raises: this runs after a commit too (the long-line path commits a second
        temp file), when an error would tell the caller that nothing was queued; a temp
        file left behind is removed by the queue run's clean-up.
        """
        try:
            self.file.close()
        except OSError:
            pass
        if not self.committed:
            try:
                os.unlink(self.path)
            except OSError:
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


class _Made:
    """What a commit made so far, to undo on failure (Q files first: never a lone Q)."""

    def __init__(self) -> None:
        self.queues: list[str] = []
        self.messages: list[str] = []
        self.temps: set[str] = set()

    def undo(self) -> None:
        for path in [*self.queues, *self.temps, *self.messages]:
            try:
                os.unlink(path)
            except OSError:
                pass


def _copy_file(source: str, out_fd: int) -> None:
    """Copy the file at ``source`` into ``out_fd`` (a fresh file) in bounded chunks."""
    in_fd = os.open(source, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
    try:
        while chunk := os.read(in_fd, 1 << 20):
            _write_all(out_fd, chunk)
    finally:
        os.close(in_fd)


class _MessageSources:
    """The files one commit makes its M hard links from: the written message, then copies.

    A file system caps the links of one inode (ext4 65 000, ext2 32 000, others
    fewer or more).  When a link is refused with EMLINK, or ``max_links`` M files
    already share the current file, the message is copied once to a new temp file,
    locked like the first one and fsynced before its first link, and the links go
    on from the copy.  Copies are removed with ``close``.
    """

    def __init__(self, spool: Spool, path: str, max_links: int | None) -> None:
        self._spool = spool
        self._original = path
        self._max = max_links
        self._links = 0
        self._copies: list[tuple[str, int]] = []
        self.path = path

    def link(self, target: str) -> None:
        """Make ``target`` a hard link of the message."""
        if self._max is not None and self._links >= self._max:
            self._start_copy()
        try:
            os.link(self.path, target)
        except OSError as error:
            if error.errno != errno.EMLINK or self._links == 0:
                raise
            self._start_copy()
            os.link(self.path, target)
        self._links += 1

    def _start_copy(self) -> None:
        path, fd = self._spool._create_temp(TEMP_PREFIX)
        self._copies.append((path, fd))
        try:  # as begin(): clean() leaves a locked temp file alone
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass
        _copy_file(self._original, fd)
        os.fsync(fd)
        self.path = path
        self._links = 0

    @property
    def copies(self) -> int:
        """How many copies of the message this commit needed."""
        return len(self._copies)

    def close(self) -> None:
        """Drop the copies' temp names (their M links stay) and their locks."""
        for path, fd in self._copies:
            try:
                os.close(fd)
            except OSError:
                pass
            try:
                os.unlink(path)
            except OSError:
                pass
        self._copies = []


class Spool:
    """One spool directory, shared with other dma processes and possibly the C dma.

    ``on_quarantine`` hears of each damaged item that ``scan`` or ``clean`` moves to
    ``SPOOLDIR/quarantine/`` (to log it, once); ``claim`` raises DamagedItem instead.
    """

    def __init__(
        self, directory: str, on_quarantine: Callable[[Quarantined], None] | None = None
    ) -> None:
        self.directory = directory
        self.on_quarantine = on_quarantine
        self._file_mode: int | None = None

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

    def file_mode(self) -> int:
        """The mode of the files this spool gets: in a set-gid spool directory whose
        group may not write it (system mode, SPEC 8.2: root:DELIVERY_GROUP,
        ``SPOOL_MODE``) ``SPOOL_FILE_MODE``, 0640, so that the delivery group reads
        what root writes and writes nothing; else ``FILE_MODE``, 0660 (a C dma spool,
        root:mail 2770 or 0775, whose group writes the Q files).  Looked up once."""
        if self._file_mode is None:
            from dma.core.system_layout import SPOOL_FILE_MODE

            try:
                mode = os.stat(self.directory).st_mode
            except OSError:
                mode = 0  # creating the file then says what is wrong
            read_only_group = bool(mode & stat.S_ISGID) and not mode & stat.S_IWGRP
            self._file_mode = SPOOL_FILE_MODE if read_only_group else FILE_MODE
        return self._file_mode

    def _create_temp(self, prefix: str) -> tuple[str, int]:
        """Create ``<prefix><random>`` exclusively (``file_mode``); return its path and fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        mode = self.file_mode()
        for _ in range(8):
            path = self.path(prefix + _random_hex(8))
            try:
                fd = os.open(path, flags, mode)
            except FileExistsError:
                continue
            try:
                os.fchmod(fd, mode)
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

    def commit(
        self,
        writer: SpoolWriter,
        message_id: str,
        items: Sequence[QueueItem],
        *,
        max_links: int | None = None,
    ) -> None:
        """Queue the written message for ``items`` (ids ``<message_id>.<hex>``), crash safely.

        Per item: its M is a hard link of a fsynced file (the written message, or a
        copy of it once the file system refuses more links, or after ``max_links`` of
        them: see ``_MessageSources``), then its Q text is written to a temp file,
        fsynced and linked into place.  The cost is linear in the number of items
        (100 000 recipients: 16 s on a RAM-backed ext4, the rest is fsync).  On any
        failure everything made so far is removed and CantCreateError (or IOFailure)
        is raised; the writer's temp file is left to the writer.
        """
        if writer.committed or writer.file.closed:
            raise SoftwareError(
                f"message file {writer.path} is already committed or closed", hint="this is a bug"
            )
        if max_links is not None and max_links < 1:
            raise SoftwareError(f"max_links must be positive, not {max_links}",
                                hint="this is a bug")
        texts = self._check_items(message_id, items)
        made = _Made()
        sources = _MessageSources(self, writer.path, max_links)
        try:
            writer.file.flush()
            os.fsync(writer.file.fileno())
            for item, text in zip(items, texts, strict=True):
                message_path = self.path("M" + item.id)
                sources.link(message_path)
                made.messages.append(message_path)
                temp_path = self._write_queue_text(text, made)
                # link, not rename: never replace a Q file that already exists
                queue_path = self.path("Q" + item.id)
                os.link(temp_path, queue_path)
                made.queues.append(queue_path)
                os.unlink(temp_path)
                made.temps.discard(temp_path)
            self.sync_directory()
        except BaseException as error:
            made.undo()
            sources.close()
            try:
                self.sync_directory()
            except OSError:
                pass
            if isinstance(error, OSError):
                raise self._cant(f"queue message {message_id}", error) from error
            raise
        # Queued and durable: from here on a failure only leaves a temp file for clean().
        # No directory fsync after the unlink: if a crash undoes it, clean() removes
        # the stale temp file an hour later, and submission saves one fsync.
        writer.committed = True
        try:
            writer.file.close()
            os.unlink(writer.path)
        except OSError:
            pass
        sources.close()

    def _write_queue_text(self, text: bytes, made: _Made) -> str:
        """Write ``text`` to a new ``tmp_q`` file and fsync it; return its path."""
        path, fd = self._create_temp(TEMP_PREFIX + "q")
        made.temps.add(path)
        try:
            _write_all(fd, text)
            os.fsync(fd)
        finally:
            os.close(fd)
        return path

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

    def _message_state(self, item_id: str) -> int | str | None:
        """Octets of ``M<id>`` when it is a regular file, what it is instead (``a FIFO``...)
        when it is not, None when it does not exist."""
        from dma.adapters.file_kinds import file_kind

        try:
            info = os.lstat(self.path("M" + item_id))
        except FileNotFoundError:
            return None
        kind = file_kind(info.st_mode)
        return info.st_size if kind is None else kind

    def _judge(
        self, item_id: str, data: bytes, message: int | str
    ) -> tuple[QueueItem | None, str | None]:
        """The item a Q file's ``data`` holds, or why the item is damaged (SPEC 4)."""
        name = "Q" + item_id
        try:
            item = parse_queue_item(data, item_id, self.path(name))
        except DmaError as error:
            where = f" at {os.path.basename(error.where)}" if error.where else ""
            return None, f"{error.message}{where}"
        if isinstance(message, str):
            return None, f"its message file M{item_id} is {message}"
        return item, None

    def quarantine(self) -> Quarantine:
        """``SPOOLDIR/quarantine/``: list, release and delete damaged items."""
        from dma.adapters.quarantine import Quarantine

        return Quarantine(self.directory)

    def _quarantine(self, item_id: str, reason: str) -> Quarantined | None:
        """Move a damaged item aside (the caller holds its Q lock when Q is a regular file).

        None when its files vanished meanwhile; IOFailure when it cannot be moved.
        """
        quarantine = self.quarantine()
        try:
            return quarantine.move(item_id, reason)
        except OSError as error:
            raise IOFailure(
                f"queue item {item_id} is damaged ({reason}) and cannot be moved to "
                f"{quarantine.directory}: {_reason(error)}",
                hint="check the spool directory's owner and permissions",
            ) from error

    def _set_aside(self, item_id: str, reason: str) -> SpoolProblem | None:
        """Quarantine what a listing or clean-up found damaged and tell ``on_quarantine``."""
        try:
            moved = self._quarantine(item_id, reason)
        except DmaError as error:
            return SpoolProblem("Q" + item_id, error)
        if moved is not None and self.on_quarantine is not None:
            self.on_quarantine(moved)
        return None

    def _queue_files(self, messages: set[str] | None = None) -> list[tuple[float, str]]:
        """One pass over the directory: (mtime, id) of every Q file, oldest first (ties by
        id); the ids that have an M file go into ``messages`` when it is given.

        Only these pairs are kept, not the directory's entries: 200 000 ``DirEntry``
        objects with their paths and stat results took ~115 MB at 100 000 items.
        """
        queued: list[tuple[float, str]] = []
        try:
            with os.scandir(self.directory) as listing:
                for entry in listing:
                    name = entry.name
                    if name.startswith("M"):
                        if messages is not None:
                            messages.add(name[1:])
                        continue
                    item_id = item_id_from_filename(name)
                    if item_id is None:
                        continue
                    try:
                        queued.append((entry.stat(follow_symlinks=False).st_mtime, item_id))
                    except FileNotFoundError:
                        continue  # delivered while we looked
                    except OSError:
                        queued.append((0.0, item_id))  # the claim or the look says why
        except OSError as error:
            raise IOFailure(
                f"cannot list spool directory {self.directory}: {_reason(error)}",
                hint="check that it exists and is readable",
            ) from error
        queued.sort()
        return queued

    def item_ids(self) -> list[str]:
        """The ids of every item with its Q and M files, oldest first (Q mtime).

        For a plain queue run: a stat per file instead of reading every Q file here
        and again when it is claimed (the claim parses it under its lock, and
        reports a damaged one).
        """
        messages: set[str] = set()
        queued = self._queue_files(messages)
        return [item_id for _mtime, item_id in queued if item_id in messages]

    def listing(self, *, probe_locks: bool = True) -> Iterator[QueueEntry | SpoolProblem]:
        """``scan``'s findings one at a time, oldest first, each Q file read when it is
        asked for: a listing that writes each item as it comes holds no more than the
        order of the Q files.  ``probe_locks`` and damaged items: as for ``scan``."""
        for _mtime, item_id in self._queue_files():
            found = self._look("Q" + item_id, item_id, probe_locks=probe_locks)
            if found is not None:
                yield found

    def scan(self, *, probe_locks: bool = True) -> SpoolScan:
        """Every complete item (Q parses, M exists), oldest first, and what could not be read.

        A damaged item is moved to the quarantine (see ``on_quarantine``), judged
        again under its Q file's lock first: a listing must not take a Q file that
        its deliverer is rewriting for damaged.  ``probe_locks`` asks each Q file
        for a shared lock to tell whether it is being delivered; that costs an open
        per item and, for an instant, makes a concurrent claim of that item fail, so
        queue runners pass False.
        """
        from dma.core.mailq import QueueEntry  # listing only: keeps submission light

        entries: list[QueueEntry] = []
        problems: list[SpoolProblem] = []
        for found in self.listing(probe_locks=probe_locks):
            if isinstance(found, QueueEntry):
                entries.append(found)
            else:
                problems.append(found)
        entries.sort(key=lambda e: (e.arrival, e.item.id))
        return SpoolScan(tuple(entries), tuple(problems))

    def _look(self, name: str, item_id: str, *, probe_locks: bool
              ) -> QueueEntry | SpoolProblem | None:
        """One Q file of a listing: its entry, a problem, or None (incomplete, gone, or
        damaged and moved aside)."""
        from dma.adapters.file_kinds import file_kind
        from dma.core.mailq import QueueEntry

        message = self._message_state(item_id)
        if message is None:
            return None  # not complete (yet): the C dma writes Q before linking M
        try:
            info = os.lstat(self.path(name))
        except FileNotFoundError:
            return None  # delivered while we looked
        except OSError as error:
            return SpoolProblem(name, self._read_error(name, error))
        kind = file_kind(info.st_mode)
        if kind is not None:
            return self._set_aside(item_id, f"its queue file {name} is {kind}")
        try:
            fd = self._open_queue_file(name, os.O_RDONLY)
        except FileNotFoundError:
            return None
        except OSError as error:
            return SpoolProblem(name, self._read_error(name, error))
        try:
            item, reason = self._judge(item_id, _read_limited(fd), message)
            if reason is not None:
                return self._set_aside_locked(name, item_id, fd)
            assert item is not None and isinstance(message, int)
            mtime = os.fstat(fd).st_mtime
            locked = probe_locks and not self._try_lock(fd, fcntl.LOCK_SH)
        except OSError as error:
            return SpoolProblem(name, self._read_error(name, error))
        finally:
            os.close(fd)
        return QueueEntry(item=item, arrival=mtime, size=message, locked=locked)

    def _set_aside_locked(self, name: str, item_id: str, fd: int) -> SpoolProblem | None:
        """Judge a Q file that read as damaged again under its exclusive lock; move it aside
        if it still is.  An item someone holds is left to them."""
        if not self._try_lock(fd, fcntl.LOCK_EX):
            return SpoolProblem(name, DataError(
                f"queue item {item_id} reads as damaged while it is being delivered",
                where=self.path(name), hint="the next queue run looks at it again",
            ))
        held = os.fstat(fd)
        try:
            now_there = os.lstat(self.path(name))
        except FileNotFoundError:
            return None
        message = self._message_state(item_id)
        if (now_there.st_dev, now_there.st_ino) != (held.st_dev, held.st_ino) or message is None:
            return None  # finished or replaced meanwhile
        _item, reason = self._judge(item_id, _read_limited(fd), message)
        if reason is None:
            return None  # it was being rewritten; the next listing shows it
        return self._set_aside(item_id, reason)

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
        """Complete items, oldest first; damaged ones go to the quarantine (see ``scan``)."""
        return list(self.scan(probe_locks=probe_locks).entries)

    def problems(self) -> list[SpoolProblem]:
        """Q files (with their M) that cannot be read, or are damaged and could not be
        moved aside, for logging."""
        return list(self.scan(probe_locks=False).problems)

    def claim(self, item_id: str) -> Claim | None:
        """Lock ``item_id`` for delivery; None if another process holds it or it is gone.

        After the lock is taken the Q name must still be this file and M must
        still exist: otherwise whoever held the lock before us has finished it.
        A damaged item (SPEC 4: its Q does not parse or names another item, its Q
        or M is not a regular file) is moved to the quarantine under the lock and
        DamagedItem (a DataError) is raised; IOFailure when it cannot be moved.
        """
        from dma.adapters.file_kinds import file_kind
        from dma.adapters.quarantine import DamagedItem

        name = "Q" + item_id
        if item_id_from_filename(name) != item_id:
            raise SoftwareError(f"bad queue item id {item_id!r}", hint="this is a bug")
        try:
            kind = file_kind(os.lstat(self.path(name)).st_mode)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise self._claim_error(item_id, error) from error
        if kind is not None:
            if self._message_state(item_id) is None:
                return None  # not an item: clean() looks at old lone files
            moved = self._quarantine(item_id, f"its queue file {name} is {kind}")
            if moved is None:
                return None
            raise DamagedItem(moved)
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
            message = self._message_state(item_id)
            if (
                now_there is None
                or (now_there.st_dev, now_there.st_ino) != (held.st_dev, held.st_ino)
                or message is None
            ):
                os.close(fd)
                return None
            item, reason = self._judge(item_id, _read_limited(fd), message)
            moved = None if reason is None else self._quarantine(item_id, reason)
        except OSError as error:
            os.close(fd)
            raise self._claim_error(item_id, error) from error
        except BaseException:
            os.close(fd)
            raise
        if item is None:  # damaged: moved aside under the lock, which ends here
            os.close(fd)
            if moved is None:
                return None
            raise DamagedItem(moved)
        return Claim(self, item_id, item, fd, (held.st_atime_ns, held.st_mtime_ns))

    def _claim_error(self, item_id: str, error: OSError) -> DmaError:
        return IOFailure(
            f"cannot acquire queue item {item_id} in {self.directory}: {_reason(error)}",
            hint="check the spool directory's owner and permissions",
        )

    def clean(self, now: float, grace: float = 3600.0) -> list[str]:
        """Remove what a crash left, older than ``grace`` seconds; return the names removed.

        That is ``tmp_*`` files, a Q without its M (never one that is locked) and
        an M without its Q.  Such a lone file that is not a regular file (a
        directory, a FIFO, a link) is moved to the quarantine instead, and
        ``on_quarantine`` hears of it.
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
            elif name.startswith("M") and item_id_from_filename("Q" + name[1:]) == name[1:]:
                lone = "Q" + name[1:] not in present and self._older(name, cutoff)
                if lone and self._remove_lone_message(name):
                    removed.append(name)
            elif item_id_from_filename(name) is not None:
                if "M" + name[1:] in present or not self._older(name, cutoff):
                    continue
                kind = self._odd_kind(name)
                if kind is not None:
                    self._set_aside(name[1:], f"its queue file {name} is {kind} "
                                    "and it has no message file")
                elif self._remove_unlocked_orphan(name):
                    removed.append(name)
        if removed:
            try:
                self.sync_directory()
            except OSError:
                pass
        return removed

    def _odd_kind(self, name: str) -> str | None:
        """What ``name`` is when it is there and not a regular file."""
        from dma.adapters.file_kinds import file_kind

        try:
            return file_kind(os.lstat(self.path(name)).st_mode)
        except OSError:
            return None

    def _remove_lone_message(self, name: str) -> bool:
        """Remove an old M that no Q names; one that is not a regular file goes to the
        quarantine instead."""
        if os.path.lexists(self.path("Q" + name[1:])):
            return False  # queued since we listed
        kind = self._odd_kind(name)
        if kind is not None:
            self._set_aside(name[1:], f"its message file {name} is {kind} "
                            "and no queue file names it")
            return False
        try:
            os.unlink(self.path(name))
        except OSError:
            return False
        return True

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
