"""What the operating system says about us: users, host names, the clock.

Small functions so that the shell can hand their answers to the pure core as values.
"""

from __future__ import annotations

import os
import pwd
import time
from datetime import UTC, datetime


def user_exists(name: str) -> bool:
    """True when ``name`` is a user in the password database (as getpwnam sees it)."""
    if not name or "/" in name or "\0" in name:
        return False
    try:
        pwd.getpwnam(name)
    except (KeyError, UnicodeEncodeError):
        return False
    return True


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
    """The current local time, timezone-aware (Date: headers use the local offset)."""
    return datetime.now(UTC).astimezone()


def epoch() -> float:
    """Seconds since the epoch."""
    return time.time()
