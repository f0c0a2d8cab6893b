"""The next-address decision of one hop and what its connections add up to (SPEC 5.3, 5.6)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Literal, TypeVar

import pytest

from dma.core.credentials import Credentials
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
    plain_retry,
)
from dma.core.ledger import AddressId
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.routing import Target
from dma.core.transport import Security

CREDS = Credentials("login", "secret")
OTHER = Credentials("other", "secret2")

MX1 = Target("mx1.example", ("2001:db8::1", "192.0.2.1"), 10)
MX2 = Target("mx2.example", ("2001:db8::2", "192.0.2.2"), 20)
MX3 = Target("mx3.example", ("192.0.2.3",), 30)

MAY = Security(False, "opportunistic", False, None)
MUST = Security(False, "required", True, None)
IMPLICIT = Security(True, "no", True, None)
HANDSHAKE = "TLS handshake failed: wrong version number"

Id = TypeVar("Id", bound=Hashable)


def _try(attempts: HopAttempts[Id]) -> TryAddress[Id]:
    step = attempts.next_step()
    assert isinstance(step, TryAddress), step
    return step


def _done(attempts: HopAttempts[Id]) -> dict[Id, Outcome]:
    step = attempts.next_step()
    assert isinstance(step, HopDone), step
    return dict(step.outcomes)


def _fail(text: str, auth: Literal["refused", "unusable"] | None = None
          ) -> SessionResult[str]:
    return SessionResult(failure=text, auth=auth)


def _walk(attempts: HopAttempts[str], result: SessionResult[str]) -> list[Step[str]]:
    """Every step until done, each connection answering ``result``."""
    steps: list[Step[str]] = []
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


def test_refused_compares_login_and_secret_only() -> None:
    """A refused login and secret skip a host that takes them with another kind or forced
    mechanism; the same login with another secret is still tried."""
    forced = Credentials("login", "secret", "password", "PLAIN")
    attempts = HopAttempts([HopTarget(MX1, forced)], ["a"], [CREDS])
    step = attempts.next_step()
    assert isinstance(step, SkipHost) and step.target == MX1
    changed = HopAttempts([HopTarget(MX3, Credentials("login", "new"))], ["a"], [CREDS])
    assert _try(changed).target == MX3


def test_refused_credentials_are_handed_on() -> None:
    """``refused`` lists the logins given at the start and those refused during the hop,
    for the next hop of the run."""
    attempts = HopAttempts([HopTarget(MX1, OTHER)], ["a"], [CREDS])
    _try(attempts)
    attempts.session_ended(_fail("535 5.7.8 bad login", auth="refused"))
    assert set(attempts.refused) == {CREDS, OTHER}


# --- what the shell needs to connect, and the plain-text retry of OPPORTUNISTIC_TLS -----


def test_each_try_carries_its_hosts_credentials_and_the_security() -> None:
    """TryAddress holds the auth.conf login of its host and the hop's TLS policy."""
    attempts = HopAttempts([HopTarget(MX3, CREDS), HopTarget(MX2)], ["a"], security=MUST)
    first = _try(attempts)
    assert (first.credentials, first.security, first.tls_fallback) == (CREDS, MUST, None)
    attempts.session_ended(_fail("down"))
    second = _try(attempts)
    assert (second.target, second.credentials, second.security) == (MX2, None, MUST)
    assert "secret" not in repr(first)


def test_failed_handshake_with_opportunistic_tls_retries_the_address_in_plain_text() -> None:
    """OPPORTUNISTIC_TLS: the same address at once, STARTTLS off, saying why; then on."""
    attempts = HopAttempts([HopTarget(MX1, CREDS)], ["a", "b"], security=MAY)
    first = _try(attempts)
    attempts.session_ended(SessionResult(failure="mx1: broke", tls_handshake_failed=HANDSHAKE))
    plain = _try(attempts)
    assert plain == TryAddress(MX1, "2001:db8::1", ("a", "b"), CREDS,
                               Security(False, "no", False, None), HANDSHAKE)
    assert plain.address == first.address
    attempts.session_ended(SessionResult(settled={"a": delivered("ok")}, failure="mx1: 421"))
    after = _try(attempts)
    assert (after.address, after.item_ids, after.security, after.tls_fallback) == \
        ("192.0.2.1", ("b",), MAY, None)


def test_plain_text_retry_is_given_once_per_address() -> None:
    """A plain-text retry reporting a handshake failure again gets no third try there."""
    attempts = HopAttempts([HopTarget(MX3)], ["a"], security=MAY)
    _try(attempts)
    attempts.session_ended(SessionResult(failure="x", tls_handshake_failed=HANDSHAKE))
    assert _try(attempts).tls_fallback == HANDSHAKE
    attempts.session_ended(SessionResult(failure="mx3: still", tls_handshake_failed=HANDSHAKE))
    assert _done(attempts) == {"a": deferred("mx3: still")}


def test_no_plain_text_retry_when_tls_is_required_or_implicit_or_unknown() -> None:
    """With TLS required, implicit, or no security given, a failed handshake moves on."""
    for security in (MUST, IMPLICIT, None):
        attempts = HopAttempts([HopTarget(MX1)], ["a"], security=security)
        _try(attempts)
        attempts.session_ended(SessionResult(failure="mx1: tls", tls_handshake_failed=HANDSHAKE))
        step = _try(attempts)
        assert (step.address, step.tls_fallback, step.security) == ("192.0.2.1", None, security)


def test_no_plain_text_retry_after_an_auth_failure_or_when_all_is_settled() -> None:
    """An auth failure leaves the host even if a handshake failure is reported too;
    with every item settled the hop is done."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX3)], ["a"], security=MAY)
    _try(attempts)
    attempts.session_ended(SessionResult(failure="535", auth="refused",
                                         tls_handshake_failed=HANDSHAKE))
    assert attempts.next_step() == LeaveHost(MX1, ("a",))
    assert _try(attempts).target == MX3
    settled = HopAttempts([HopTarget(MX1)], ["a"], security=MAY)
    _try(settled)
    settled.session_ended(SessionResult(settled={"a": delivered("ok")},
                                        tls_handshake_failed=HANDSHAKE))
    assert _done(settled) == {"a": delivered("ok")}


def test_auth_failure_on_the_plain_text_retry_leaves_that_host() -> None:
    """The plain-text retry belongs to its host: a 535 there leaves the host as usual."""
    attempts = HopAttempts([HopTarget(MX1, CREDS), HopTarget(MX2, CREDS)], ["a"],
                           security=MAY)
    _try(attempts)
    attempts.session_ended(SessionResult(failure="x", tls_handshake_failed=HANDSHAKE))
    assert _try(attempts).tls_fallback == HANDSHAKE
    attempts.session_ended(_fail("mx1: 535", "refused"))
    assert attempts.next_step() == LeaveHost(MX1, ("a",))
    assert attempts.next_step() == SkipHost(MX2, ("a",))
    assert _done(attempts) == {"a": deferred("mx1: 535")}


def test_plain_retry_decides_from_the_try_and_its_result() -> None:
    """plain_retry: only a handshake failure under opportunistic security, once."""
    tried = TryAddress(MX3, "192.0.2.3", ("a",), CREDS, MAY)
    failed_tls = SessionResult[str](tls_handshake_failed=HANDSHAKE)
    retry = plain_retry(tried, failed_tls)
    assert retry is not None and retry.security == Security(False, "no", False, None)
    assert (retry.address, retry.credentials, retry.tls_fallback) == \
        ("192.0.2.3", CREDS, HANDSHAKE)
    assert plain_retry(retry, failed_tls) is None
    assert plain_retry(tried, SessionResult[str](failure="mx3: 421")) is None
    assert plain_retry(TryAddress(MX3, "192.0.2.3", ("a",), None, MUST), failed_tls) is None
    assert plain_retry(TryAddress(MX3, "192.0.2.3", ("a",)), failed_tls) is None


def test_ids_may_be_address_ids() -> None:
    """Address ids go through as item ids do: offered, settled and in the outcomes."""
    one, two = AddressId("m.1"), AddressId("m.1", 1)
    attempts = HopAttempts([HopTarget(MX3)], [one, two])
    assert _try(attempts).item_ids == (one, two)
    attempts.session_ended(SessionResult(settled={two: delivered("ok")}))
    assert _done(attempts) == {two: delivered("ok"), one: deferred(NO_HOST_REACHED)}
