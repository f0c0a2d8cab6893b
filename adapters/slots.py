"""Connection slots shared by every dma process of one spool (SPEC 5.1, MAXCONNECTIONS).

MAXCONNECTIONS counts outgoing connections in all, yet the detached deliverer of
each submission and every ``dma -q`` are separate processes.  They share the spool,
so the limit lives there: ``SPOOLDIR/.slots/0`` .. ``N-1``, and whoever opens a
connection holds an exclusive ``flock`` on one slot file until it is closed.  The
kernel drops a lock when its process dies, so a crash never leaks a slot, and
nothing has to be cleaned up.

A waiter polls (every 50-250 ms, jittered so that waiters do not move in step)
for at most the time it is given; then it gets None and its caller defers the
mail.  The directory is invisible to the rest of the spool: the C dma and
``adapters/spool.py`` only look at ``Q*``, ``M*`` and ``tmp_*`` names.

In system mode (SPEC 8.2) the root queue run and its unprivileged child, the
delivery user, share the slots: when the spool directory is set-gid (its group the
delivery group), the slot directory is made ``SHARED_DIR_MODE`` (set-gid,
group-writable, whatever the umask), and in a group-writable slot directory slot
files we create are ``FILE_MODE`` (0660) for the same reason.  Otherwise the modes
are ``DIR_MODE`` and ``FILE_MODE`` under the umask, as before.

Should the slot directory be unusable (permissions, a full disk), ``acquire``
raises ``SlotError``: the caller decides whether to go on without the limit.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import stat
import time
from types import TracebackType

from dma.core.errors import TempFailure

SLOT_DIR = ".slots"
DIR_MODE = 0o770
SHARED_DIR_MODE = 0o2770
FILE_MODE = 0o660
POLL_MIN = 0.05
POLL_MAX = 0.25
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class SlotError(TempFailure):
    """The slot directory or a slot file cannot be used."""


class Slot:
    """One held slot: the lock lasts until ``release`` (or the end of a ``with``)."""

    def __init__(self, index: int, fd: int | None) -> None:
        self.index = index
        self._fd = fd

    @property
    def held(self) -> bool:
        """True until released."""
        return self._fd is not None

    def release(self) -> None:
        """Give the slot back; safe to call more than once."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> Slot:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _share(fd: int) -> None:
    """Give a slot file of ours FILE_MODE whatever the umask: the group shares it."""
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        pass  # whoever cannot open it then says so


class Slots:
    """The ``count`` connection slots of the spool in ``spooldir``."""

    def __init__(self, spooldir: str, count: int) -> None:
        if count < 1:
            raise ValueError(f"slot count must be at least 1, not {count}")
        self.spooldir = spooldir
        self.directory = os.path.join(spooldir, SLOT_DIR)
        self.count = count
        self._group_writable = False

    def prepare(self) -> None:
        """Make the slot directory if it is missing (shared with the delivery group when
        the spool is: see the module doc); SlotError when it cannot be used."""
        try:
            os.mkdir(self.directory, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as error:
            raise SlotError(
                f"cannot create the connection slot directory {self.directory}: "
                f"{error.strerror}",
                hint="check the spool directory's owner and permissions",
            ) from error
        try:
            info = os.lstat(self.directory)
        except OSError as error:
            raise SlotError(f"cannot use {self.directory}: {error.strerror}") from error
        if not stat.S_ISDIR(info.st_mode):
            raise SlotError(
                f"{self.directory} is not a directory",
                hint="remove it; dma makes the connection slot directory itself",
            )
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != SHARED_DIR_MODE \
                and self._spool_is_shared():
            try:
                os.chmod(self.directory, SHARED_DIR_MODE, follow_symlinks=False)
                info = os.lstat(self.directory)
            except OSError:
                pass  # the delivery user may then not get a slot: it says so
        self._group_writable = bool(info.st_mode & stat.S_IWGRP)

    def _spool_is_shared(self) -> bool:
        """True when the spool directory is set-gid: shared with the delivery group."""
        try:
            return bool(os.stat(self.spooldir).st_mode & stat.S_ISGID)
        except OSError:
            return False

    def _open(self, index: int) -> int:
        path = os.path.join(self.directory, str(index))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | _NOFOLLOW | _CLOEXEC, FILE_MODE)
        except OSError as error:
            raise SlotError(
                f"cannot open connection slot {path}: {error.strerror}",
                hint="check the spool directory's owner and permissions",
            ) from error
        if self._group_writable:
            _share(fd)
        return fd

    def try_acquire(self) -> Slot | None:
        """A free slot now, or None when all ``count`` are held."""
        self.prepare()
        start = random.randrange(self.count)
        for step in range(self.count):
            index = (start + step) % self.count
            fd = self._open(index)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue
                raise SlotError(
                    f"cannot lock connection slot {index} in {self.directory}: "
                    f"{error.strerror}"
                ) from error
            return Slot(index, fd)
        return None

    def acquire(self, wait: float) -> Slot | None:
        """A free slot, polling for at most ``wait`` seconds; None when none came free."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            slot = self.try_acquire()
            if slot is not None:
                return slot
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(left, random.uniform(POLL_MIN, POLL_MAX)))
