"""What kind of file a mode says, in words, for messages about files that should be
regular and are not (the quarantine's reasons, dotlocks, MAILNAME files)."""

from __future__ import annotations

import stat


def file_kind(mode: int) -> str | None:
    """None for a regular file, else what the file is: "a directory", "a FIFO", ..."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"
