"""Maildir file names (SPEC 5.2): unique without locks, by the modern naming rule.

A delivery writes ``tmp/<unique>`` and moves it to ``new/<unique>,S=<size>``.  The
unique part is ``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>``
(https://cr.yp.to/proto/maildir.html): the time, process, per-process counter and
random bits make it unique on one host, the host name across hosts.  Pure: every
ingredient comes in as an argument.
"""

from __future__ import annotations

import re

from dma.core.errors import SoftwareError

_HEX = re.compile(r"[0-9a-fA-F]+")


def _host_part(hostname: str) -> str:
    """``hostname`` safe for a file name: ``/`` and ``:`` written as ``\\057``, ``\\072``.

    ``/`` would make a path and ``:`` starts the info part in cur/, so the Maildir
    rule spells them in octal.
    """
    if not hostname or "\x00" in hostname:
        raise SoftwareError(
            f"host name {hostname!r} cannot go into a Maildir file name",
            hint="pass the system host name",
        )
    return hostname.replace("/", "\\057").replace(":", "\\072")


def maildir_filename(
    seconds: int, microseconds: int, pid: int, sequence: int, hostname: str, random_hex: str
) -> str:
    """The unique name ``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>`` for one delivery.

    ``sequence`` counts deliveries made by this process, ``random_hex`` comes from a
    good random source; numbers must be non-negative and ``microseconds`` below a
    million.  A bad argument is our own bug, so it raises SoftwareError.
    """
    if min(seconds, microseconds, pid, sequence) < 0 or microseconds >= 1_000_000:
        raise SoftwareError(
            f"bad Maildir name ingredients: seconds={seconds} microseconds={microseconds} "
            f"pid={pid} sequence={sequence}",
            hint="pass the current time, the process id and a delivery counter",
        )
    if not _HEX.fullmatch(random_hex):
        raise SoftwareError(
            f"random part {random_hex!r} of a Maildir name is not hexadecimal",
            hint="pass secrets.token_hex()",
        )
    return f"{seconds}.M{microseconds}P{pid}Q{sequence}R{random_hex.lower()}.{_host_part(hostname)}"


def with_size(name: str, size: int) -> str:
    """``name`` with ``,S=<size>`` added: the name in new/, so readers know the size unread."""
    if size < 0:
        raise SoftwareError(f"negative message size {size} for Maildir name {name!r}")
    return f"{name},S={size}"
