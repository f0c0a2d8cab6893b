"""Properties of the next-address decision: whatever the servers say, it behaves (SPEC 5.3)."""

from __future__ import annotations

from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.hop_attempts import (
    CREDENTIALS_REFUSED,
    NO_HOST_REACHED,
    HopAttempts,
    HopDone,
    HopTarget,
    LeaveHost,
    SessionResult,
    SkipHost,
    TryAddress,
)
from dma.core.outcomes import Outcome, deferred, delivered, failed
from dma.core.routing import Target

CREDENTIALS = st.sampled_from([None, ("a", "pw"), ("b", "pw")])
AUTH: st.SearchStrategy[Literal["refused", "unusable"] | None] = st.sampled_from(
    [None, None, None, "refused", "unusable"])
SETTLED = st.sampled_from([delivered("250 ok"), failed("550 no", "5.1.1")])


@st.composite
def hops(draw: st.DrawFn) -> tuple[list[HopTarget], list[str]]:
    """Hosts with distinct names and addresses, their credentials, and the item ids."""
    counts = draw(st.lists(st.integers(0, 3), max_size=5))
    targets = []
    serial = 0
    for n, count in enumerate(counts):
        addresses = tuple(f"192.0.2.{serial + k}" for k in range(count))
        serial += count
        targets.append(HopTarget(Target(f"mx{n}.example", addresses, n), draw(CREDENTIALS)))
    ids = [f"id{n}" for n in range(draw(st.integers(1, 6)))]
    return targets, ids


@settings(max_examples=300, deadline=None)
@given(hops(), st.data())
def test_any_session_results_lead_to_one_outcome_per_item(
    hop: tuple[list[HopTarget], list[str]], data: st.DataObject
) -> None:
    """It ends; no address twice, none once all is settled or after an auth failure at its
    host, none of a host whose credentials were refused; one outcome per item, as ruled."""
    targets, ids = hop
    credentials = {t.target.name: t.credentials for t in targets}
    attempts = HopAttempts(targets, ids)
    total = sum(len(t.target.addresses) for t in targets)
    tried: list[str] = []
    settled: dict[str, Outcome] = {}
    temporary: dict[str, Outcome] = {}
    last_error = NO_HOST_REACHED
    auth_failed: set[str] = set()
    refused: set[tuple[str, str]] = set()
    for _ in range(total + 2 * len(targets) + 1):  # each step uses up an address or a host
        step = attempts.next_step()
        if isinstance(step, HopDone):
            break
        if isinstance(step, SkipHost) and last_error == NO_HOST_REACHED:
            last_error = CREDENTIALS_REFUSED  # the reason, unless a connection gave one
        if isinstance(step, (SkipHost, LeaveHost)):
            continue
        assert isinstance(step, TryAddress)
        assert step.address not in tried
        assert step.target.name not in auth_failed
        assert credentials[step.target.name] not in refused
        open_ids = tuple(i for i in ids if i not in settled)
        assert open_ids and step.item_ids == open_ids
        tried.append(step.address)
        settles = data.draw(st.lists(st.sampled_from(open_ids), unique=True))
        retries = data.draw(st.lists(st.sampled_from(open_ids), unique=True))
        result = SessionResult(
            settled={i: data.draw(SETTLED) for i in settles},
            retry={i: deferred(f"451 {i} at {step.address}") for i in retries
                   if i not in settles},
            failure=data.draw(st.sampled_from([None, f"{step.address}: broke"])),
            auth=data.draw(AUTH),
        )
        attempts.session_ended(result)
        settled.update(result.settled)
        temporary.update(result.retry)
        last_error = result.failure or last_error
        if result.auth is not None:
            auth_failed.add(step.target.name)
            key = credentials[step.target.name]
            if result.auth == "refused" and key is not None:
                refused.add(key)
    else:
        raise AssertionError("no HopDone within the bound")
    assert len(tried) <= total
    assert list(step.outcomes) == list(settled) + [i for i in ids if i not in settled]
    for item_id in ids:
        expected = settled.get(item_id) or temporary.get(item_id, deferred(last_error))
        assert step.outcomes[item_id] == expected


@settings(max_examples=200, deadline=None)
@given(hops())
def test_with_no_answer_every_address_is_tried_in_order(
    hop: tuple[list[HopTarget], list[str]]
) -> None:
    """When every connection fails without AUTH trouble, each address is tried once, in order."""
    targets, ids = hop
    attempts = HopAttempts(targets, ids)
    tried = []
    while not isinstance(step := attempts.next_step(), HopDone):
        assert isinstance(step, TryAddress)
        tried.append(step.address)
        attempts.session_ended(SessionResult(failure="down"))
    assert tried == [a for t in targets for a in t.target.addresses]
    expected = deferred("down" if tried else NO_HOST_REACHED)
    assert dict(step.outcomes) == dict.fromkeys(ids, expected)
