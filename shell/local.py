"""Local delivery of one claimed item into MAILDIR/<user> (SPEC 5.2).

Every local failure is temporary (the admin can fix a mailbox, the disk fills and
empties); an item that stays undeliverable bounces when its queue lifetime ends.
"""

from __future__ import annotations

import os
import pwd

from dma.adapters import system
from dma.adapters.mailbox import deliver
from dma.adapters.spool import Claim
from dma.core.errors import DmaError
from dma.shell.outcomes import Outcome, deferred, delivered
from dma.shell.settings import Settings


def _owner(user: str) -> tuple[int, int] | None:
    """Who a new mailbox should belong to: the user, when we may give it away (root)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def ensure_mail_directory(path: str) -> None:
    """Create MAILDIR on first use (the embedded default has none yet)."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=0o700 if os.geteuid() else 0o2775, exist_ok=True)


def deliver_local(claim: Claim, user: str, settings: Settings) -> Outcome:
    """Append the claimed message to the user's mailbox; never raise for mail problems."""
    if "/" in user or user in ("", ".", ".."):
        return deferred(f"local name {user!r} cannot be a mailbox name")
    if not system.user_exists(user) and not system.user_exists(user.lower()):
        return deferred(f"no local user {user!r}")
    maildir = settings.config.maildir
    try:
        ensure_mail_directory(maildir)
    except OSError as error:
        return deferred(f"cannot create mail directory {maildir}: {error.strerror}")
    mailbox = os.path.join(maildir, user)
    try:
        with open(claim.message_path, "rb") as message:
            where = deliver(mailbox, message, claim.item.sender, system.now(),
                            owner=_owner(user))
    except DmaError as error:
        return deferred(str(error))
    except OSError as error:
        return deferred(f"cannot read queued message {claim.message_path}: {error.strerror}")
    return delivered(f"mailbox {where}")
