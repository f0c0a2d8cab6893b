"""A directory held open (never through a link) under an exclusive flock while in use.

The maildrop's pickup pass and the users' queue views both need one: root works in a
directory that others can reach, so it opens the directory itself, works relative to
that descriptor, and lets one process at a time in.
"""

from __future__ import annotations

import fcntl
import os
from types import TracebackType
from typing import Self

DIRECTORY_FLAGS = (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
                   | getattr(os, "O_CLOEXEC", 0))
"""Open a directory, never a link to one, not inherited by children."""


class LockedDirectory:
    """``with`` it: ``path`` is opened and exclusively flocked (another holder waits);
    ``fd`` is the open directory while inside.  Subclasses ``_prepare`` it first."""

    what = "the directory"

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def _prepare(self, fd: int) -> None:
        """Check or fix the opened directory before it is locked (nothing by default)."""

    def __enter__(self) -> Self:
        fd = os.open(self.path, DIRECTORY_FLAGS)
        try:
            self._prepare(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def fd(self) -> int:
        """The open directory; ValueError outside ``with``."""
        if self._fd is None:
            raise ValueError(f"{self.what} is not open")
        return self._fd
