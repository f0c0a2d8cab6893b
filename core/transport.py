"""Pure decisions for one remote delivery attempt: TLS policy and transactions per hop.

The shell connects and talks; these functions say how (SPEC 5.3, 5.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from dma.core.config import Config
from dma.core.ledger import AddressId
from dma.core.queuefile import message_id_of
from dma.core.values import frozen


@frozen
class Security:
    """How to secure a session with one host."""

    implicit_tls: bool  # TLS from the first byte (port 465 style)
    starttls: Literal["no", "required", "opportunistic"]
    verify: bool  # check the certificate chain and host name
    fingerprint: bytes | None  # pin: replaces the CA checks


def security_for(config: Config, hop_kind: str) -> Security:
    """SPEC 5.5: implicit TLS only to a smarthost; MX delivery upgrades with STARTTLS.

    TLS is mandatory when SECURETRANSFER is set and OPPORTUNISTIC_TLS is not; then
    certificates are verified unless NOVERIFYCERT.  VERIFYCERT asks for verification
    even in opportunistic mode.  FINGERPRINT pins the certificate instead.
    """
    if not config.securetransfer:  # no TLS: nothing to pin (the TLS keys need it, SPEC 2.1)
        return Security(False, "no", False, None)
    implicit = hop_kind == "smarthost" and not config.starttls
    if implicit:
        mode: Literal["no", "required", "opportunistic"] = "no"
    else:
        mode = "opportunistic" if config.opportunistic_tls else "required"
    mandatory = implicit or mode == "required"
    verify = (mandatory or config.verifycert) and not config.noverifycert
    return Security(implicit, mode, verify, config.fingerprint)


@frozen
class QueuedRecipient:
    """One address of a queue item as the planner needs it."""

    item_id: AddressId
    sender: str
    recipient: str
    dsn_notify: str | None = None
    dsn_ret: str | None = None
    dsn_envid: str | None = None


@frozen
class Transaction:
    """One SMTP transaction: a message, its sender and the recipients for this hop."""

    message_id: str
    sender: str
    item_ids: tuple[AddressId, ...]
    recipients: tuple[str, ...]  # each once, for RCPT
    item_recipients: tuple[str, ...]  # the recipient of each address, parallel to item_ids
    dsn_notify: str | None = None  # from the message's first item: one submission, one value
    dsn_ret: str | None = None
    dsn_envid: str | None = None


def plan_transactions(items: Sequence[QueuedRecipient]) -> tuple[Transaction, ...]:
    """Group items by message and sender: each group is one MAIL with several RCPTs.

    Items that share a message share its M file content; a recipient listed twice
    is sent once (its items all get the outcome).  Order is first-seen.
    """
    groups: dict[tuple[str, str], list[QueuedRecipient]] = {}
    for item in items:
        groups.setdefault((message_id_of(item.item_id.item_id), item.sender), []).append(item)
    plans = []
    for (message_id, sender), members in groups.items():
        recipients = dict.fromkeys(member.recipient for member in members)  # linear, ordered
        plans.append(Transaction(
            message_id, sender, tuple(m.item_id for m in members), tuple(recipients),
            tuple(m.recipient for m in members),
            members[0].dsn_notify, members[0].dsn_ret, members[0].dsn_envid,
        ))
    return tuple(plans)
