"""Who remote delivery runs as, and giving up root for good (SPEC 8.2).

A queue run started as root delivers locally itself, but hands DNS, SMTP and TLS to
a child that becomes the delivery user (``core/system_layout.DELIVERY_USER``) first:
its only group is the delivery group, root cannot be had back (checked), and with
``PR_SET_NO_NEW_PRIVS`` no set-id program it might run gives any back either.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import signal
import sys
from dataclasses import dataclass
from typing import Any

from dma.core.errors import ConfigError, SoftwareError
from dma.core.system_layout import DELIVERY_GROUP, DELIVERY_USER

_PR_SET_PDEATHSIG = 1
_PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True, slots=True)
class Identity:
    """A user to become: its name, uid and the one group it keeps."""

    name: str
    uid: int
    gid: int


def delivery_identity() -> Identity | None:
    """The delivery user to run remote delivery as: only when we are root and the user
    exists (system mode); None otherwise (remote delivery runs in this process).

    A delivery user or group that is root's is refused (ConfigError): it would give
    the network side root after all.
    """
    if os.geteuid() != 0:
        return None
    try:
        user = pwd.getpwnam(DELIVERY_USER)
    except KeyError:
        return None
    try:
        gid = grp.getgrnam(DELIVERY_GROUP).gr_gid
    except KeyError:
        gid = user.pw_gid
    if user.pw_uid == 0 or gid == 0:
        raise ConfigError(
            f"the delivery user {DELIVERY_USER} (uid {user.pw_uid}, group {gid}) is root's;"
            " remote delivery must not run as root",
            hint=f"give {DELIVERY_USER} its own uid and group (dma install-system does)",
        )
    return Identity(user.pw_name, user.pw_uid, gid)


def become(identity: Identity) -> None:
    """Turn this process into ``identity`` for good: groups, gid, uid; then check that
    root cannot be had back, and forbid new privileges.  SoftwareError when any of it
    fails: the caller must then not go on."""
    _libc()  # loaded while every file is still ours to read
    try:
        os.setgroups([identity.gid])
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    except OSError as error:
        raise _not_dropped(identity, error.strerror or str(error)) from error
    if os.getresuid() != (identity.uid,) * 3 or os.getresgid() != (identity.gid,) * 3 \
            or os.getgroups() not in ([identity.gid], []):
        raise _not_dropped(identity, "the ids did not change")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise _not_dropped(identity, "root could be had back")
    _prctl(_PR_SET_NO_NEW_PRIVS, 1)


def die_with_parent(parent: int) -> None:
    """Be killed when ``parent`` ends (set after ``become``: changing ids clears it);
    when it has already ended, end now."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(70)


@functools.cache
def _libc() -> Any:
    """The C library through ctypes, on Linux (None elsewhere).  Loaded on first use:
    only a root queue run's child needs it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, value: int) -> None:
    """prctl(2) on Linux; elsewhere nothing (the id checks above still hold)."""
    libc = _libc()
    if libc is None:
        return
    import ctypes  # loaded by _libc

    if libc.prctl(option, ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                  ctypes.c_ulong(0)) != 0:
        error = ctypes.get_errno()
        raise SoftwareError(f"prctl({option}, {value}) failed: {os.strerror(error)}",
                            hint="remote delivery does not start without it")


def _not_dropped(identity: Identity, why: str) -> SoftwareError:
    return SoftwareError(
        f"cannot become the delivery user {identity.name} (uid {identity.uid}, gid "
        f"{identity.gid}): {why}",
        hint="remote delivery does not run as root; check the user and group",
    )
