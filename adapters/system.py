"""What the operating system says about us: users, ids, the environment, randomness,
host names, the clock.

Small functions so that the shell can hand their answers to the pure core as values;
the shell asks the operating system these things only through this module.
"""

from __future__ import annotations

import os
import pwd
import time
from collections.abc import Mapping

from dma.core.values import frozen

TYPE_CHECKING = False  # not typing's: a submission need not import typing
if TYPE_CHECKING:
    from datetime import UTC, datetime
else:
    try:  # the C module datetime.py ends up with: same classes, same objects
        from _datetime import UTC, datetime
    except ImportError:  # pragma: no cover - a Python without it
        from datetime import UTC, datetime


@frozen
class UserEntry:
    """What the password database says about one user."""

    name: str
    uid: int
    gid: int
    home: str


def uid() -> int:
    """Our real user id (who ran dma: logs and Received: fields name it)."""
    return os.getuid()


def euid() -> int:
    """Our effective user id (0 when we may create files for other users)."""
    return os.geteuid()


def user_entry(name: str) -> UserEntry | None:
    """The password entry of the user ``name`` (as getpwnam sees it), None when there is none.

    A name no user can have (empty, with ``/`` or NUL, not encodable) is None too.
    """
    if not name or "/" in name or "\0" in name:
        return None
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, UnicodeEncodeError):
        return None
    return UserEntry(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def user_exists(name: str) -> bool:
    """True when ``name`` is a user in the password database (as getpwnam sees it)."""
    return user_entry(name) is not None


def environment() -> Mapping[str, str]:
    """The process environment, read-only (a live view: not a copy)."""
    return os.environ


def random_hex(octets: int) -> str:
    """``octets`` octets from the kernel's random source, as ``2 * octets`` hex digits."""
    return os.urandom(octets).hex()


def jitter() -> float:
    """A random fraction in [0, 1) from the kernel's random source (32 bits of it).

    For spreading retry times, so that items that failed together do not all come
    back at the same second.
    """
    return int.from_bytes(os.urandom(4), "big") / 2**32


def login_name() -> str:
    """The submitting user's name, by the C dma's rule.

    The first of getlogin(), $LOGNAME, $USER whose password entry has our real uid,
    else the password entry of the uid, else ``uid=<n>``.
    """
    uid = os.getuid()
    candidates: list[str | None] = []
    try:
        candidates.append(os.getlogin())
    except OSError:
        pass
    candidates += [os.environ.get("LOGNAME"), os.environ.get("USER")]
    for name in candidates:
        if not name:
            continue
        try:
            if pwd.getpwnam(name).pw_uid == uid:
                return name
        except (KeyError, UnicodeEncodeError):
            continue
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid={uid}"


def home_directory() -> str:
    """The user's home directory: $HOME, else the password entry's."""
    home = os.environ.get("HOME")
    if home:
        return home
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return "/"


def system_hostname() -> str:
    """gethostname() cut at the first character outside [A-Za-z0-9_.-], as the C dma does."""
    raw = os.uname().nodename  # what gethostname() returns, without importing socket
    cut = []
    for char in raw:
        if char.isascii() and (char.isalnum() or char in "_.-"):
            cut.append(char)
        else:
            break
    return "".join(cut) or "unknown-hostname"


def now() -> datetime:
    """The current local time, timezone-aware (Date: headers use the local offset).

    From CPython's ``_datetime`` itself: Python 3.11's ``datetime.py`` first defines
    its whole pure-Python fallback, then replaces it with that module's classes,
    ~1 ms of every submission's start-up (3.12 imports the C module first).
    """
    return datetime.now(UTC).astimezone()


def epoch() -> float:
    """Seconds since the epoch."""
    return time.time()
