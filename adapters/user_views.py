"""``SPOOLDIR/users/``: each user's view of the queue, written by root, read by that user
alone (SPEC 8.2 queue listing; the format is core/user_views.py).

The layout::

    SPOOLDIR/users/              root:root 0711  pass through, never list
    SPOOLDIR/users/<uid>/        <uid>:root 0500 kept once made
    SPOOLDIR/users/<uid>/queue   <uid>:root 0400 that uid's items; gone when none

A directory per uid, rather than a file per uid straight in ``users/``: anyone may
look up a name in a 0711 directory, so a file ``users/<bob's uid>`` would tell alice
whether bob has mail queued right now, how much (its size) and since when.  Inside
bob's own 0500 directory nothing can be looked up by others; the directory itself
stays once made, so its existence says only that bob once queued mail through the
maildrop (which a process list tells anyone anyway).

Root writes each view by temporary name and rename inside the uid's directory,
through directory descriptors opened without following links; the temporary file
is created O_EXCL|O_NOFOLLOW and its owner and mode are set on the descriptor
before the rename, so the user never sees it otherwise and nothing the user may put
in their own directory (they own it, so they may chmod it and add names) is ever
followed, read or chowned by root.  No fsync: a view is derived data that every
refresh writes again.  A refresh holds ``users/``'s flock, so two root processes
refreshing at once cannot leave the older listing last.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Self

from dma.adapters import system
from dma.adapters.locked_directory import DIRECTORY_FLAGS, LockedDirectory
from dma.core.errors import DataError, NoInputError
from dma.core.system_layout import (
    USER_VIEW_DIRECTORY_MODE,
    USER_VIEW_MODE,
    USER_VIEW_NAME,
    USER_VIEWS,
    USER_VIEWS_MODE,
)

USERS = USER_VIEWS
"""The views' directory inside SPOOLDIR."""

USERS_MODE = USER_VIEWS_MODE
USER_DIRECTORY_MODE = USER_VIEW_DIRECTORY_MODE
VIEW_NAME = USER_VIEW_NAME
VIEW_MODE = USER_VIEW_MODE
MAX_VIEW_OCTETS = 256 * 1024 * 1024
"""A view larger than this is not read (about 800 000 items of one user)."""

_TEMP_PREFIX = ".tmp-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = DIRECTORY_FLAGS


def users_path(spool_directory: str) -> str:
    """``SPOOLDIR/users``."""
    return os.path.join(spool_directory, USERS)


def view_path(spool_directory: str, uid: int) -> str:
    """The view file of ``uid``."""
    return os.path.join(users_path(spool_directory), str(uid), VIEW_NAME)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class UserViews(LockedDirectory):
    """``SPOOLDIR/users`` as root writes it: made (root:root 0711) when missing, locked
    while open.  Raises OSError when it cannot be made or opened."""

    what = "the users' views"

    def __init__(self, spool_directory: str) -> None:
        super().__init__(users_path(spool_directory))

    def present(self) -> bool:
        """True when ``users/`` exists (it is made for the first view, not before)."""
        return os.path.lexists(self.path)

    def __enter__(self) -> Self:
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        return super().__enter__()

    def _prepare(self, fd: int) -> None:
        held = os.fstat(fd)
        if (held.st_uid, held.st_gid, stat.S_IMODE(held.st_mode)) != (0, 0, USERS_MODE):
            os.fchown(fd, 0, 0)  # made in a set-gid spool: the group is not the spool's
            os.fchmod(fd, USERS_MODE)

    def names(self) -> list[str]:
        """Every name in ``users/`` (root lists it; nobody else can)."""
        return sorted(os.listdir(self.fd))

    def _user_directory(self, uid: int) -> int:
        """The open directory of ``uid``, made if missing, owned by ``uid``, mode 0500."""
        name = str(uid)
        try:
            os.mkdir(name, 0o700, dir_fd=self.fd)
        except FileExistsError:
            pass
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        try:
            held = os.fstat(fd)
            if (held.st_uid, held.st_gid, stat.S_IMODE(held.st_mode)) != (
                    uid, 0, USER_DIRECTORY_MODE):
                os.fchown(fd, uid, 0)
                os.fchmod(fd, USER_DIRECTORY_MODE)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def write(self, uid: int, data: bytes) -> None:
        """Replace ``uid``'s view with ``data`` (temporary name, then rename)."""
        directory = self._user_directory(uid)
        try:
            temp, fd = _create_temp(directory)
            try:
                _write_all(fd, data)
                os.fchown(fd, uid, 0)
                os.fchmod(fd, VIEW_MODE)
            finally:
                os.close(fd)
            try:
                os.rename(temp, VIEW_NAME, src_dir_fd=directory, dst_dir_fd=directory)
            except BaseException:
                _unlink(temp, directory)
                raise
        finally:
            os.close(directory)

    def remove(self, name: str) -> None:
        """Remove the view in ``users/<name>`` (its directory stays), if there is one."""
        try:
            directory = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as error:
            if error.errno == errno.ELOOP:
                return  # not one of ours
            raise
        try:
            _unlink(VIEW_NAME, directory)
        finally:
            os.close(directory)


def _create_temp(directory: int) -> tuple[str, int]:
    """A new temporary file in ``directory``, created exclusively, never through a link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    for _ in range(8):
        name = _TEMP_PREFIX + system.random_hex(8)
        try:
            return name, os.open(name, flags, 0o600, dir_fd=directory)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "eight temporary names were all taken")


def _unlink(name: str, directory: int) -> None:
    """Unlink ``name`` if it is there, and not a directory."""
    try:
        os.unlink(name, dir_fd=directory)
    except (FileNotFoundError, IsADirectoryError):
        pass
    except PermissionError:  # EPERM: a directory on some systems
        pass


# --- the user's side -------------------------------------------------------------------------


def read_view(spool_directory: str, uid: int) -> bytes | None:
    """The octets of ``uid``'s view, as that user reads them; None when there is none (the
    user has no queued item, or the runner has not written one yet).

    NoInputError when it cannot be read; DataError when it is no regular file or too big.
    """
    path = view_path(spool_directory, uid)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | os.O_NONBLOCK | _CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise NoInputError(
            f"cannot read your queue view {path}: {error.strerror or error}",
            hint="the queue runner (root) writes it; ask the administrator",
        ) from error
    try:
        held = os.fstat(fd)
        if not stat.S_ISREG(held.st_mode) or held.st_size > MAX_VIEW_OCTETS:
            raise DataError(f"your queue view {path} is no regular file of at most "
                            f"{MAX_VIEW_OCTETS} octets",
                            hint="the queue runner writes it again at its next pass")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
