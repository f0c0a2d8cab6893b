"""Mailbox dotlocks (SPEC 5.2): what we write into ``<mailbox>.lock``, and which
process of this host, if any, a lock file names.

Programs fill a dotlock differently.  liblockfile with L_PID (``dotlockfile -p``) and
most hand-made locks write the pid in ASCII decimal and a newline; liblockfile
without it writes ``0`` and a newline (SVR4 maillock); Dovecot writes ``<pid>:<host>``;
mutt, procmail and postfix leave the file empty.  We write ``<pid>:<host>`` and a
newline when the host name allows it (liblockfile's atoi still reads the pid), so
that a lock of ours seen from another host or container is not judged by our pids.

A pid decides a lock's staleness only when the lock can be attributed to this host:
a bare pid when the file system is not shared with other hosts (the caller knows),
``<pid>:<host>`` when the host is ours.  Everything else (empty, ``0``, text, another
host's pid) says nothing, and the caller falls back to the lock's age, as
liblockfile and Dovecot do.  Pure: the content and the host name come in as
arguments.
"""

from __future__ import annotations

PID_MAX_LIMIT = 4_194_304
"""The highest pid Linux can give (2**22, PID_MAX_LIMIT): a larger number is no pid."""
LOCK_READ_LIMIT = 128
"""Octets of a lock file worth reading: a longer one is no pid lock we know."""
_BLANKS = b" \t\r\n\x00"


def lock_content(pid: int, hostname: str) -> bytes:
    """What our dotlock holds: ``<pid>:<host>`` and a newline, or the bare pid and a
    newline when ``hostname`` would not read back as one (empty, blanks, a colon, not
    ASCII)."""
    if _usable_host(hostname):
        return f"{pid}:{hostname}\n".encode("ascii")
    return f"{pid}\n".encode("ascii")


def lock_pid(content: bytes, hostname: str, *, shared: bool) -> int | None:
    """The pid of this host that a lock file holding ``content`` names, else None.

    ``hostname`` is this host's name; ``shared`` says the lock lives on a file
    system other hosts write too (NFS and the like), where a bare pid may be
    another host's.  Never raises.
    """
    if len(content) > LOCK_READ_LIMIT:
        return None
    digits, colon, host = content.strip(_BLANKS).partition(b":")
    if colon:
        if not host or not _usable_host(hostname) or host != hostname.encode("ascii"):
            return None
    elif shared:
        return None
    if not digits.isdigit() or len(digits) > len(str(PID_MAX_LIMIT)):
        return None
    pid = int(digits)
    return pid if 0 < pid <= PID_MAX_LIMIT else None


def _usable_host(host: str) -> bool:
    """Whether ``host`` can stand after the colon of a lock and be read back as is:
    1 to 64 visible ASCII characters other than the colon."""
    return 0 < len(host) <= 64 and all("!" <= char <= "~" and char != ":" for char in host)
