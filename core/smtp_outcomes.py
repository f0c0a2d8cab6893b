"""What one SMTP transaction's replies make of its queue items (SPEC 5.4, RFC 5321 4.5.3.1.10).

The SMTP client (``dma.core.smtp``) says, per recipient, what the server answered
(``MessageDone``); this module turns that into the outcome of each item the
transaction carried, splits those into the settled ones (delivered or failed for
good: reported at once) and the ones to retry (deferred: another address, host or
run may still take them), and says which items go again in a follow-on transaction
when the server took only some of the recipients ("452 too many recipients").

Generic in the id type: the shell's item ids today, ``dma.core.ledger.AddressId``
values tomorrow.  Pure: the shell sends and reads, this decides.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Generic, TypeVar

from dma.core.bounce import status_from_reply
from dma.core.errors import SoftwareError
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.smtp_events import MessageDone, RecipientResult, Stage
from dma.core.smtp_events import Outcome as ReplyOutcome
from dma.core.values import frozen

Id = TypeVar("Id", bound=Hashable)  # an item id, or an AddressId

NO_REPLY = "no reply for this recipient"
"""The deferral reason of an item whose recipient the transaction did not answer."""
PERMANENT_WITHOUT_REPLY = 554
"""The code a permanent failure is mapped as when no reply came (refused by us)."""
TOO_MANY_RECIPIENTS = 452
"""RFC 5321 4.5.3.1.10: the recipients over the server's limit, to send again."""


@frozen
class Settlement(Generic[Id]):
    """One transaction's items: ``settled`` (delivered or failed for good, final for
    this hop) and ``retry`` (deferred: another try may still take them).  Disjoint."""

    settled: Mapping[Id, Outcome]
    retry: Mapping[Id, Outcome]


def recipient_outcome(result: RecipientResult, host: str) -> Outcome:
    """The outcome of one recipient's final result from ``host`` ("name [address]:port").

    Delivered: the server took it.  Failed (to bounce): a permanent refusal, with its
    RFC 3463 status, the reply as an ``smtp;`` diagnostic and the host's name as the
    remote MTA.  Deferred otherwise, naming the step it failed after.
    """
    reply = str(result.reply) if result.reply is not None else result.reason
    if result.outcome is ReplyOutcome.DELIVERED:
        return delivered(f"{host} said: {reply}")
    if result.outcome is ReplyOutcome.PERMANENT:
        code = result.reply.code if result.reply is not None else PERMANENT_WITHOUT_REPLY
        enhanced = result.reply.enhanced if result.reply is not None else None
        status = status_from_reply(code, enhanced, permanent=True)
        return failed(f"{host} did not like our {result.stage.value}: {reply}",
                      status, f"smtp; {reply}", host.split(" ")[0])
    return deferred(f"{host} failed after {result.stage.value}: {reply}")


def recipient_outcomes(done: MessageDone, host: str) -> dict[str, Outcome]:
    """Each recipient's outcome, by recipient, from the transaction's final results."""
    return {result.recipient: recipient_outcome(result, host) for result in done.results}


def _pairs(item_ids: Sequence[Id], item_recipients: Sequence[str]) -> zip[tuple[Id, str]]:
    if len(item_ids) != len(item_recipients):
        raise SoftwareError(
            f"{len(item_ids)} item ids but {len(item_recipients)} item recipients",
            hint="pass a transaction's item_ids with its item_recipients, in parallel",
        )
    return zip(item_ids, item_recipients, strict=True)


def item_outcomes(item_ids: Sequence[Id], item_recipients: Sequence[str],
                  by_recipient: Mapping[str, Outcome]) -> dict[Id, Outcome]:
    """Each item's outcome: its recipient's (``item_recipients`` is parallel to
    ``item_ids``); an item whose recipient has none is deferred (``NO_REPLY``)."""
    return {
        item_id: by_recipient.get(recipient, deferred(NO_REPLY))
        for item_id, recipient in _pairs(item_ids, item_recipients)
    }


def settlement(outcomes: Mapping[Id, Outcome]) -> Settlement[Id]:
    """Split outcomes into the settled (delivered, failed) and the ones to retry (deferred)."""
    settled = {i: outcome for i, outcome in outcomes.items() if outcome.kind != "deferred"}
    retry = {i: outcome for i, outcome in outcomes.items() if outcome.kind == "deferred"}
    return Settlement(settled, retry)


def transaction_settlement(item_ids: Sequence[Id], item_recipients: Sequence[str],
                           done: MessageDone, host: str) -> Settlement[Id]:
    """The items of one finished transaction, settled or to retry (the three steps above)."""
    return settlement(item_outcomes(item_ids, item_recipients, recipient_outcomes(done, host)))


def _over_the_limit(result: RecipientResult) -> bool:
    """A RCPT refused as one too many for this transaction (452, and 4.5.3 if enhanced)."""
    return (result.stage is Stage.RCPT and result.reply is not None
            and result.reply.code == TOO_MANY_RECIPIENTS
            and result.reply.enhanced in (None, "4.5.3"))


def follow_on(item_ids: Sequence[Id], item_recipients: Sequence[str],
              done: MessageDone) -> tuple[Id, ...]:
    """The items to send again, now, in another transaction of the same connection.

    Those whose recipient was refused with "452 too many recipients" (RFC 5321
    4.5.3.1.10), and only when the server took at least one recipient of this
    transaction: each further transaction then makes progress, so this ends.
    Empty when there is nothing to send again.
    """
    limited = {result.recipient for result in done.results if _over_the_limit(result)}
    if not limited or not done.delivered:
        return ()
    return tuple(item_id for item_id, recipient in _pairs(item_ids, item_recipients)
                 if recipient in limited)
