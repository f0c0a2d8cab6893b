"""Crash safety of submission: many real dma processes killed with SIGKILL at random
moments, some while a message of a few MB is still being written to the spool.

What must hold afterwards (SPEC 3.8, 4): every submission that exited 0 is listed
complete; no listed item is partial; a queue run (`dma -q`) removes every leftover
once it is older than the clean-up's one-hour grace, and nothing listed.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from conftest import DmaSite, command

SUBMISSIONS = 220
PARALLEL = 4
CHUNK = 64 * 1024
LINE = 72  # body line length: far below 998, so no re-encoding changes the body
# Small submissions are killed 0..SMALL_KILL s after start: a run takes ~60-150 ms here,
# so the kills spread over start-up, reading, the spool commit and exit.
SMALL_KILL = 0.15


@dataclass(frozen=True, slots=True)
class Plan:
    """One submission: its unique token, recipients, message size, and when to kill it."""

    token: str
    recipients: tuple[str, ...]
    lines: int
    kill_after: float | None  # seconds after start; None lets it finish
    feed_pause: float  # seconds between 64 KiB chunks of stdin
    kill_at_chunk: int | None = None  # killed by the feeder once it has written this chunk


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a submission ended: its exit status (negative: killed by that signal)."""

    plan: Plan
    returncode: int


def body_of(plan: Plan) -> bytes:
    """The body for ``plan``: numbered lines carrying the token, then the end marker."""
    filler = "x" * LINE
    lines = [f"{plan.token} {n:07d} {filler}"[:LINE] + "\n" for n in range(plan.lines)]
    return ("".join(lines) + f"END-{plan.token}\n").encode()


def message_of(plan: Plan) -> bytes:
    """The whole submitted message: Subject with the token, blank line, body."""
    return f"Subject: {plan.token}\nTo: {', '.join(plan.recipients)}\n\n".encode() + body_of(plan)


def make_plans(rng: random.Random) -> list[Plan]:
    """A mix: 30% finish, half are small and killed, a fifth are large and killed mid-write."""
    plans = []
    for n in range(SUBMISSIONS):
        token = f"tok{n:04d}{rng.getrandbits(32):08x}"
        recipients = tuple(f"r{n}-{k}@example.org" for k in range(rng.choice((1, 1, 2, 3))))
        kind = rng.random()
        if kind < 0.2:  # large, fed slowly: the kill lands while the spool file grows
            lines = rng.randint(25_000, 50_000)  # ~1.8 to 3.6 MB
            chunks = lines * LINE // CHUNK + 1
            # Killed by the feeder after a random chunk: dma is then reading stdin into its
            # spool file, whatever its start-up took (a wall-clock kill would land before
            # the file exists when start-up is slow: a fresh clone compiles every module).
            plans.append(Plan(token, recipients, lines, None, 0.002,
                              kill_at_chunk=rng.randint(3, chunks - 1)))
        elif kind < 0.3:  # large, allowed to finish
            plans.append(Plan(token, recipients, rng.randint(25_000, 40_000), None, 0.0))
        elif kind < 0.5:  # small, allowed to finish
            plans.append(Plan(token, recipients, rng.randint(1, 50), None, 0.0))
        else:  # small, killed at a random moment after start
            kill = rng.uniform(0, SMALL_KILL)
            plans.append(Plan(token, recipients, rng.randint(1, 50), kill, 0.0))
    return plans


def feed(process: subprocess.Popen[bytes], data: bytes, pause: float,
         kill_at_chunk: int | None = None) -> None:
    """Write ``data`` to the process's stdin in chunks, SIGKILLing it after chunk
    ``kill_at_chunk`` (the pipe holds one chunk: the process has read the ones before);
    a killed reader just ends it."""
    assert process.stdin is not None
    try:
        for number, start in enumerate(range(0, len(data), CHUNK), 1):
            process.stdin.write(data[start:start + CHUNK])
            process.stdin.flush()
            if number == kill_at_chunk:
                process.kill()
                return
            if pause:
                time.sleep(pause)
        process.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass


def submit(site: DmaSite, plan: Plan) -> Outcome:
    """Start one dma, feed it, kill it when the plan says so, and wait for it."""
    process = subprocess.Popen(
        [*command("dma"), "-C", str(site.config), *plan.recipients],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=site.environ, cwd=site.root,
    )
    feeder = threading.Thread(target=feed, args=(process, message_of(plan), plan.feed_pause,
                                                 plan.kill_at_chunk))
    feeder.start()
    if plan.kill_after is not None:
        time.sleep(plan.kill_after)
        process.kill()  # SIGKILL; a no-op when it has already exited
    assert process.stderr is not None
    stderr = process.stderr.read()
    returncode = process.wait(timeout=120)
    feeder.join(timeout=120)
    if returncode > 0:
        pytest.fail(f"{plan.token} failed with {returncode}: {stderr.decode(errors='replace')}")
    return Outcome(plan, returncode)


def check_listed_items(site: DmaSite, by_token: dict[str, Plan]) -> dict[str, list[str]]:
    """Every listed item holds a whole message of ours; return the item ids per token."""
    listed: dict[str, list[str]] = {}
    for item in site.queue():
        item_id = str(item["id"])
        message = site.message(item_id)
        found = re.search(rb"\nSubject: (tok\w+)\n", message)
        assert found, f"listed item {item_id} has no token: {message[:400]!r}"
        plan = by_token[found.group(1).decode()]
        assert message.split(b"\n\n", 1)[1] == body_of(plan), f"{item_id} is partial"
        assert item["recipient"] in plan.recipients
        assert item["size"] == len(message)
        listed.setdefault(plan.token, []).append(str(item["recipient"]))
    return listed


@pytest.mark.slow
def test_killed_submissions_never_leave_partial_items(site: DmaSite) -> None:
    """Under random SIGKILLs the queue lists exactly whole messages, every exit-0
    submission among them, and -q removes all leftovers once past the grace period."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    plans = make_plans(rng)
    by_token = {plan.token: plan for plan in plans}
    site.spool.mkdir()
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda plan: submit(site, plan), plans))
    killed = sum(1 for o in outcomes if o.returncode < 0)
    assert killed >= SUBMISSIONS // 4, f"seed {seed}: only {killed} kills landed"

    listed = check_listed_items(site, by_token)
    for outcome in outcomes:
        plan = outcome.plan
        recipients = sorted(listed.get(plan.token, []))
        if outcome.returncode == 0:
            assert recipients == sorted(plan.recipients), f"seed {seed}: {plan.token} lost"
        else:  # killed: any of its recipients, each once (commit is per recipient)
            assert len(set(recipients)) == len(recipients), f"seed {seed}: {plan.token}"
            assert set(recipients) <= set(plan.recipients), f"seed {seed}: {plan.token}"

    keep = {f"{kind}{item['id']}" for item in site.queue() for kind in "QM"}
    leftovers = site.spool_names() - keep
    print(
        f"seed {seed}: {SUBMISSIONS - killed} exited 0, {killed} killed, "
        f"{sum(1 for o in outcomes if o.returncode < 0 and o.plan.token in listed)} killed "
        f"but queued, {len(leftovers)} leftovers: {sorted(n[:5] for n in leftovers)}"
    )
    # Large messages killed mid-write must have left temp files for the clean-up to find.
    assert any(name.startswith("tmp_") for name in leftovers), f"seed {seed}: no kill mid-write"
    old = time.time() - 2 * 3600
    for name in leftovers:
        os.utime(site.spool / name, (old, old))
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    assert site.spool_names() == keep, f"seed {seed}: left {sorted(site.spool_names() - keep)}"
    assert check_listed_items(site, by_token) == listed
