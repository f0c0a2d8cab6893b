"""System mode's layout: who owns what, with which mode (SPEC 8.2).

One place for the names, paths and modes that submission, pickup, delivery, the
queue listing and ``dma install-system`` must agree on.  Pure values: the shell
and adapters create and check them.

The model: no set-id file.  Any user writes a message into the maildrop (writable
by all, listable by none); a runner started as root picks it up into the spool,
delivers locally as root and hands remote delivery to a child running as the
unprivileged delivery user, which reads the spool through its group.
"""

from __future__ import annotations

SYSTEM_CONFIG = "/etc/dma/dma.conf"
"""The configuration that makes a host's dma the system one."""

DELIVERY_USER = "dma"
"""The system user that DNS, SMTP and TLS run as: never root."""

DELIVERY_GROUP = "dma"
"""Its group: reads the spool and auth.conf (and account files); nobody else does."""

MAIL_GROUP = "mail"
"""The group of /var/mail and of new mailboxes, as Debian has it."""

MAILDROP = "maildrop"
"""The maildrop directory's name inside SPOOLDIR."""

MAILDROP_MODE = 0o1733
"""Everyone may create files in the maildrop, nobody but root may list it, and the
sticky bit keeps each file its owner's (root:DELIVERY_GROUP)."""

SPOOL_MODE = 0o2751
"""SPOOLDIR: root writes, the delivery group reads, others only pass through to the
maildrop (root:DELIVERY_GROUP; set-gid so new files get the group)."""

SPOOL_FILE_MODE = 0o640
"""Q and M files: root writes, the delivery group reads."""

SECRET_FILE_MODE = 0o640
"""auth.conf and account files: root:DELIVERY_GROUP, nobody else."""

MAIL_DIRECTORY_MODE = 0o2775
"""/var/mail as Debian makes it: root:MAIL_GROUP, set-gid."""

MAILBOX_MODE = 0o660
"""A new mailbox: <user>:MAIL_GROUP, as Debian's MTAs create them."""

MAILDROP_MAX_OCTETS = 512 * 1024 * 1024
"""A maildrop file larger than this is quarantined, not read (a sparse or runaway
file must not fill the spool)."""

USER_VIEWS = "users"
"""SPOOLDIR/users: each user's view of their own queued items (a user cannot read the
spool), root:root, pass-through only, so no user learns whether another has mail."""

USER_VIEWS_MODE = 0o711
USER_VIEW_DIRECTORY_MODE = 0o500
"""users/<uid>/: that uid's, readable by it alone."""

USER_VIEW_NAME = "queue"
USER_VIEW_MODE = 0o400
"""users/<uid>/queue: the listing records of that user's items, written by root."""
