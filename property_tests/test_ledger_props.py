"""Properties of the run ledger: whatever the sessions report, in whatever order, every
item ends with exactly one decision and no address is lost or sent twice (SPEC 5.1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.ledger import (
    AddressId,
    Change,
    Deferred,
    Delivered,
    Failed,
    Ledger,
    Moment,
    Narrowed,
)
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.queuefile import QueueItem
from dma.core.routing import recipient_parts

LIFETIME = 1000
OUTCOMES = st.sampled_from([
    delivered("250 ok"), delivered("mailbox /var/mail/u"),
    deferred("451 later"), deferred("connection refused"),
    failed("550 no such user", "5.1.1", "smtp; 550 no such user", "mx.example"),
    failed("552 too big", "5.3.4"),
])


@st.composite
def items(draw: st.DrawFn) -> list[tuple[QueueItem, float]]:
    """Queue items with one to four addresses each, some of them old enough to expire."""
    found = []
    for n in range(draw(st.integers(1, 5))):
        parts = [f"u{n}x{k}@d{k % 2}.example" for k in range(draw(st.integers(1, 4)))]
        arrival = draw(st.sampled_from([0.0, 5000.0]))
        found.append((QueueItem(f"m{n}.0", "s@x.example", ",".join(parts)), arrival))
    return found


def _bounced(outcome: Outcome, item: QueueItem) -> list[str]:
    """The addresses a bounce made from ``outcome`` names (shell/bouncing's rule)."""
    if outcome.parts:
        return [part for part, own in outcome.parts_of("failed")]
    return list(recipient_parts(item.recipient))


@settings(max_examples=400, deadline=None)
@given(items(), st.data())
def test_every_item_gets_one_decision_and_no_address_is_lost_or_doubled(
    queued: list[tuple[QueueItem, float]], data: st.DataObject
) -> None:
    """For any reports (repeats, unknown ids and all), each item is decided once; each
    address is delivered, bounced or still queued, exactly one of the three; delivered
    addresses leave the Q file and bounced ones are not queued again."""
    ledger = Ledger(lifetime=LIFETIME)
    addresses = {}
    for item, arrival in queued:
        for address in ledger.add(item, arrival):
            addresses[address.id] = address.recipient
    known = sorted(addresses)
    ids = st.one_of(st.sampled_from(known), st.builds(AddressId, st.just("nope.0"),
                                                       st.integers(0, 2)))
    reports = data.draw(st.lists(st.tuples(ids, OUTCOMES), max_size=20))
    changes: list[Change] = []
    first: dict[AddressId, Outcome] = {}
    for address_id, outcome in reports:
        if address_id in addresses:
            first.setdefault(address_id, outcome)
        made = ledger.record(address_id, outcome, Moment(4000.0, 0.5))
        sent_so_far = {addresses[i] for i, o in first.items() if o.kind == "delivered"}
        for change in made:  # a delivered address leaves the Q file at once, others stay
            if isinstance(change, Narrowed):
                left = set(recipient_parts(change.item.recipient))
                mine = {addresses[i] for i in first if i.item_id == change.item.id}
                assert not left & sent_so_far
                assert left >= {addresses[i] for i in addresses
                                if i.item_id == change.item.id} - mine
        changes.extend(made)
    changes.extend(ledger.close(Moment(4000.0, 0.5)))
    changes.extend(ledger.close(Moment(4000.0, 0.5)))  # a second close changes nothing
    assert ledger.undecided() == ()

    decisions = [c for c in changes if not isinstance(c, Narrowed)]
    assert sorted(d.item.id for d in decisions) == sorted(item.id for item, _ in queued)
    for item, arrival in queued:
        mine = [d for d in decisions if d.item.id == item.id]
        (decision,) = mine
        parts = recipient_parts(item.recipient)
        outcomes = [first.get(AddressId(item.id, n), deferred("no outcome reported"))
                    for n in range(len(parts))]
        sent = {parts[n] for n, o in enumerate(outcomes) if o.kind == "delivered"}
        refused = {parts[n] for n, o in enumerate(outcomes) if o.kind == "failed"}
        waiting = {parts[n] for n, o in enumerate(outcomes) if o.kind == "deferred"}
        if isinstance(decision, Delivered):
            assert sent == set(parts)
        elif isinstance(decision, Failed):
            bounced = set(_bounced(decision.outcome, decision.item))
            assert not bounced & sent
            assert bounced == refused | waiting
            assert decision.expired == bool(waiting)
            if waiting:
                assert arrival == 0.0  # only an old item expires
        else:
            assert isinstance(decision, Deferred)
            assert waiting and arrival != 0.0
            queued_again = set(recipient_parts(decision.rescheduled.recipient))
            assert queued_again == waiting
            assert decision.rescheduled.attempts == item.attempts + 1
            assert decision.rescheduled.next_try is not None
            if refused:
                assert decision.bounce is not None and decision.unbounced is not None
                assert set(_bounced(decision.bounce, item)) == refused
                assert set(recipient_parts(decision.unbounced.recipient)) == refused | waiting
            else:
                assert decision.bounce is None


@settings(max_examples=200, deadline=None)
@given(items(), st.permutations(range(12)), st.data())
def test_the_order_of_reports_does_not_change_the_decisions(
    queued: list[tuple[QueueItem, float]], order: list[int], data: st.DataObject
) -> None:
    """Connections report in any order: with one outcome per address, the decisions are
    the same whatever order they arrive in."""
    first = Ledger(lifetime=LIFETIME)
    second = Ledger(lifetime=LIFETIME)
    ids = []
    for item, arrival in queued:
        ids.extend(address.id for address in first.add(item, arrival))
        second.add(item, arrival)
    outcomes = {address_id: data.draw(OUTCOMES) for address_id in ids}
    at = Moment(4000.0, 0.25)
    forward = [c for i in ids for c in first.record(i, outcomes[i], at)
               if not isinstance(c, Narrowed)]
    shuffled = sorted(ids, key=lambda i: order[ids.index(i) % len(order)])
    backward = [c for i in reversed(shuffled) for c in second.record(i, outcomes[i], at)
                if not isinstance(c, Narrowed)]
    assert sorted(forward, key=lambda d: d.item.id) == sorted(backward, key=lambda d: d.item.id)
