"""Local delivery of one claimed item into MAILDIR/<user> (SPEC 5.2).

Every local failure is temporary (the admin can fix a mailbox, the disk fills and
empties); an item that stays undeliverable bounces when its queue lifetime ends.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from dma.adapters import system
from dma.adapters.mailbox import (
    INTENT_DIR,
    MAILBOX_MODE,
    MailboxLocked,
    deliver,
    new_mailbox_owner,
)
from dma.adapters.spool import Claim
from dma.core.errors import DmaError
from dma.core.outcomes import Outcome, deferred, delivered
from dma.shell.settings import Settings

LOCK_TIMEOUT = 60.0
"""Seconds to wait for a mailbox's locks, unless $DMA_LOCK_TIMEOUT says otherwise."""
LOCK_TIMEOUT_VARIABLE = "DMA_LOCK_TIMEOUT"


def lock_timeout(environ: Mapping[str, str]) -> float:
    """How long to wait for a locked mailbox: $DMA_LOCK_TIMEOUT seconds, else 60.

    A value that is not a number of seconds from 0 to 3600 is ignored.
    """
    try:
        value = float(environ.get(LOCK_TIMEOUT_VARIABLE, ""))
    except ValueError:
        return LOCK_TIMEOUT
    return value if math.isfinite(value) and 0 <= value <= 3600 else LOCK_TIMEOUT


def _new_mailbox(user: str, maildir: str) -> tuple[tuple[int, int] | None, int]:
    """Who a new mailbox should belong to, and its mode: the user's, as the host has its
    mailboxes (``new_mailbox_owner``: Debian's ``<user>:mail 0660``), when we may give
    it away (root); else ours, 0600."""
    if system.euid() != 0:
        return None, MAILBOX_MODE
    entry = system.user_entry(user)
    if entry is None:
        return None, MAILBOX_MODE
    return new_mailbox_owner(maildir, entry.uid, entry.gid)


def _existing_user(user: str) -> str | None:
    """The user's name as the password database has it: as given, else in lower case."""
    if system.user_exists(user):
        return user
    lowered = user.lower()
    if lowered != user and system.user_exists(lowered):
        return lowered
    return None


def ensure_mail_directory(path: str) -> None:
    """Create MAILDIR on first use (the embedded default has none yet)."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700 if system.euid() else 0o2775, exist_ok=True)


def deliver_local(
    claim: Claim, user: str, settings: Settings, busy: set[str] | None = None
) -> Outcome:
    """Append the claimed message to the user's mailbox; never raise for mail problems.

    ``busy`` holds the mailboxes that stayed locked earlier in this queue run: those
    are deferred at once instead of being waited for again, and a mailbox whose lock
    wait times out is added to it.
    """
    if "/" in user or user in ("", ".", ".."):
        return deferred(f"local name {user!r} cannot be a mailbox name")
    name = _existing_user(user)
    if name is None:
        return deferred(f"no local user {user!r}")
    maildir = settings.config.maildir
    try:
        ensure_mail_directory(maildir)
    except OSError as error:
        return deferred(f"cannot create mail directory {maildir}: {error.strerror}")
    mailbox = os.path.join(maildir, name)
    if busy is not None and mailbox in busy:
        return deferred(
            f"mailbox {mailbox} is locked by another program; tried earlier in this run"
        )
    owner, mode = _new_mailbox(name, maildir)
    try:
        with open(claim.message_path, "rb") as message:
            where = deliver(mailbox, message, claim.item.sender, system.now(),
                            lock_timeout=lock_timeout(system.environment()), owner=owner,
                            intent_dir=os.path.join(settings.config.spooldir, INTENT_DIR),
                            mode=mode)
    except MailboxLocked as error:
        if busy is not None:
            busy.add(mailbox)
        return deferred(str(error))
    except DmaError as error:
        return deferred(str(error))
    except OSError as error:
        return deferred(f"cannot read queued message {claim.message_path}: {error.strerror}")
    return delivered(f"mailbox {where}")
