"""Properties of a hop's lanes: however connections come and go, the counts and the
merged result behave (SPEC 5.1)."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.errors import SoftwareError
from dma.core.hop_attempts import SessionResult
from dma.core.hop_lanes import (
    CONFIRM_ANSWERS,
    FAST_SERVER_LANES,
    LANE_SHARE,
    SLOW_REPLY,
    HopLanes,
    LaneEnded,
)
from dma.core.outcomes import Outcome, deferred, delivered, failed

IDS = st.integers(0, 30)
SETTLED = st.sampled_from([delivered("250 ok"), failed("550 no", "5.1.1")])
AUTH: st.SearchStrategy[Literal["refused", "unusable"] | None] = st.sampled_from(
    [None, None, "refused", "unusable"])
RESULTS = st.builds(
    SessionResult,
    st.dictionaries(IDS, SETTLED, max_size=6),
    st.dictionaries(IDS, st.just(deferred("451 later")), max_size=6),
    st.sampled_from([None, None, "lost", "421 busy"]),
    AUTH,
    st.sampled_from([None, None, "handshake"]),
)
# one event: make the n-th connecting lane ready, or end the n-th open lane with a result
EVENTS = st.lists(st.tuples(st.sampled_from(["ready", "end"]), st.integers(0, 40), RESULTS),
                  max_size=60)
WAITS = st.sampled_from([0.0, 0.0002, SLOW_REPLY, 0.003, 0.02])  # the server's answer time


def _run(limit: int, waiting: int, events: list[tuple[str, int, SessionResult[int]]],
         wait: float = 0.02
         ) -> tuple[HopLanes[int], list[int], list[SessionResult[int]], list[bool]]:
    """Drive HopLanes as the shell does (a lane's first answer, after ``wait`` seconds,
    comes with its being ready); return it, the open counts seen, the results of the
    lanes that ended and whether any lane was ready when each one ended."""
    lanes: HopLanes[int] = HopLanes(limit)
    starting: list[int] = []  # lane numbers connecting
    ready: list[int] = []
    number = 0
    seen: list[int] = []
    ended: list[SessionResult[int]] = []
    ever_ready: list[bool] = []

    def open_lanes(count: int) -> None:
        nonlocal number
        for _ in range(count):
            lanes.opened()
            starting.append(number)
            number += 1

    open_lanes(lanes.to_open(waiting))
    for kind, pick, result in events:
        if kind == "ready" and starting:
            starting.pop(pick % len(starting))
            lanes.ready()
            ready.append(0)
            lanes.answered(wait)  # the lane's first answer
            open_lanes(lanes.to_open(waiting))
        elif kind == "end" and (starting or ready):
            pool = starting + ready
            index = pick % len(pool)
            was_ready = index >= len(starting)
            (ready if was_ready else starting).pop(index - len(starting) if was_ready else index)
            lanes.ended(LaneEnded(result, was_ready))
            ended.append(result)
            ever_ready.append(was_ready)
        seen.append(lanes.open)
    while starting or ready:  # the rest end cleanly
        was_ready = not starting
        (ready if was_ready else starting).pop()
        lanes.ended(LaneEnded(SessionResult(), was_ready))
        seen.append(lanes.open)
    return lanes, seen, ended, ever_ready


@settings(max_examples=400)
@given(st.integers(1, 40), st.integers(0, 200), EVENTS, WAITS)
def test_never_more_lanes_than_the_limit_and_the_limit_only_falls(
        limit: int, waiting: int, events: list[tuple[str, int, SessionResult[int]]],
        wait: float) -> None:
    """At no time are more lanes open than the limit given, nor more than
    FAST_SERVER_LANES for a server that answers within SLOW_REPLY; the limit never rises
    nor falls below one; lanes open only when enough messages wait for them."""
    lanes, seen, _ended, _ready = _run(limit, waiting, events, wait)
    assert all(count <= limit for count in seen)
    if wait < SLOW_REPLY:
        assert all(count <= FAST_SERVER_LANES for count in seen)
    assert 1 <= lanes.limit <= limit
    if waiting == 0:
        assert seen == [] or max(seen) == 0
    elif waiting < 2 * LANE_SHARE:
        assert max(seen, default=1) <= 1


@settings(max_examples=400)
@given(st.integers(1, 8), st.integers(1, 200), EVENTS)
def test_the_merged_result_keeps_every_lanes_outcomes(
        limit: int, waiting: int, events: list[tuple[str, int, SessionResult[int]]]) -> None:
    """What any lane settled is settled in the result; a temporary outcome stays only
    for items nobody settled; authentication and handshake failures count only when no
    lane was ever ready."""
    lanes, _seen, ended, ready = _run(limit, waiting, events)
    result = lanes.result()
    settled_anywhere: dict[int, Outcome] = {}
    for lane in ended:
        for item_id, outcome in lane.settled.items():
            settled_anywhere.setdefault(item_id, outcome)
    assert result.settled == settled_anywhere
    assert not set(result.retry) & set(result.settled)
    retried = {item_id for lane in ended for item_id in lane.retry}
    assert set(result.retry) == retried - set(settled_anywhere)
    if any(ready):
        assert result.auth is None and result.tls_handshake_failed is None
    failures = [lane.failure for lane in ended if lane.failure is not None]
    assert result.failure == (failures[-1] if failures else None)


def test_a_lane_turned_away_lowers_the_limit_to_the_others() -> None:
    """Four lanes to a server that takes three: the fourth's 421 leaves the limit at 3,
    and no lane is opened to replace it."""
    lanes: HopLanes[int] = HopLanes(4)
    lanes.opened()
    lanes.ready()
    assert lanes.to_open(100) == 0  # not before the first answer says how long it takes
    lanes.answered(0.02)
    assert lanes.to_open(100) == 3
    lanes.opened(3)
    lanes.ready()
    lanes.ready()
    lanes.ended(LaneEnded(SessionResult(failure="421 too many connections"), False))
    assert lanes.limit == 3
    lanes.answered(0.02)
    assert lanes.to_open(100) == 0


def test_the_first_lane_failing_alone_is_the_hops_failure() -> None:
    """A refused first connection opens no other, and its failure, login refusal and
    handshake failure are the hop's: HopAttempts moves on as with one connection."""
    lanes: HopLanes[int] = HopLanes(4)
    assert lanes.to_open(100) == 1
    lanes.opened()
    lanes.answered(0.02)
    assert lanes.to_open(100) == 0  # not before one is ready
    lanes.ended(LaneEnded(SessionResult(failure="535 no", auth="refused",
                                        tls_handshake_failed=None), False))
    assert lanes.done
    assert lanes.limit == 4  # nobody else was open: the server did not turn us away
    result = lanes.result()
    assert (result.failure, result.auth) == ("535 no", "refused")


def test_misuse_is_a_software_error() -> None:
    """Counting a lane that was never opened, or asking before the end, is our bug."""
    with pytest.raises(SoftwareError):
        HopLanes[int](0)
    lanes: HopLanes[int] = HopLanes(2)
    with pytest.raises(SoftwareError):
        lanes.ready()
    with pytest.raises(SoftwareError):
        lanes.ended(LaneEnded(SessionResult(), True))
    with pytest.raises(SoftwareError):
        lanes.ended(LaneEnded(SessionResult(), False))
    lanes.opened()
    with pytest.raises(SoftwareError):
        lanes.result()


def test_a_fast_server_gets_few_lanes_and_a_slow_one_all() -> None:
    """Until CONFIRM_ANSWERS answers all took SLOW_REPLY or more, a server gets
    FAST_SERVER_LANES at most; a slow one then every lane the limit allows, a fast one
    never more, and one quick answer among slow ones (ours were late) keeps the cap."""
    slow: HopLanes[int] = HopLanes(32)
    slow.opened()
    slow.ready()
    slow.answered(0.02)
    assert slow.to_open(1000) == FAST_SERVER_LANES - 1
    slow.opened(FAST_SERVER_LANES - 1)
    for _ in range(FAST_SERVER_LANES - 1):
        slow.ready()
    for _ in range(CONFIRM_ANSWERS - 1):
        slow.answered(0.02)
    assert slow.to_open(1000) == 32 - FAST_SERVER_LANES
    assert not slow.wants_timing
    fast: HopLanes[int] = HopLanes(32)
    fast.opened()
    fast.ready()
    for wait in (0.005, 0.0002, 0.02):
        fast.answered(wait)
    assert fast.to_open(1000) == FAST_SERVER_LANES - 1


@settings(max_examples=300)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_the_fastest_answer_decides(waits: list[float]) -> None:
    """However the answers come, a server gets more than FAST_SERVER_LANES only when at
    least CONFIRM_ANSWERS of them came and the fastest took SLOW_REPLY or more."""
    lanes: HopLanes[int] = HopLanes(32)
    lanes.opened()
    lanes.ready()
    for wait in waits:
        lanes.answered(wait)
    many = lanes.to_open(1000) + 1 > FAST_SERVER_LANES
    assert many == (len(waits) >= CONFIRM_ANSWERS and min(waits) >= SLOW_REPLY)
