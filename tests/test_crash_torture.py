"""Crash torture in CI: SIGKILLs at random moments of submission, local delivery and
remote delivery with PIPELINING, then one unkilled `dma -q` (tests/crash_torture_engine.py
says what runs and what must hold; bench/crash_torture.py is the long run).

``DMA_TORTURE_KILLS`` (default 200) and ``DMA_TORTURE_SEED`` (default random) set the
number of kills and the seed; a failure names the seed.  The seed fixes the messages,
their sizes and recipients, the kill triggers and delays; where a kill lands still
depends on timing, so a failure may need a few runs with its seed to come back.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from crash_torture_engine import Settings, torture

KILLS = int(os.environ.get("DMA_TORTURE_KILLS") or 200)
MAX_SECONDS = 240.0  # the lanes stop here even short of their kills (aim: ~60 s alone)


@pytest.mark.slow
def test_crash_torture(tmp_path: Path) -> None:
    """Under random SIGKILLs every accepted message arrives whole, a second copy only
    from a run killed between the hand-over and the Q file's removal, nothing partial
    or foreign, and the queue and the spool end empty."""
    seed = int(os.environ.get("DMA_TORTURE_SEED") or random.randrange(2**32))
    result = torture(tmp_path, Settings(kills=KILLS, seed=seed, max_seconds=MAX_SECONDS,
                                        min_phase_kills=KILLS // 40))
    report = result.text()
    print(report)
    where = f"seed {seed} (rerun: DMA_TORTURE_SEED={seed} DMA_TORTURE_KILLS={KILLS})"
    assert not result.violations, f"{where}:\n{report}"
    assert result.kills >= KILLS, f"{where}: only {result.kills} kills\n{report}"
    phases = result.kills_by_phase()
    for phase in ("submission", "local", "remote"):
        assert phases[phase] >= KILLS // 40, f"{where}: few kills in {phase}\n{report}"
