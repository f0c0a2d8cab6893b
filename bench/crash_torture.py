"""Crash torture, the long run (issue 7): 1000 SIGKILLs by default, then the figures.

The same engine as the CI test (tests/crash_torture_engine.py, used by
tests/test_crash_torture.py with about 200 kills): real ``sendmail``/``dma``
processes of this venv SIGKILLed at random moments of submission (reading stdin,
spooling), local delivery (mbox appends) and remote delivery (an aiosmtpd sink on
loopback offering PIPELINING), then one unkilled ``dma -q``, and every message
checked byte for byte where it arrived.

    .venv/bin/python bench/crash_torture.py                  # 1000 kills, random seed
    .venv/bin/python bench/crash_torture.py --kills 300 --seed 42 --keep

Prints kills per phase (and where exactly each landed), submissions that exited 0,
messages delivered, duplicates by kind, partial and lost messages (both must be
0), spool leftovers and the wall time.  Exits 1 when anything breaks a rule (the
violations are listed with the seed to reproduce with).
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from crash_torture_engine import Settings, torture  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=1000, help="SIGKILLs at least (1000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--max-seconds", type=float, default=3600.0,
                        help="stop the lanes here even short of the kills (3600)")
    parser.add_argument("--lock-timeout", type=float, default=10.0,
                        help="DMA_LOCK_TIMEOUT for every run (10)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the site (spool, mbox, stderr files) and say where")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    root = Path(tempfile.mkdtemp(prefix="dma-torture-"))
    settings = Settings(kills=args.kills, seed=seed, max_seconds=args.max_seconds,
                        lock_timeout=args.lock_timeout)
    print(f"crash torture: {args.kills} kills, seed {seed}, in {root}", flush=True)
    began = time.monotonic()
    try:
        result = torture(root, settings, progress=lambda text: print(text, flush=True))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(result.text())
    print(f"total with checks: {time.monotonic() - began:.1f} s")
    if args.keep:
        print(f"site kept in {root}")
    if result.violations or result.kills < args.kills:
        print(f"FAILED: reproduce with --kills {args.kills} --seed {seed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
