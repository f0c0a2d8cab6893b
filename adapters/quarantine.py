"""``SPOOLDIR/quarantine/``: damaged queue items moved aside, listed, released, deleted (SPEC 4).

An item is damaged when its Q file's ``ID:`` names another item (the file name is
the item's identity), when its Q or M file is not a regular file (a symbolic link,
FIFO, directory, device, socket), or when its Q file cannot be read as a queue file
(a line without ``:``, a NUL octet, a missing ``ID``, ``Sender`` or ``Recipient``,
more than 64 KiB).  Octets that are not UTF-8 are no damage: the C dma writes them
(a Latin-1 sender), and delivery carries or refuses them item by item.

Each damaged item gets a directory of its own, ``quarantine/<id>`` (``<id>-2``,
``<id>-3``... when that name is taken by another item), that holds its ``Q<id>`` and
``M<id>`` under their own names and a ``reason`` file (``Item:``, ``Reason:`` and
``Arrival:`` lines).  Moving never follows a link and never leaves the spool's file
system: regular files are hard-linked into the item's directory and only then
unlinked from the spool, so a crash leaves the item in both places and the next look
at it finishes the move; other files are renamed.  Whoever moves, releases or
deletes holds an exclusive ``flock`` on the quarantine directory, and a move of an
item with a regular Q file happens under that Q file's lock too.

A maildrop file that the runner refuses (SPEC 8.2: a link, a FIFO, a file with more
than one link, too large, malformed) comes here too, by rename (``move_foreign``),
as ``maildrop-<its name>/M<that name>`` beside a reason file: listed like a damaged
item, deleted with ``-Qd``, never released (it has no queue file) and never opened.

The C dma reads only the spool's names that start with ``Q`` (``spool.c:load_queue``),
so it never looks into the directory.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from dma.adapters.file_kinds import file_kind
from dma.core.errors import CantCreateError, DataError, IOFailure, NoInputError, TempFailure
from dma.core.queuefile import (
    MAX_QUEUE_FILE_OCTETS,
    QueueItem,
    item_id_from_filename,
    one_line_error,
    parse_queue_file,
    parse_queue_item,
)
from dma.core.values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.core.mailq import QuarantinedEntry

QUARANTINE_DIR = "quarantine"
REASON_FILE = "reason"
DIR_MODE = 0o700
FILE_MODE = 0o660
MAX_REASON_OCTETS = 4096
_MAX_NAMES = 100  # <id>, <id>-2 ... <id>-100
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_RELEASE_HINT = "dma -Qr {name} puts it back after a fix, dma -Qd {name} deletes it"


@frozen
class Quarantined:
    """A damaged item that was just moved aside: for the one log line that says so."""

    item_id: str
    name: str  # its directory in the quarantine, the word -Qr and -Qd take
    reason: str
    path: str  # that directory's full path


class DamagedItem(DataError):
    """A claimed item turned out damaged and is now in the quarantine (``moved``)."""

    def __init__(self, moved: Quarantined) -> None:
        super().__init__(
            f"queue item {moved.item_id} is damaged: {moved.reason}; moved to {moved.path}",
            hint=_RELEASE_HINT.format(name=moved.name),
        )
        self.moved = moved


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same(a: os.stat_result | None, b: os.stat_result | None) -> bool:
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _open_dir(path: str, dir_fd: int | None = None) -> int:
    """A directory's descriptor, refusing a symbolic link in its place."""
    return os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)


def _pread_all(fd: int, limit: int) -> bytes:
    """Up to ``limit`` octets from the start of an open file."""
    chunks = []
    size = 0
    while size < limit:
        chunk = os.pread(fd, limit - size, size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _read_bounded(name: str, dir_fd: int, limit: int) -> bytes | None:
    """Up to ``limit`` octets of a regular file (no link followed); None if it is not one."""
    try:
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _pread_all(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


def _reason_fields(data: bytes | None) -> dict[str, str]:
    """The ``Key: value`` lines of a reason file; a damaged one gives what it can."""
    fields: dict[str, str] = {}
    for line in (data or b"").decode("utf-8", errors="replace").splitlines():
        key, colon, value = line.partition(":")
        if colon:
            fields[key.strip()] = value.strip()
    return fields


def _render_reason(item_id: str, reason: str, arrival_ns: int | None) -> bytes:
    lines = [f"Item: {item_id}", f"Reason: {one_line_error(reason)}"]
    if arrival_ns is not None:
        lines.append(f"Arrival: {arrival_ns}")
    return "".join(line + "\n" for line in lines).encode("utf-8", errors="replace")


class Quarantine:
    """The quarantine directory of one spool."""

    def __init__(self, spool_directory: str) -> None:
        self.spool_directory = spool_directory
        self.directory = os.path.join(spool_directory, QUARANTINE_DIR)

    # --- moving in -------------------------------------------------------------------------

    def move(self, item_id: str, reason: str) -> Quarantined | None:
        """Move the item's Q and M files (those that exist) into a directory of its own.

        The caller holds the Q file's lock when it is a regular file.  Returns None
        when neither file is there any more (another process moved or finished it).
        Raises OSError when the move cannot be made; the item then stays in place.
        """
        spool_fd = _open_dir(self.spool_directory)
        try:
            top = self._open_top(create=True)
            try:
                fcntl.flock(top, fcntl.LOCK_EX)
                files = {f"{p}{item_id}": _lstat_at(f"{p}{item_id}", spool_fd) for p in "QM"}
                present = {name: info for name, info in files.items() if info is not None}
                if not present:
                    return None
                name, item_fd = self._item_directory(top, item_id, present)
                try:
                    self._write_reason(item_fd, item_id, reason, files[f"Q{item_id}"])
                    for file_name in self._move_order(item_id, present):
                        self._place(file_name, present[file_name], spool_fd, item_fd)
                    os.fsync(item_fd)
                finally:
                    os.close(item_fd)
                os.fsync(top)
            finally:
                os.close(top)  # drops the flock
            for file_name in (f"Q{item_id}", f"M{item_id}"):  # Q first: never a lone Q
                info = present.get(file_name)
                linked = info is not None and stat.S_ISREG(info.st_mode)
                if linked and _same(_lstat_at(file_name, spool_fd), info):
                    os.unlink(file_name, dir_fd=spool_fd)
            os.fsync(spool_fd)
        finally:
            os.close(spool_fd)
        return Quarantined(item_id, name, reason, os.path.join(self.directory, name))

    def move_foreign(self, source_fd: int, name: str, info: os.stat_result, label: str,
                     reason: str) -> Quarantined | None:
        """Move a file that is no queue item (a refused maildrop file) aside, by rename.

        ``name`` is in the directory ``source_fd`` on the spool's file system; ``info``
        is what lstat (or fstat) saw there, and the move happens only while the name
        still holds that file (None otherwise: whoever changed it is looked at next
        time).  It becomes ``M<label>`` in ``quarantine/<label>`` (``<label>-2``...
        when taken), beside a reason file, so mailq lists it and ``dma -Qd`` deletes
        it; ``-Qr`` refuses it, there being no queue file.  Whatever the file is (a
        link, a FIFO, a hard link to a file elsewhere, a directory), it is renamed,
        never opened or followed.  Raises OSError when it cannot be moved; it stays.
        """
        top = self._open_top(create=True)
        try:
            fcntl.flock(top, fcntl.LOCK_EX)
            if not _same(_lstat_at(name, source_fd), info):
                return None
            file_name = f"M{label}"
            directory, item_fd = self._item_directory(top, label, {file_name: info})
            try:
                self._write_reason(item_fd, label, reason, info)
                if not _same(_lstat_at(file_name, item_fd), info):
                    os.rename(name, file_name, src_dir_fd=source_fd, dst_dir_fd=item_fd)
                os.fsync(item_fd)
            finally:
                os.close(item_fd)
            os.fsync(top)
        finally:
            os.close(top)
        os.fsync(source_fd)
        return Quarantined(label, directory, reason, os.path.join(self.directory, directory))

    def _open_top(self, *, create: bool) -> int:
        """The quarantine directory (mode 0700), made when ``create`` and missing."""
        if create:
            try:
                os.mkdir(self.directory, DIR_MODE)
            except FileExistsError:
                pass
        return _open_dir(self.directory)

    @staticmethod
    def _move_order(item_id: str, present: dict[str, os.stat_result]) -> list[str]:
        """Regular files first (hard links: the item stays whole in the spool until they
        are made), then the others by rename, M before Q."""
        regular = [n for n in (f"Q{item_id}", f"M{item_id}")
                   if n in present and stat.S_ISREG(present[n].st_mode)]
        others = [n for n in (f"M{item_id}", f"Q{item_id}")
                  if n in present and not stat.S_ISREG(present[n].st_mode)]
        return regular + others

    def _item_directory(
        self, top: int, item_id: str, present: dict[str, os.stat_result]
    ) -> tuple[str, int]:
        """A new directory for the item, or one whose files do not clash with its own.

        An interrupted move left a directory holding some of the item's files (the
        very inodes, for hard links) and lacking the others: it is taken again.  A
        directory holding another file under one of the item's names belongs to an
        earlier item of the same id, and one whose reason names another item (``abc-2``
        made for a second ``abc``) is that item's: the next name is tried.
        """
        for number in range(1, _MAX_NAMES + 1):
            name = item_id if number == 1 else f"{item_id}-{number}"
            try:
                os.mkdir(name, DIR_MODE, dir_fd=top)
            except FileExistsError:
                pass
            try:
                fd = _open_dir(name, top)
            except OSError:
                continue  # a file or a link where a directory should be: not ours
            owner = _reason_fields(
                _read_bounded(REASON_FILE, fd, MAX_REASON_OCTETS)).get("Item", item_id)
            if owner == item_id and all(
                    _lstat_at(n, fd) is None or _same(_lstat_at(n, fd), info)
                    for n, info in present.items()):
                return name, fd
            os.close(fd)
        raise OSError(errno.EEXIST, f"{_MAX_NAMES} quarantined items are named {item_id}")

    @staticmethod
    def _write_reason(
        item_fd: int, item_id: str, reason: str, queue_info: os.stat_result | None
    ) -> None:
        """Write the reason file once; an interrupted move keeps the first reason."""
        arrival = queue_info.st_mtime_ns if queue_info is not None else None
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        try:
            fd = os.open(REASON_FILE, flags, FILE_MODE, dir_fd=item_fd)
        except FileExistsError:
            return
        try:
            data = _render_reason(item_id, reason, arrival)
            done = 0
            while done < len(data):
                done += os.write(fd, data[done:])
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def _place(name: str, info: os.stat_result, spool_fd: int, item_fd: int) -> None:
        """Put one file into the item's directory: a hard link, or a rename for odd files."""
        there = _lstat_at(name, item_fd)
        if _same(there, info):
            return  # an interrupted move got this far
        if there is not None:
            raise OSError(errno.EEXIST, "the quarantine already holds another file", name)
        if stat.S_ISREG(info.st_mode):
            os.link(name, name, src_dir_fd=spool_fd, dst_dir_fd=item_fd, follow_symlinks=False)
        else:
            os.rename(name, name, src_dir_fd=spool_fd, dst_dir_fd=item_fd)

    # --- listing -----------------------------------------------------------------------------

    def entries(self) -> list[QuarantinedEntry]:
        """Every quarantined item, with what its files still tell."""
        try:
            top = self._open_top(create=False)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise IOFailure(
                f"cannot open the quarantine {self.directory}: {error.strerror}",
                hint="check that it is a directory that dma can read",
            ) from error
        try:
            listed = []
            for entry in sorted(os.scandir(top), key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    found = self._entry(top, entry.name)
                    if found is not None:
                        listed.append(found)
            return listed
        finally:
            os.close(top)

    def _entry(self, top: int, name: str) -> QuarantinedEntry | None:
        from dma.core.mailq import QuarantinedEntry

        try:
            fd = _open_dir(name, top)
        except OSError:
            return None
        try:
            item_id = self._item_id(fd, name)
            if item_id is None:
                return None  # a directory left after a release: nothing in it to list
            fields = _reason_fields(_read_bounded(REASON_FILE, fd, MAX_REASON_OCTETS))
            reason_info = _lstat_at(REASON_FILE, fd) or os.fstat(fd)
            queue_info = _lstat_at(f"Q{item_id}", fd)
            message_info = _lstat_at(f"M{item_id}", fd)
            item: QueueItem | None = None
            if queue_info is not None and stat.S_ISREG(queue_info.st_mode):
                data = _read_bounded(f"Q{item_id}", fd, MAX_QUEUE_FILE_OCTETS + 1)
                try:
                    item = parse_queue_file(data or b"", f"Q{item_id}")
                except DataError:
                    item = None
            arrival = _arrival(fields, queue_info)
            size = message_info.st_size if message_info is not None and stat.S_ISREG(
                message_info.st_mode) else None
            return QuarantinedEntry(
                name=name, item_id=item_id,
                reason=fields.get("Reason") or "no reason recorded",
                since=reason_info.st_mtime, item=item, arrival=arrival, size=size,
            )
        finally:
            os.close(fd)

    @staticmethod
    def _item_id(item_fd: int, name: str) -> str | None:
        """The id of the item in a quarantine directory: its reason file, else its files."""
        fields = _reason_fields(_read_bounded(REASON_FILE, item_fd, MAX_REASON_OCTETS))
        candidates = [fields.get("Item", ""), name]
        for entry in os.scandir(item_fd):
            if entry.name[:1] in ("Q", "M"):
                candidates.append(entry.name[1:])
        for candidate in candidates:
            if item_id_from_filename("Q" + candidate) != candidate:
                continue
            if any(_lstat_at(f"{p}{candidate}", item_fd) is not None for p in "QM"):
                return candidate
        return None

    # --- releasing and deleting ----------------------------------------------------------------

    def release(self, name: str) -> str:
        """Put a fixed item back into the queue; return its id.

        The item must now be whole: a regular Q file that parses and names its own
        item, a regular M file.  Otherwise DataError says what is still wrong and
        nothing moves.  The arrival time recorded when it was moved aside is put
        back on the Q file, so a fix does not restart the item's queue lifetime.
        """
        top, item_fd = self._open_item(name)
        try:
            item_id = self._item_id(item_fd, name)
            if item_id is None:
                raise NoInputError(f"quarantined item {name} holds no queue files",
                                   hint="delete it with dma -Qd " + name)
            queue_fd = self._check_whole(item_fd, name, item_id)
            try:
                self._restore_arrival(item_fd, queue_fd)
                os.fsync(queue_fd)
                self._link_back(item_fd, item_id)
                for file_name in (REASON_FILE, f"Q{item_id}", f"M{item_id}"):
                    try:
                        os.unlink(file_name, dir_fd=item_fd)
                    except FileNotFoundError:
                        pass
            finally:
                os.close(queue_fd)
            self._remove_directory(top, name)
            return item_id
        except OSError as error:
            raise IOFailure(
                f"cannot release quarantined item {name} in {self.directory}: {error.strerror}",
                hint="check the spool's owner, permissions and free space",
            ) from error
        finally:
            os.close(item_fd)
            os.close(top)

    def delete(self, name: str) -> str:
        """Remove a quarantined item and everything in its directory; return its id."""
        import shutil

        top, item_fd = self._open_item(name)
        try:
            item_id = self._item_id(item_fd, name) or name
            for entry in list(os.scandir(item_fd)):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.name, dir_fd=item_fd)
                else:
                    os.unlink(entry.name, dir_fd=item_fd)
            self._remove_directory(top, name)
            return item_id
        except OSError as error:
            raise IOFailure(
                f"cannot delete quarantined item {name} in {self.directory}: {error.strerror}",
                hint="check the quarantine directory's owner and permissions",
            ) from error
        finally:
            os.close(item_fd)
            os.close(top)

    def _open_item(self, name: str) -> tuple[int, int]:
        """The locked quarantine directory and the item's directory in it."""
        if item_id_from_filename("Q" + name) != name:
            raise NoInputError(f"no quarantined item {name!r}", hint="list them with mailq")
        try:
            top = self._open_top(create=False)
        except FileNotFoundError:
            raise NoInputError(f"no quarantined item {name}", hint="list them with mailq") from None
        try:
            fcntl.flock(top, fcntl.LOCK_EX)
            item_fd = _open_dir(name, top)
        except FileNotFoundError:
            os.close(top)
            raise NoInputError(f"no quarantined item {name}", hint="list them with mailq") from None
        except OSError as error:
            os.close(top)
            raise IOFailure(
                f"cannot open quarantined item {name} in {self.directory}: {error.strerror}",
                hint="check the quarantine directory's owner and permissions",
            ) from error
        return top, item_fd

    def _check_whole(self, item_fd: int, name: str, item_id: str) -> int:
        """The Q file's locked descriptor when the item is whole again; else DataError."""
        path = os.path.join(self.directory, name, f"Q{item_id}")
        still = f"quarantined item {name} is still damaged"
        hint = f"fix it first, or delete it with dma -Qd {name}"
        for prefix in ("M", "Q"):
            info = _lstat_at(f"{prefix}{item_id}", item_fd)
            what = "message" if prefix == "M" else "queue"
            if info is None:
                raise DataError(f"{still}: its {what} file {prefix}{item_id} is missing",
                                hint=hint)
            kind = file_kind(info.st_mode)
            if kind is not None:
                raise DataError(f"{still}: its {what} file {prefix}{item_id} is {kind}",
                                hint=hint)
        flags = os.O_RDWR | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK
        fd = os.open(f"Q{item_id}", flags, dir_fd=item_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise DataError(f"{still}: its queue file changed while it was checked",
                                hint=hint)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise TempFailure(f"quarantined item {name} is in use",
                                  hint="try again in a moment") from None
            data = _pread_all(fd, MAX_QUEUE_FILE_OCTETS + 1)
            try:
                parse_queue_item(data, item_id, path)
            except DataError as error:
                raise DataError(f"{still}: {error}", hint=hint) from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _restore_arrival(item_fd: int, queue_fd: int) -> None:
        fields = _reason_fields(_read_bounded(REASON_FILE, item_fd, MAX_REASON_OCTETS))
        recorded = fields.get("Arrival", "")
        if recorded.isdigit() and len(recorded) <= 20:
            held = os.fstat(queue_fd)
            if held.st_mtime_ns != int(recorded):
                os.utime(queue_fd, ns=(held.st_atime_ns, int(recorded)))

    def _link_back(self, item_fd: int, item_id: str) -> None:
        """Link M, then Q, back into the spool; never over an existing name (the very
        same file there is an interrupted release of this item, and fine)."""
        spool_fd = _open_dir(self.spool_directory)
        made: list[str] = []
        try:
            for file_name in (f"M{item_id}", f"Q{item_id}"):
                there = _lstat_at(file_name, spool_fd)
                if _same(there, _lstat_at(file_name, item_fd)):
                    continue
                if there is not None:
                    raise CantCreateError(
                        f"cannot release {item_id}: the spool already holds {file_name}",
                        hint="an item of that name is queued; deliver or delete it first",
                    )
                os.link(file_name, file_name, src_dir_fd=item_fd, dst_dir_fd=spool_fd,
                        follow_symlinks=False)
                made.append(file_name)
            os.fsync(spool_fd)
        except BaseException:
            for file_name in reversed(made):  # Q first: never a lone Q
                try:
                    os.unlink(file_name, dir_fd=spool_fd)
                except OSError:
                    pass
            raise
        finally:
            os.close(spool_fd)

    @staticmethod
    def _remove_directory(top: int, name: str) -> None:
        """Remove an emptied item directory (a file an admin left in it keeps it)."""
        try:
            os.rmdir(name, dir_fd=top)
        except OSError:
            pass
        os.fsync(top)


def _arrival(fields: dict[str, str], queue_info: os.stat_result | None) -> float | None:
    recorded = fields.get("Arrival", "")
    if recorded.isdigit() and len(recorded) <= 20:
        return int(recorded) / 1e9
    return queue_info.st_mtime if queue_info is not None else None
