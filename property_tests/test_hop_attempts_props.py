"""Properties of the next-address decision: whatever the servers say, it behaves (SPEC 5.3)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.credentials import Credentials
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
from dma.core.transport import Security

CREDENTIALS = st.sampled_from([
    None, Credentials("a", "pw"), Credentials("b", "pw"),
    Credentials("a", "pw", "password", "SCRAM-SHA-1"),  # the same login and secret as the 2nd
    Credentials("a", "pw2"),
])
AUTH: st.SearchStrategy[Literal["refused", "unusable"] | None] = st.sampled_from(
    [None, None, None, "refused", "unusable"])
SETTLED = st.sampled_from([delivered("250 ok"), failed("550 no", "5.1.1")])
MAY = Security(False, "opportunistic", False, None)
SECURITY = st.sampled_from([None, MAY, Security(False, "required", True, None),
                            Security(True, "no", True, None), Security(False, "no", False, None)])
HANDSHAKE = st.sampled_from([None, None, "TLS handshake failed"])


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
@given(hops(), SECURITY, st.data())
def test_any_session_results_lead_to_one_outcome_per_item(
    hop: tuple[list[HopTarget], list[str]], security: Security | None, data: st.DataObject
) -> None:
    """It ends; no address twice, none once all is settled or after an auth failure at its
    host, none of a host whose credentials were refused; one outcome per item, as ruled.
    Each try carries its host's credentials and the security; after a failed handshake
    under opportunistic security the same address comes once more in plain text, and a
    plain-text retry comes at no other time."""
    targets, ids = hop
    credentials = {t.target.name: t.credentials for t in targets}
    attempts = HopAttempts(targets, ids, security=security)
    total = sum(len(t.target.addresses) for t in targets)
    tried: list[str] = []
    plain_due: TryAddress[str] | None = None  # the try a plain-text retry must follow
    settled: dict[str, Outcome] = {}
    temporary: dict[str, Outcome] = {}
    last_error = NO_HOST_REACHED
    auth_failed: set[str] = set()
    refused: set[tuple[str, str]] = set()  # login and secret: what a server judged
    for _ in range(2 * total + 2 * len(targets) + 1):  # each step uses up a try or a host
        step = attempts.next_step()
        if isinstance(step, HopDone):
            assert plain_due is None or not [i for i in ids if i not in settled]
            break
        if plain_due is not None:
            assert isinstance(step, TryAddress) and step.tls_fallback == "TLS handshake failed"
            assert (step.target, step.address) == (plain_due.target, plain_due.address)
            assert security is not None
            assert step.security == dataclasses.replace(security, starttls="no")
        else:
            assert not isinstance(step, TryAddress) or step.tls_fallback is None
        if isinstance(step, SkipHost) and last_error == NO_HOST_REACHED:
            last_error = CREDENTIALS_REFUSED  # the reason, unless a connection gave one
        if isinstance(step, (SkipHost, LeaveHost)):
            continue
        assert isinstance(step, TryAddress)
        assert step.target.name not in auth_failed
        creds = credentials[step.target.name]
        assert creds is None or (creds.login, creds.secret) not in refused
        assert step.credentials == credentials[step.target.name]
        open_ids = tuple(i for i in ids if i not in settled)
        assert open_ids and step.item_ids == open_ids
        if step.tls_fallback is None:
            assert step.address not in tried and step.security == security
            tried.append(step.address)
        settles = data.draw(st.lists(st.sampled_from(open_ids), unique=True))
        retries = data.draw(st.lists(st.sampled_from(open_ids), unique=True))
        result = SessionResult(
            settled={i: data.draw(SETTLED) for i in settles},
            retry={i: deferred(f"451 {i} at {step.address}") for i in retries
                   if i not in settles},
            failure=data.draw(st.sampled_from([None, f"{step.address}: broke"])),
            auth=data.draw(AUTH),
            tls_handshake_failed=data.draw(HANDSHAKE),
        )
        attempts.session_ended(result)
        opportunistic = security is not None and security.starttls == "opportunistic"
        plain_due = step if (result.tls_handshake_failed and result.auth is None
                             and opportunistic and step.tls_fallback is None) else None
        settled.update(result.settled)
        temporary.update(result.retry)
        last_error = result.failure or last_error
        if result.auth is not None:
            auth_failed.add(step.target.name)
            key = credentials[step.target.name]
            if result.auth == "refused" and key is not None:
                refused.add((key.login, key.secret))
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


@settings(max_examples=200, deadline=None)
@given(hops(), SECURITY)
def test_failed_handshakes_give_one_plain_retry_per_address_only_when_opportunistic(
    hop: tuple[list[HopTarget], list[str]], security: Security | None
) -> None:
    """When every handshake fails, each address is tried in order, and once more in plain
    text right after only under opportunistic security."""
    targets, ids = hop
    attempts = HopAttempts(targets, ids, security=security)
    tried = []
    while not isinstance(step := attempts.next_step(), HopDone):
        assert isinstance(step, TryAddress)
        tried.append((step.address, step.tls_fallback is not None))
        attempts.session_ended(SessionResult(failure="down", tls_handshake_failed="broke"))
    addresses = [a for t in targets for a in t.target.addresses]
    if security == MAY:
        assert tried == [(a, plain) for a in addresses for plain in (False, True)]
    else:
        assert tried == [(a, False) for a in addresses]
