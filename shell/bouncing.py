"""Bounce a failed item to its sender as an RFC 3464 report (SPEC 5.7).

The original leaves the queue only once the bounce is safely spooled; if a bounce
cannot be made, the original stays queued with the reason, so no mail is lost.
A failed bounce (null sender) is logged and dropped: bounces never loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from dma.adapters import system
from dma.adapters.spool import Claim, Spool
from dma.core.bounce import BounceContext, Failure, build_bounce
from dma.core.dates import rfc5322_date
from dma.core.envelope import Recipient, resolve_recipients
from dma.core.errors import DmaError, NoUserError
from dma.core.headers import make_message_id
from dma.core.outcomes import Outcome, failed
from dma.core.queuefile import QueueItem, make_item_id
from dma.core.retry import after_temporary_failure
from dma.core.routing import recipient_parts
from dma.shell.settings import Settings, load_aliases

if TYPE_CHECKING:
    from dma.adapters.log import Logger


def bounce(claim: Claim, outcome: Outcome, settings: Settings, log: Logger) -> list[str] | None:
    """Spool a bounce for ``claim`` and delete it; return the bounce's item ids.

    Returns None when the bounce could not be made (the original then stays queued).
    """
    item = claim.item
    if item.sender == "":
        claim.delete()
        log.error("bounce failed too; discarded (bounces are never bounced)", id=item.id,
                  to=item.recipient, reason=outcome.detail)
        return []
    try:
        new_ids = _spool_bounce(claim, _failures(item.recipient, outcome), settings, log)
    except (DmaError, OSError) as error:
        reason = f"cannot bounce to <{item.sender}>: {error}"
        claim.update(after_temporary_failure(
            item, now=int(system.epoch()), error=reason,
            jitter=system.jitter(),
        ))
        log.error("bounce failed; message kept in the queue", id=item.id, reason=reason)
        return None
    claim.delete()
    log.error("bounced", id=item.id, to=item.recipient, reason=outcome.detail,
              bounce_id=new_ids[0] if new_ids else None)
    return new_ids


def bounce_parts(claim: Claim, outcome: Outcome, settings: Settings, log: Logger
                 ) -> list[str] | None:
    """Bounce the addresses of a comma-list item that failed for good; keep the item.

    Returns the bounce's item ids ([] for a null sender: nothing to bounce to), or
    None when it could not be made: then the failed addresses stay in the item and
    are tried again.
    """
    item = claim.item
    failed_parts = outcome.parts_of("failed")
    parts = ", ".join(part for part, _ in failed_parts)
    if item.sender == "":
        log.error("bounce failed too; discarded (bounces are never bounced)", id=item.id,
                  to=parts, reason=outcome.detail)
        return []
    try:
        new_ids = _spool_bounce(claim, _failures(item.recipient, failed(
            outcome.detail, "5.0.0", parts=failed_parts)), settings, log)
    except (DmaError, OSError) as error:
        log.error("bounce failed; the addresses stay in the queue item", id=item.id,
                  to=parts, reason=f"cannot bounce to <{item.sender}>: {error}")
        return None
    log.error("bounced", id=item.id, to=parts, reason=outcome.detail,
              bounce_id=new_ids[0] if new_ids else None)
    return new_ids


def _failures(recipient: str, outcome: Outcome) -> list[Failure]:
    """One Failure per address: each failed part of a comma list with its own reason,
    else every address of the Recipient value with the outcome's."""
    if outcome.parts:
        return [
            Failure(recipient=part, status=own.status or "5.0.0", diagnostic=own.diagnostic,
                    remote_mta=own.remote_mta, reason=own.detail)
            for part, own in outcome.parts_of("failed")
        ]
    return [
        Failure(recipient=part, status=outcome.status or "5.0.0",
                diagnostic=outcome.diagnostic, remote_mta=outcome.remote_mta,
                reason=outcome.detail)
        for part in recipient_parts(recipient)
    ]


POSTMASTERS = ("postmaster", "root")
"""Who gets a bounce whose sender is a local name that is no user (any more), in order."""


def _bounce_targets(sender: str, settings: Settings, log: Logger) -> tuple[Recipient, ...]:
    """The sender's final recipients; for a local sender that is neither alias nor user
    (deleted since), the postmaster's, so the report reaches someone and the original
    does not wait in the queue for ever.  Raises when nobody can have it."""
    config = settings.config
    aliases = load_aliases(config.aliases)

    def resolve(address: str) -> tuple[Recipient, ...]:
        return resolve_recipients(
            (address,), mailname=settings.mailname, aliases=aliases,
            is_user=system.user_exists, nullclient=config.nullclient,
        )

    try:
        return resolve(sender)
    except NoUserError as missing:
        for fallback in POSTMASTERS:
            try:
                targets = resolve(fallback)
            except DmaError:
                continue
            log.warning("sender is no local user; the bounce goes to the postmaster",
                        sender=sender, to=fallback)
            return targets
        raise missing from None


def _spool_bounce(claim: Claim, failures: list[Failure], settings: Settings,
                  log: Logger) -> list[str]:
    item = claim.item
    config = settings.config
    targets = _bounce_targets(item.sender, settings, log)
    spool = Spool(config.spooldir)
    message_id = spool.new_message_id()
    now = system.now()
    arrival = datetime.fromtimestamp(claim.arrival).astimezone()
    context = BounceContext(
        mailname=settings.mailname,
        queue_id=item.id.rsplit(".", 1)[0],
        arrival_date=rfc5322_date(arrival),
        date=rfc5322_date(now),
        message_id=make_message_id(int(now.timestamp()), message_id, system.random_hex(4),
                                   settings.mailname),
        boundary="=_pydma_" + system.random_hex(12),
        original_sender=item.sender,
        full=config.fullbounce,
    )
    items = [
        QueueItem(id=make_item_id(message_id, index), sender="", recipient=target.address)
        for index, target in enumerate(targets)
    ]
    with spool.begin() as writer, open(claim.message_path, "rb") as original:
        writer.file.writelines(build_bounce(original, failures, context))
        spool.commit(writer, message_id, items)
    return [new.id for new in items]
