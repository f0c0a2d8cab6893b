"""Dotlock contents (dma.core.dotlock): what we write, and which pid of this host the
lock files of other programs name."""

from __future__ import annotations

import pytest

from dma.core.dotlock import PID_MAX_LIMIT, lock_content, lock_pid

HOST = "mx.example.org"


def test_our_lock_is_pid_colon_host_newline() -> None:
    """We write ``<pid>:<host>`` and a newline, which liblockfile's atoi reads as the pid."""
    assert lock_content(4242, HOST) == b"4242:mx.example.org\n"


@pytest.mark.parametrize("host", ["", "a b", "a:b", "h\u00f6st", "x" * 65, "tab\there"])
def test_unusable_host_name_gives_a_bare_pid(host: str) -> None:
    """A host name that would not read back after the colon is left out: ``<pid>\\n``."""
    assert lock_content(4242, host) == b"4242\n"


@pytest.mark.parametrize(
    ("content", "shared", "pid"),
    [
        (b"4242\n", False, 4242),           # ours before, liblockfile L_PID, dotlockfile -p
        (b"4242", False, 4242),
        (b" 4242 \r\n", False, 4242),
        (b"4242\x00", False, 4242),
        (b"4242:mx.example.org\n", False, 4242),  # ours, Dovecot
        (b"4242:mx.example.org\n", True, 4242),   # attributed to us even on NFS
        (b"4242\n", True, None),            # a bare pid on NFS may be another host's
        (b"4242:other.example.org\n", False, None),
        (b"4242:\n", False, None),
        (b":mx.example.org\n", False, None),
        (b"", False, None),                 # mutt, procmail, postfix
        (b"0\n", False, None),              # liblockfile without L_PID (SVR4)
        (b"-4242\n", False, None),
        (b"+4242\n", False, None),
        (b"42 42\n", False, None),
        (b"4242\n4243\n", False, None),
        (b"\xd9\xa4\n", False, None),       # a non-ASCII digit
        (f"{PID_MAX_LIMIT}\n".encode(), False, PID_MAX_LIMIT),
        (f"{PID_MAX_LIMIT + 1}\n".encode(), False, None),
        (b"00000004242\n", False, None),    # more digits than any pid has
        (b"4242" + b" " * 200, False, None),  # longer than a lock we know
    ],
)
def test_lock_pid(content: bytes, shared: bool, pid: int | None) -> None:
    """lock_pid names a pid only for lock files it can attribute to this host."""
    assert lock_pid(content, HOST, shared=shared) == pid
