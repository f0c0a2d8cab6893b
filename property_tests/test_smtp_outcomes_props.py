"""Properties of what a transaction's replies make of its items: one outcome each, no overlap."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.smtp import MessageDone, RecipientResult, Stage, classify
from dma.core.smtp_outcomes import follow_on, transaction_settlement
from dma.core.smtp_reply import Reply

HOST = "mx.example [192.0.2.1]:25"
RECIPIENTS = [f"r{n}@x.example" for n in range(5)]
CODES = st.sampled_from([250, 251, 354, 421, 450, 451, 452, 530, 550, 552, 553, 554])
ENHANCED = st.sampled_from([None, "4.5.3", "4.2.2", "5.1.1", "2.0.0"])
STAGES = st.sampled_from([Stage.MAIL, Stage.RCPT, Stage.DATA, Stage.DATA_END, Stage.LOCAL])


@st.composite
def results(draw: st.DrawFn, recipient: str) -> RecipientResult:
    """One recipient's final result as the client would give it (outcome by classify)."""
    stage = draw(STAGES)
    if draw(st.booleans()):
        reply = Reply(draw(CODES), ("text",), draw(ENHANCED))
        return RecipientResult(recipient, classify(reply, stage), stage, reply, str(reply))
    outcome = classify(Reply(draw(st.sampled_from([451, 554])), ()), Stage.MAIL)
    return RecipientResult(recipient, outcome, stage, None, "no reply")


@st.composite
def transactions(draw: st.DrawFn) -> tuple[list[str], list[str], MessageDone]:
    """Item ids, each item's recipient, and results for some of the recipients."""
    item_recipients = draw(st.lists(st.sampled_from(RECIPIENTS), min_size=1, max_size=8))
    item_ids = [f"m.{n}" for n in range(len(item_recipients))]
    answered = draw(st.lists(st.sampled_from(RECIPIENTS), unique=True))
    done = MessageDone(tuple(draw(results(recipient)) for recipient in answered))
    return item_ids, item_recipients, done


@settings(max_examples=400, deadline=None)
@given(transactions())
def test_every_item_gets_exactly_one_outcome(
    transaction: tuple[list[str], list[str], MessageDone]
) -> None:
    """Settled and retry are disjoint and together hold every item; settled ones are
    delivered or failed, the rest deferred."""
    ids, recipients, done = transaction
    split = transaction_settlement(ids, recipients, done, HOST)
    assert not set(split.settled) & set(split.retry)
    assert set(split.settled) | set(split.retry) == set(ids)
    assert all(o.kind in ("delivered", "failed") for o in split.settled.values())
    assert all(o.kind == "deferred" for o in split.retry.values())
    answered = {result.recipient for result in done.results}
    for item_id, recipient in zip(ids, recipients, strict=True):
        if recipient not in answered:
            assert split.retry[item_id].detail == "no reply for this recipient"


@settings(max_examples=400, deadline=None)
@given(transactions())
def test_follow_on_items_are_open_and_only_after_progress(
    transaction: tuple[list[str], list[str], MessageDone]
) -> None:
    """The items sent again are ones to retry, in the order given, and there are none
    unless the server took a recipient of the transaction."""
    ids, recipients, done = transaction
    again = follow_on(ids, recipients, done)
    split = transaction_settlement(ids, recipients, done, HOST)
    assert set(again) <= set(split.retry)
    assert list(again) == [i for i in ids if i in again]
    if again:
        assert done.delivered
