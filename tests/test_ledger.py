"""The run ledger on examples: one item, a comma list, expiry, late and repeated reports."""

from __future__ import annotations

from dma.core.ledger import (
    NO_OUTCOME,
    Address,
    AddressId,
    Deferred,
    Delivered,
    Failed,
    Ledger,
    Moment,
    Narrowed,
)
from dma.core.outcomes import deferred, delivered, failed
from dma.core.queuefile import QueueItem
from dma.core.retry import FIRST_DELAY

DAY = 86400
AT = Moment(10 * DAY, 0.0)
SINGLE = QueueItem("a1.0", "s@x.example", "bob@y.example")
LIST = QueueItem("b2.0", "s@x.example", "a@y.example, b@z.example,c@y.example", attempts=2)


def _ledger(*items: QueueItem, arrival: float = 10 * DAY - 60) -> Ledger:
    ledger = Ledger(lifetime=5 * DAY)
    for item in items:
        ledger.add(item, arrival)
    return ledger


def test_an_item_has_one_address_per_part_of_its_recipient() -> None:
    """A plain item is one address (part 0); a comma list one per part, blanks stripped."""
    ledger = Ledger(lifetime=DAY)
    assert ledger.add(SINGLE, 0) == (Address(AddressId("a1.0", 0), "bob@y.example"),)
    assert [a.recipient for a in ledger.add(LIST, 0)] == ["a@y.example", "b@z.example",
                                                           "c@y.example"]
    assert str(AddressId("b2.0", 2)) == "b2.0"


def test_a_single_delivered_address_decides_at_once() -> None:
    """One report settles a plain item: delivered, with the server's words."""
    ledger = _ledger(SINGLE)
    changes = ledger.record(AddressId("a1.0"), delivered("250 ok"), AT)
    assert changes == (Delivered(SINGLE, "250 ok"),)
    assert ledger.is_decided("a1.0")
    assert ledger.record(AddressId("a1.0"), failed("550 no", "5.1.1"), AT) == ()


def test_a_deferred_item_is_rescheduled_with_its_reason() -> None:
    """A temporary failure counts an attempt and sets the next try from the moment given."""
    ledger = _ledger(SINGLE)
    (decision,) = ledger.record(AddressId("a1.0"), deferred("451 greylisted"), AT)
    assert isinstance(decision, Deferred)
    assert decision.reason == "451 greylisted"
    assert decision.rescheduled.attempts == 1
    assert decision.rescheduled.next_try == AT.now + FIRST_DELAY
    assert decision.rescheduled.last_error == "451 greylisted"
    assert decision.bounce is None


def test_a_refused_item_fails_with_the_servers_outcome() -> None:
    """A permanent failure of a plain item is bounced with that very outcome."""
    refusal = failed("550 no such user", "5.1.1", "smtp; 550 no such user", "mx.y.example")
    ledger = _ledger(SINGLE)
    assert ledger.record(AddressId("a1.0"), refusal, AT) == (Failed(SINGLE, refusal),)


def test_an_item_deferred_past_its_lifetime_expires() -> None:
    """Deferred again after QUEUELIFETIME: bounced with status 4.4.7 and the last error
    as the diagnostic."""
    ledger = _ledger(SINGLE, arrival=AT.now - 5 * DAY - 1)
    (decision,) = ledger.record(AddressId("a1.0"), deferred("451 4.3.0 try later"), AT)
    assert isinstance(decision, Failed) and decision.expired
    assert decision.outcome.status == "4.4.7"
    assert decision.outcome.diagnostic == "smtp; 451 4.3.0 try later"


def test_list_parts_delivered_leave_the_q_file_at_once() -> None:
    """Each delivered part is taken out of the Recipient before the others are known."""
    ledger = _ledger(LIST)
    (first,) = ledger.record(AddressId("b2.0", 1), delivered("250 ok"), AT)
    assert first == Narrowed(QueueItem("b2.0", "s@x.example", "a@y.example,c@y.example",
                                       attempts=2))
    assert ledger.record(AddressId("b2.0", 0), deferred("451 later"), AT) == ()
    (decision,) = ledger.record(AddressId("b2.0", 2), delivered("250 ok"), AT)
    assert isinstance(decision, Deferred)
    assert decision.rescheduled.recipient == "a@y.example"
    assert decision.reason == "a@y.example: 451 later"


def test_a_list_with_refused_and_deferred_parts_bounces_the_refused_and_keeps_the_rest() -> None:
    """Refused parts bounce, each with its own reason; deferred ones stay queued; if the
    bounce cannot be made the refused ones stay queued too."""
    ledger = _ledger(LIST)
    ledger.record(AddressId("b2.0", 0), failed("550 unknown", "5.1.1"), AT)
    ledger.record(AddressId("b2.0", 1), deferred("451 later"), AT)
    (decision,) = ledger.record(AddressId("b2.0", 2), delivered("250 ok"), AT)
    assert isinstance(decision, Deferred) and decision.bounce is not None
    assert decision.bounce.parts == (("a@y.example", failed("550 unknown", "5.1.1")),)
    assert decision.rescheduled.recipient == "b@z.example"
    assert decision.unbounced is not None
    assert decision.unbounced.recipient == "a@y.example,b@z.example"
    assert decision.rescheduled.attempts == decision.unbounced.attempts == 3


def test_a_list_whose_open_parts_all_failed_bounces_each_with_its_reason() -> None:
    """Every part not delivered was refused: one bounce, each part with its own outcome."""
    ledger = _ledger(LIST)
    ledger.record(AddressId("b2.0", 0), failed("550 unknown", "5.1.1"), AT)
    ledger.record(AddressId("b2.0", 1), delivered("250 ok"), AT)
    (decision,) = ledger.record(AddressId("b2.0", 2), failed("552 full", "5.2.2"), AT)
    assert isinstance(decision, Failed) and not decision.expired
    assert [part for part, _ in decision.outcome.parts] == ["a@y.example", "c@y.example"]
    assert decision.outcome.status == "5.1.1"


def test_an_expired_list_bounces_refused_and_waiting_parts_together() -> None:
    """Past its lifetime, a list's waiting parts bounce as expired beside the refused ones."""
    ledger = _ledger(LIST, arrival=0)
    ledger.record(AddressId("b2.0", 0), deferred("451 later"), AT)
    ledger.record(AddressId("b2.0", 1), failed("550 unknown", "5.1.1"), AT)
    (decision,) = ledger.record(AddressId("b2.0", 2), deferred("451 later"), AT)
    assert isinstance(decision, Failed) and decision.expired
    statuses = {part: own.status for part, own in decision.outcome.parts}
    assert statuses == {"a@y.example": "4.4.7", "b@z.example": "5.1.1", "c@y.example": "4.4.7"}


def test_close_defers_what_nobody_reported_on() -> None:
    """At the end of the run, open addresses are deferred with NO_OUTCOME; decided items
    are left alone; unknown ids never change anything."""
    ledger = _ledger(SINGLE, LIST)
    assert ledger.record(AddressId("zz.0"), delivered("250"), AT) == ()
    assert ledger.record(AddressId("b2.0", 7), delivered("250"), AT) == ()
    ledger.record(AddressId("a1.0"), delivered("250 ok"), AT)
    (decision,) = ledger.close(AT)
    assert isinstance(decision, Deferred)
    assert decision.item.id == "b2.0" and decision.reason == NO_OUTCOME
    assert ledger.undecided() == ()
    assert ledger.close(AT) == ()


def test_defer_open_gives_one_reason_to_the_rest_of_an_item() -> None:
    """An item whose handling broke: its open addresses are deferred with that reason."""
    ledger = _ledger(LIST)
    ledger.record(AddressId("b2.0", 0), delivered("250 ok"), AT)
    (decision,) = ledger.defer_open("b2.0", "internal error: boom", AT)
    assert isinstance(decision, Deferred)
    assert decision.rescheduled.recipient == "b@z.example,c@y.example"
    assert decision.reason == "b@z.example, c@y.example: internal error: boom"


def test_forget_drops_only_decided_items() -> None:
    """A decided item's book can be dropped; an undecided one stays and still decides."""
    ledger = _ledger(SINGLE, LIST)
    ledger.record(AddressId("a1.0"), delivered("250 ok"), AT)
    ledger.forget("a1.0")
    ledger.forget("b2.0")
    assert not ledger.is_decided("a1.0")
    assert ledger.record(AddressId("a1.0"), failed("550 no", "5.1.1"), AT) == ()
    assert ledger.undecided() == ("b2.0",)
    assert len(ledger.close(AT)) == 1
