"""Connection slots: MAXCONNECTIONS counts the connections of every dma process of a spool.

The adapter (``dma.adapters.slots``) on its own, the spool ignoring its directory,
and end to end: separate detached deliverers and ``dma -q`` runs against one slow
sink never hold more than MAXCONNECTIONS connections at once (SPEC 5.1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    Script,
    ScriptedSink,
    scripted_sink_fixture,
    wait_until,
    write_remote_config,
)

from dma.adapters.slots import SLOT_DIR, SlotError, Slots
from dma.adapters.spool import Spool

MESSAGE = b"Subject: slots\n\nbody\n"
ScriptedFactory = Callable[..., ScriptedSink]


def test_no_more_slots_than_the_count(tmp_path: Path) -> None:
    """With two slots held a third is refused at once, and after a bounded wait."""
    slots = Slots(str(tmp_path), 2)
    first, second = slots.try_acquire(), slots.try_acquire()
    assert first is not None and second is not None
    assert {first.index, second.index} == {0, 1}
    assert slots.try_acquire() is None
    started = time.monotonic()
    assert slots.acquire(0.3) is None
    assert 0.25 <= time.monotonic() - started < 2
    second.release()
    third = slots.acquire(1.0)
    assert third is not None and third.index == second.index
    first.release()
    third.release()
    third.release()  # twice is harmless


def test_waiter_gets_a_slot_when_one_is_released(tmp_path: Path) -> None:
    """A waiter polling for a slot takes it soon after another holder lets go."""
    slots = Slots(str(tmp_path), 1)
    held = slots.try_acquire()
    assert held is not None
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(slots.acquire, 5.0)
        time.sleep(0.3)
        assert not waiting.done()
        held.release()
        got = waiting.result(timeout=5)
    assert got is not None
    got.release()


def test_a_slot_held_by_another_process_counts(tmp_path: Path) -> None:
    """A slot locked by another process is busy here; it frees when that process exits."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from dma.adapters.slots import Slots; "
         f"s = Slots({str(tmp_path)!r}, 1).try_acquire(); "
         "print('held' if s else 'busy', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == b"held"
        assert Slots(str(tmp_path), 1).try_acquire() is None
    finally:
        holder.kill()
        holder.wait()
    slot = Slots(str(tmp_path), 1).acquire(2.0)
    assert slot is not None
    slot.release()


def test_unusable_slot_directory_raises_slot_error(tmp_path: Path) -> None:
    """A file where the slot directory should be is a SlotError, not a crash."""
    (tmp_path / SLOT_DIR).write_text("not a directory")
    with pytest.raises(SlotError, match="not a directory"):
        Slots(str(tmp_path), 2).try_acquire()


def test_spool_listing_and_clean_up_ignore_the_slot_directory(site: DmaSite) -> None:
    """Spool.scan and Spool.clean (even with no grace) leave .slots alone and list only items."""
    [item_id] = site.send(["root"], MESSAGE)
    slot = Slots(str(site.spool), 3).try_acquire()
    assert slot is not None
    spool = Spool(str(site.spool))
    scan = spool.scan()
    assert [entry.item.id for entry in scan.entries] == [item_id]
    assert scan.problems == ()
    assert spool.clean(time.time() + 10 * 86400, grace=0) == []
    assert sorted(os.listdir(site.spool / SLOT_DIR)) == [str(slot.index)]
    slot.release()
    assert site.run(["-bp"]).returncode == 0


def test_separate_processes_share_maxconnections(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Six detached deliverers and two `dma -q` at once hold at most 2 connections; all arrive."""
    sink = scripted_sink(Script(data_delay=1.0))
    write_remote_config(site, sink.port, "MAXCONNECTIONS 2\n", timeout="20s")
    recipients = [f"r{n}@example.org" for n in range(6)]

    def submit(recipient: str) -> int:
        return site.run([recipient], MESSAGE, program="sendmail").returncode

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(submit, recipients))
        runs = [pool.submit(site.run, ["-q"]) for _ in range(2)]
        assert [run.result().returncode for run in runs] == [0, 0]
    assert codes == [0] * 6
    assert wait_until(lambda: len(sink.messages) == 6, timeout=40), len(sink.messages)
    assert wait_until(lambda: site.queue() == [], timeout=10)
    assert sorted(r for m in sink.messages for r in m.recipients) == recipients
    assert len(sink.connections) >= 2
    assert sink.peak <= 2, sink.peak


def test_no_free_slot_defers_instead_of_hanging(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """With every slot held elsewhere, `dma -q` gives up after TIMEOUT and defers the item."""
    sink = scripted_sink(Script())
    write_remote_config(site, sink.port, "MAXCONNECTIONS 2\n", timeout="1s", defer=True)
    [item_id] = site.send(["bob@example.org"], MESSAGE)
    slots = Slots(str(site.spool), 2)
    held = [slots.try_acquire(), slots.try_acquire()]
    try:
        started = time.monotonic()
        done = site.run(["-q", "-v"])
        elapsed = time.monotonic() - started
    finally:
        for slot in held:
            assert slot is not None
            slot.release()
    assert done.returncode == 0, done.stderr.decode()
    assert elapsed < 15
    assert sink.connections == []
    [item] = site.queue()
    assert item["id"] == item_id and item["attempts"] == 1
    assert "connection slots" in item["last_error"], item["last_error"]
    assert b"no free connection slot" in done.stderr
