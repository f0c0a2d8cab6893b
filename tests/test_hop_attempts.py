"""The next-address decision of one hop and what its connections add up to (SPEC 5.3, 5.6)."""

from __future__ import annotations

from typing import Literal

import pytest

from dma.core.errors import SoftwareError
from dma.core.hop_attempts import (
    CREDENTIALS_REFUSED,
    NO_HOST_REACHED,
    HopAttempts,
    HopDone,
    HopTarget,
    LeaveHost,
    SessionResult,
    SkipHost,
    Step,
    TryAddress,
)
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.routing import Target

CREDS = ("login", "secret")
OTHER = ("other", "secret2")

MX1 = Target("mx1.example", ("2001:db8::1", "192.0.2.1"), 10)
MX2 = Target("mx2.example", ("2001:db8::2", "192.0.2.2"), 20)
MX3 = Target("mx3.example", ("192.0.2.3",), 30)


def _try(attempts: HopAttempts) -> TryAddress:
    step = attempts.next_step()
    assert isinstance(step, TryAddress), step
    return step


def _done(attempts: HopAttempts) -> dict[str, Outcome]:
    step = attempts.next_step()
    assert isinstance(step, HopDone), step
    return dict(step.outcomes)


def _fail(text: str, auth: Literal["refused", "unusable"] | None = None) -> SessionResult:
    return SessionResult(failure=text, auth=auth)


def _walk(attempts: HopAttempts, result: SessionResult) -> list[Step]:
    """Every step until done, each connection answering ``result``."""
    steps: list[Step] = []
    while True:
        step = attempts.next_step()
        steps.append(step)
        if isinstance(step, HopDone):
            return steps
        if isinstance(step, TryAddress):
            attempts.session_ended(result)


def test_every_address_of_a_host_comes_before_the_next_host() -> None:
    """Hosts are tried in the order given, each with all its addresses (SPEC 5.3)."""
    attempts = HopAttempts([HopTarget(MX1), HopTarget(MX2)], ["a"])
    steps = _walk(attempts, _fail("refused"))
    tried = [(s.target.name, s.address) for s in steps if isinstance(s, TryAddress)]
    assert tried == [("mx1.example", "2001:db8::1"), ("mx1.example", "192.0.2.1"),
                     ("mx2.example", "2001:db8::2"), ("mx2.example", "192.0.2.2")]


def test_each_try_carries_only_the_items_not_settled() -> None:
    """An item delivered or failed at one address is not offered to the next."""
    attempts = HopAttempts([HopTarget(MX1)], ["a", "b", "c"])
    assert _try(attempts).item_ids == ("a", "b", "c")
    attempts.session_ended(SessionResult(
        settled={"a": delivered("ok"), "c": failed("no", "5.1.1")},
        retry={"b": deferred("busy")}))
    assert _try(attempts).item_ids == ("b",)


def test_nothing_more_is_tried_once_every_item_is_settled() -> None:
    """When the first address settles every item, the hop is done at once."""
    attempts = HopAttempts([HopTarget(MX1), HopTarget(MX2)], ["a", "b"])
    _try(attempts)
    attempts.session_ended(SessionResult(settled={"a": delivered("ok"),
                                                  "b": failed("no", "5.1.1")}))
    assert _done(attempts) == {"a": delivered("ok"), "b": failed("no", "5.1.1")}


def test_refused_credentials_end_the_host() -> None:
    """After a 535 the host's other addresses are not tried; the hop moves to the next host."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX2)], ["a"])
    assert _try(attempts).address == "2001:db8::1"
    attempts.session_ended(_fail("mx1: 535 no", "refused"))
    assert attempts.next_step() == LeaveHost(MX1, ("a",))
    assert _try(attempts).target == MX2


def test_no_usable_mechanism_ends_the_host() -> None:
    """A host offering no mechanism we may use is left as well: its twins offer the same."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX2, CREDS)], ["a"])
    _try(attempts)
    attempts.session_ended(_fail("mx1: no mechanism", "unusable"))
    assert attempts.next_step() == LeaveHost(MX1, ("a",))
    step = _try(attempts)
    assert (step.target, step.address) == (MX2, "2001:db8::2")


def test_host_with_just_refused_credentials_is_skipped() -> None:
    """A later host taking the credentials one host just refused is passed over."""
    attempts = HopAttempts(
        [HopTarget(MX1, CREDS), HopTarget(MX2, CREDS), HopTarget(MX3, OTHER)], ["a"])
    _try(attempts)
    attempts.session_ended(_fail("mx1: 535 no", "refused"))
    assert attempts.next_step() == LeaveHost(MX1, ("a",))
    assert attempts.next_step() == SkipHost(MX2, ("a",))
    assert _try(attempts).target == MX3


def test_host_without_credentials_is_never_skipped() -> None:
    """Refused credentials elsewhere do not keep a host that needs none from being tried."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX2)], ["a"])
    _try(attempts)
    attempts.session_ended(_fail("mx1: 535 no", "refused"))
    steps = _walk(attempts, _fail("mx2: refused"))
    assert not any(isinstance(step, SkipHost) for step in steps)
    assert [s.target for s in steps if isinstance(s, TryAddress)] == [MX2, MX2]


def test_auth_failure_with_nothing_left_is_simply_done() -> None:
    """When the items are settled anyway, no LeaveHost is given: the hop is simply done."""
    attempts = HopAttempts([HopTarget(MX1, CREDS)], ["a"])
    _try(attempts)
    attempts.session_ended(SessionResult(settled={"a": failed("no", "5.7.1")},
                                         failure="mx1: 535", auth="refused"))
    assert _done(attempts) == {"a": failed("no", "5.7.1")}


def test_settled_outcome_is_final() -> None:
    """An item settled at a later address keeps that outcome, not an earlier temporary one."""
    attempts = HopAttempts([HopTarget(MX1)], ["a"])
    _try(attempts)
    attempts.session_ended(SessionResult(retry={"a": deferred("451 later")}))
    _try(attempts)
    attempts.session_ended(SessionResult(settled={"a": delivered("250 ok")}))
    assert _done(attempts) == {"a": delivered("250 ok")}


def test_last_temporary_outcome_is_kept_for_an_open_item() -> None:
    """An item never settled ends with the latest temporary outcome a server gave it."""
    attempts = HopAttempts([HopTarget(MX1)], ["a", "b"])
    _try(attempts)
    attempts.session_ended(SessionResult(retry={"a": deferred("first")}, failure="mx1 down"))
    _try(attempts)
    attempts.session_ended(SessionResult(retry={"a": deferred("second")}))
    assert _done(attempts) == {"a": deferred("second"), "b": deferred("mx1 down")}


def test_open_item_without_temporary_outcome_is_deferred_with_last_error() -> None:
    """The last failure text wins; a connection that names no failure does not erase it."""
    attempts = HopAttempts([HopTarget(MX1), HopTarget(MX2)], ["a"])
    _try(attempts)
    attempts.session_ended(_fail("mx1: connection refused"))
    _try(attempts)
    attempts.session_ended(_fail("mx1: 421 busy"))
    _try(attempts)
    attempts.session_ended(SessionResult())
    _try(attempts)
    attempts.session_ended(SessionResult(failure=""))
    assert _done(attempts) == {"a": deferred("mx1: 421 busy")}


def test_no_failure_text_at_all_gives_the_default_reason() -> None:
    """With no host and no address to try, every item is deferred: no host reached."""
    attempts = HopAttempts([HopTarget(Target("mx.example", (), 0))], ["a", "b"])
    assert _done(attempts) == {"a": deferred(NO_HOST_REACHED), "b": deferred(NO_HOST_REACHED)}


def test_outcomes_list_settled_items_first_then_open_ones_in_order() -> None:
    """Outcomes come in the order items settled, then the open items in the order given."""
    attempts = HopAttempts([HopTarget(MX3)], ["a", "b", "c"])
    _try(attempts)
    attempts.session_ended(SessionResult(settled={"c": delivered("ok"), "a": delivered("ok")}))
    assert list(_done(attempts)) == ["c", "a", "b"]


def test_results_for_items_not_offered_are_ignored() -> None:
    """A session can only settle the items it was offered; others get no outcome from it."""
    attempts = HopAttempts([HopTarget(MX3)], ["a"])
    _try(attempts)
    attempts.session_ended(SessionResult(settled={"x": delivered("ok")},
                                         retry={"y": deferred("later")}))
    assert _done(attempts) == {"a": deferred(NO_HOST_REACHED)}


def test_asking_twice_without_a_result_is_our_bug() -> None:
    """next_step() before the last connection was reported raises SoftwareError."""
    attempts = HopAttempts([HopTarget(MX1)], ["a"])
    _try(attempts)
    with pytest.raises(SoftwareError):
        attempts.next_step()


def test_result_without_a_try_is_our_bug() -> None:
    """session_ended() with no TryAddress outstanding raises SoftwareError."""
    attempts = HopAttempts([HopTarget(MX1)], ["a"])
    with pytest.raises(SoftwareError):
        attempts.session_ended(SessionResult())


def test_credentials_stay_out_of_reprs() -> None:
    """A HopTarget's repr never shows the password (it may end up in a traceback)."""
    assert "secret" not in repr(HopTarget(MX1, CREDS))


def test_credentials_refused_on_an_earlier_hop_skip_their_hosts() -> None:
    """A login refused at another hop of this run skips every host that takes it; the
    items are deferred saying so, and hosts with other logins are still tried."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX2, OTHER)], ["a"], [CREDS])
    skipped = attempts.next_step()
    assert isinstance(skipped, SkipHost) and skipped.target == MX1
    assert _try(attempts).target == MX2
    attempts.session_ended(_fail("connection refused"))
    assert _try(attempts).target == MX2
    attempts.session_ended(_fail("connection refused"))
    assert _done(attempts) == {"a": deferred("connection refused")}
    only = HopAttempts([HopTarget(MX1, CREDS)], ["b"], [CREDS])
    assert isinstance(only.next_step(), SkipHost)
    assert _done(only) == {"b": deferred(CREDENTIALS_REFUSED)}


def test_refused_credentials_are_handed_on() -> None:
    """``refused`` lists the logins given at the start and those refused during the hop,
    for the next hop of the run."""
    attempts = HopAttempts([HopTarget(MX1, OTHER)], ["a"], [CREDS])
    _try(attempts)
    attempts.session_ended(_fail("535 5.7.8 bad login", auth="refused"))
    assert set(attempts.refused) == {CREDS, OTHER}
