"""What one transaction's replies make of its queue items (dma.core.smtp_outcomes): exact values."""

from __future__ import annotations

import pytest

from dma.core.errors import SoftwareError
from dma.core.ledger import AddressId
from dma.core.outcomes import deferred, delivered, failed
from dma.core.smtp import (
    Envelope,
    MessageDone,
    Outcome,
    Ready,
    ReadyForData,
    RecipientResult,
    SessionPolicy,
    SmtpClient,
    Stage,
)
from dma.core.smtp_outcomes import (
    NO_REPLY,
    Settlement,
    follow_on,
    item_outcomes,
    recipient_outcome,
    recipient_outcomes,
    settlement,
    transaction_settlement,
)
from dma.core.smtp_reply import Reply, ReplyParser

HOST = "mx.example [192.0.2.1]:25"


def reply(wire: bytes) -> Reply:
    """The one reply in ``wire``, parsed as the client parses it."""
    (parsed,) = ReplyParser().feed(wire)
    return parsed


def result(recipient: str, outcome: Outcome, stage: Stage, wire: bytes | None,
           reason: str = "") -> RecipientResult:
    """A recipient's final result with the reply in ``wire`` (None: no reply)."""
    parsed = reply(wire) if wire is not None else None
    return RecipientResult(recipient, outcome, stage, parsed, reason or str(parsed))


OK = result("a@x.example", Outcome.DELIVERED, Stage.DATA_END, b"250 2.0.0 queued as X\r\n")
UNKNOWN = result("b@x.example", Outcome.PERMANENT, Stage.RCPT,
                 b"550-5.1.1 no such user\r\n550 5.1.1 really\r\n")
LATER = result("c@x.example", Outcome.TEMPORARY, Stage.MAIL, b"451 4.3.0 try later\r\n")
TOO_MANY = result("d@x.example", Outcome.TEMPORARY, Stage.RCPT,
                  b"452 4.5.3 too many recipients\r\n")


def test_accepted_recipient_is_delivered_with_the_servers_words() -> None:
    """A recipient the server took is delivered, saying which host said what."""
    assert recipient_outcome(OK, HOST) == delivered(
        "mx.example [192.0.2.1]:25 said: 250 2.0.0 queued as X")


def test_permanent_refusal_fails_with_status_diagnostic_and_remote_mta() -> None:
    """A 5xx to RCPT fails: the server's enhanced code, an smtp; diagnostic, the host name."""
    assert recipient_outcome(UNKNOWN, HOST) == failed(
        "mx.example [192.0.2.1]:25 did not like our RCPT TO: "
        "550 5.1.1 no such user / 5.1.1 really",
        "5.1.1",
        "smtp; 550 5.1.1 no such user / 5.1.1 really",
        "mx.example",
    )


def test_permanent_refusal_without_enhanced_code_maps_the_basic_code() -> None:
    """A 553 without an enhanced code becomes 5.1.3, as RFC 3463 suggests."""
    bad = result("b@x.example", Outcome.PERMANENT, Stage.RCPT, b"553 bad address\r\n")
    assert recipient_outcome(bad, HOST) == failed(
        "mx.example [192.0.2.1]:25 did not like our RCPT TO: 553 bad address",
        "5.1.3", "smtp; 553 bad address", "mx.example")


def test_permanent_refusal_without_a_reply_uses_the_reason_and_5_0_0() -> None:
    """Refused by our own checks (no reply): the reason is the diagnostic, status 5.0.0."""
    ours = result("b@x.example", Outcome.PERMANENT, Stage.LOCAL, None,
                  "the server does not offer SMTPUTF8")
    assert recipient_outcome(ours, HOST) == failed(
        "mx.example [192.0.2.1]:25 did not like our before sending: "
        "the server does not offer SMTPUTF8",
        "5.0.0", "smtp; the server does not offer SMTPUTF8", "mx.example")


def test_temporary_failure_defers_naming_the_step() -> None:
    """A 4xx defers the recipient, saying which step it failed after."""
    assert recipient_outcome(LATER, HOST) == deferred(
        "mx.example [192.0.2.1]:25 failed after MAIL FROM: 451 4.3.0 try later")


def test_lost_connection_defers_with_the_reason() -> None:
    """A recipient left without a reply (the connection broke) defers with the reason."""
    lost = result("c@x.example", Outcome.TEMPORARY, Stage.DATA_END, None, "connection lost")
    assert recipient_outcome(lost, HOST) == deferred(
        "mx.example [192.0.2.1]:25 failed after end of data: connection lost")


def test_recipient_outcomes_are_keyed_by_recipient() -> None:
    """Each recipient of the transaction gets its own outcome."""
    outcomes = recipient_outcomes(MessageDone((OK, UNKNOWN, LATER)), HOST)
    assert list(outcomes) == ["a@x.example", "b@x.example", "c@x.example"]
    assert [o.kind for o in outcomes.values()] == ["delivered", "failed", "deferred"]


def test_items_share_their_recipients_outcome_and_one_without_a_reply_is_deferred() -> None:
    """Two items of one recipient share its outcome; an item whose recipient got no
    result is deferred with "no reply for this recipient"."""
    by_recipient = {"a@x.example": delivered("ok")}
    outcomes = item_outcomes(("m.1", "m.2", "m.3"),
                             ("a@x.example", "a@x.example", "z@x.example"), by_recipient)
    assert outcomes == {"m.1": delivered("ok"), "m.2": delivered("ok"),
                        "m.3": deferred("no reply for this recipient")}
    assert NO_REPLY == "no reply for this recipient"


def test_settlement_splits_final_outcomes_from_those_to_retry() -> None:
    """Delivered and failed are settled; deferred go to retry; nothing is in both."""
    split = settlement({"m.1": delivered("ok"), "m.2": deferred("later"),
                        "m.3": failed("no", "5.1.1")})
    assert split == Settlement({"m.1": delivered("ok"), "m.3": failed("no", "5.1.1")},
                               {"m.2": deferred("later")})


def test_transaction_settlement_takes_a_transactions_ids_and_recipients() -> None:
    """From MessageDone to settled and retry in one call, exact texts."""
    done = MessageDone((OK, UNKNOWN, LATER))
    split = transaction_settlement(
        ("m.1", "m.2", "m.3", "m.4"),
        ("a@x.example", "b@x.example", "c@x.example", "e@x.example"), done, HOST)
    assert split.settled == {
        "m.1": delivered("mx.example [192.0.2.1]:25 said: 250 2.0.0 queued as X"),
        "m.2": recipient_outcome(UNKNOWN, HOST),
    }
    assert split.retry == {
        "m.3": deferred("mx.example [192.0.2.1]:25 failed after MAIL FROM: 451 4.3.0 try later"),
        "m.4": deferred("no reply for this recipient"),
    }


def test_ids_may_be_address_ids() -> None:
    """The ids are passed through untouched: AddressId values work as strings do."""
    first, second = AddressId("m.1"), AddressId("m.2", 1)
    split = transaction_settlement((first, second), ("a@x.example", "d@x.example"),
                                   MessageDone((OK, TOO_MANY)), HOST)
    assert list(split.settled) == [first] and list(split.retry) == [second]
    assert follow_on((first, second), ("a@x.example", "d@x.example"),
                     MessageDone((OK, TOO_MANY))) == (second,)


def test_ids_and_recipients_of_different_lengths_are_our_bug() -> None:
    """item_ids and item_recipients not in parallel raise SoftwareError, not a silent cut."""
    with pytest.raises(SoftwareError):
        item_outcomes(("m.1", "m.2"), ("a@x.example",), {})
    with pytest.raises(SoftwareError):
        follow_on(("m.1",), ("a@x.example", "d@x.example"), MessageDone((OK, TOO_MANY)))


def test_recipients_over_the_limit_go_again_when_one_was_taken() -> None:
    """452 too many recipients, with another recipient taken: those items go again."""
    done = MessageDone((OK, TOO_MANY))
    assert follow_on(("m.1", "m.2", "m.3"),
                     ("a@x.example", "d@x.example", "d@x.example"), done) == ("m.2", "m.3")


def test_plain_452_counts_as_too_many_recipients() -> None:
    """A 452 without an enhanced code is taken as the limit as well."""
    bare = result("d@x.example", Outcome.TEMPORARY, Stage.RCPT, b"452 too many\r\n")
    assert follow_on(("m.1", "m.2"), ("a@x.example", "d@x.example"),
                     MessageDone((OK, bare))) == ("m.2",)


def test_no_follow_on_when_the_server_took_nobody() -> None:
    """When no recipient was taken, a further transaction would make no progress: none."""
    assert follow_on(("m.2",), ("d@x.example",), MessageDone((TOO_MANY,))) == ()


def test_other_452s_and_other_stages_are_no_limit() -> None:
    """452 4.2.2 (mailbox full) or a 452 to MAIL is no recipient limit: no follow-on."""
    full = result("d@x.example", Outcome.TEMPORARY, Stage.RCPT, b"452 4.2.2 mailbox full\r\n")
    at_mail = result("d@x.example", Outcome.TEMPORARY, Stage.MAIL, b"452 4.5.3 too many\r\n")
    ids, recipients = ("m.1", "m.2"), ("a@x.example", "d@x.example")
    assert follow_on(ids, recipients, MessageDone((OK, full))) == ()
    assert follow_on(ids, recipients, MessageDone((OK, at_mail))) == ()
    assert follow_on(ids, recipients, MessageDone((OK, LATER))) == ()


def _session_to_message_done(replies: list[bytes]) -> MessageDone:
    """Run the real client through one transaction with two recipients, the server
    answering ``replies`` after EHLO; its MessageDone."""
    client = SmtpClient(SessionPolicy("client.example", "no", False))
    pending = [b"220 mx ESMTP\r\n", b"250 mx\r\n", *replies]
    while True:
        event = client.next_event()
        if event is None:
            client.receive_data(pending.pop(0))
        elif isinstance(event, MessageDone):
            return event
        elif isinstance(event, ReadyForData):
            list(client.send_data_lines([b"hi\n"]))
        elif isinstance(event, Ready):
            client.send_message(Envelope("s@here.example",
                                         ("a@x.example", "d@x.example"), 3, False))


def test_the_real_clients_message_done_gives_the_follow_on() -> None:
    """A server taking one recipient and refusing the next as one too many: the client's
    MessageDone settles the first item and sends the second again."""
    done = _session_to_message_done([
        b"250 ok\r\n", b"250 ok\r\n", b"452 4.5.3 too many recipients\r\n",
        b"354 go\r\n", b"250 queued\r\n"])
    ids, recipients = ("m.1", "m.2"), ("a@x.example", "d@x.example")
    split = transaction_settlement(ids, recipients, done, HOST)
    assert split.settled == {"m.1": delivered("mx.example [192.0.2.1]:25 said: 250 queued")}
    assert split.retry == {"m.2": deferred(
        "mx.example [192.0.2.1]:25 failed after RCPT TO: 452 4.5.3 too many recipients")}
    assert follow_on(ids, recipients, done) == ("m.2",)
