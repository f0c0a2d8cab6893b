"""Submission benchmark (issues 2 and 11): start-up of a small DEFER submission, wall time and
peak RSS of a 100 MiB one, side by side with the C dma.

Side by side, in interleaved rounds so that load on a shared machine hits every
candidate alike:

1. ``python -c pass`` with the interpreter pydma is installed in (the floor);
2. pydma's ``dma`` console script queueing a 2 KB message with DEFER set;
3. Debian's C dma 0.13 (``.cache/cdma/usr/sbin/dma``, extracted by scripts/setup)
   queueing the same message with the same settings.

Then the 100 MiB message, each run in a fresh process, pydma and the C dma in
interleaved rounds: wall time and peak RSS (GNU time's ``%M`` when /usr/bin/time
exists, else a probe that reports ``RUSAGE_CHILDREN.ru_maxrss`` of its single child).

The interpreter is ``--python``: by default Debian's ``/usr/bin/python3`` when it
exists (what ``apt install python3`` gives), else the repo's .venv.  One with pydma
installed is used as it is; a bare one gets a venv (``--venv``) with pydma installed
from a copy of the working tree (``--committed``: HEAD's files), not editable (an
editable finder costs ~7 ms of start-up that a real install does not have), brought
up to date whenever the sources change (bench/_venv.py, as flush.py does).

The C dma reads the fixed ``/etc/dma/dma.conf``: while the bench runs it holds one
naming a temporary spool and DEFER; the original file (or its absence) is restored
afterwards.  The C dma switches to user ``mail``, so it needs root and a spool
writable by group mail.  Targets (issue 11): pydma's median at most 20 ms above
``python -c pass``; for 100 MiB, a median wall time at most twice the C dma's and at
most 40 MB peak RSS.  The exit status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import _venv  # bench/_venv.py: the interpreter under test, shared with flush.py
from flush import system_config  # /etc/dma/dma.conf held under the benches' lock

REPO = Path(__file__).resolve().parent.parent
C_DMA = REPO / ".cache" / "cdma" / "usr" / "sbin" / "dma"
DEFAULT_VENV = Path("/tmp/dma-submit-venv")
START_UP_TARGET_MS = 20.0
WALL_TARGET_RATIO = 2.0  # the 100 MiB submission, to the C dma's
RSS_TARGET_MB = 40.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """One command to time: its argv, and the spool it fills (emptied between runs)."""

    name: str
    argv: tuple[str, ...]
    spool: Path | None = None


def small_message(size: int = 2048) -> bytes:
    """A plain text message of ``size`` octets, like a cron report."""
    head = b"From: cron@example.org\nTo: root\nSubject: bench\n\n"
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 1] + b"\n"


def write_big_message(path: Path, megabytes: int) -> None:
    """A ``megabytes`` MB message of 76-octet lines, written in 1 MB blocks."""
    head = b"From: cron@example.org\nTo: root\nSubject: big bench\n\n"
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ab\n"
    block = line * (2**20 // len(line))
    with path.open("wb") as out:
        out.write(head)
        for _ in range(megabytes):
            out.write(block)


def empty_spool(spool: Path) -> None:
    """Remove everything a run queued, so that every run sees the same small directory."""
    for entry in os.scandir(spool):
        os.unlink(entry.path)


def run_once(candidate: Candidate, message: Path) -> float:
    """Wall seconds of one run of ``candidate`` with ``message`` on stdin; it must exit 0."""
    with message.open("rb") as stdin:
        start = time.perf_counter()
        done = subprocess.run(candidate.argv, stdin=stdin, capture_output=True)
        elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(
            f"{candidate.name} failed with exit {done.returncode}: "
            f"{done.stderr.decode(errors='replace').strip()}"
        )
    if candidate.spool is not None:
        if not any(name.startswith("Q") for name in os.listdir(candidate.spool)):
            raise SystemExit(f"{candidate.name} exited 0 but queued nothing in {candidate.spool}")
        empty_spool(candidate.spool)
    return elapsed


def time_rounds(
    candidates: Sequence[Candidate], message: Path, rounds: int
) -> dict[str, list[float]]:
    """Seconds per run for each candidate; each round runs all of them in a shuffled order."""
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    order = list(candidates)
    for candidate in order:  # warm the page cache and the .pyc files
        run_once(candidate, message)
    for _ in range(rounds):
        random.shuffle(order)
        for candidate in order:
            times[candidate.name].append(run_once(candidate, message))
    return times


GNU_TIME = Path("/usr/bin/time")
RSS_PROBE = (
    "import resource, subprocess, sys\n"
    "with open(sys.argv[1], 'rb') as stdin:\n"
    "    done = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.DEVNULL)\n"
    "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def peak_rss_kib(argv: Sequence[str], message: Path, work: Path) -> tuple[int, float]:
    """Peak RSS (KiB) and wall seconds of one run, in a fresh process.

    GNU time when present: Linux counts the pre-exec memory of the forking process
    into the child's peak, and time is far smaller than a Python probe, whose ~10 MB
    would otherwise be the floor of every figure.
    """
    start = time.perf_counter()
    if GNU_TIME.exists():
        report = work / "rss"
        with message.open("rb") as stdin:
            done = subprocess.run(
                [str(GNU_TIME), "-f", "%x %M", "-o", str(report), *argv],
                stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )
        code, rss = report.read_text().split()[-2:]
        stderr = done.stderr
    else:
        probe = subprocess.run(
            [sys.executable, "-c", RSS_PROBE, str(message), *argv],
            capture_output=True, text=True, check=True,
        )
        code, rss = probe.stdout.split()
        stderr = probe.stderr
    elapsed = time.perf_counter() - start
    if code != "0":
        raise SystemExit(f"{argv[0]} failed with exit {code} on the big message: {stderr}")
    return int(rss), elapsed


def queued_octets(spool: Path) -> int:
    """The size of the one message file in ``spool`` (0 when nothing was queued)."""
    return max((e.stat().st_size for e in os.scandir(spool) if e.name.startswith("M")), default=0)


def load() -> str:
    """The load averages (1, 5, 15 minutes): the machine is shared."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def import_top(dma: Path, conf: Path, message: Path, rcpt: str, count: int
               ) -> tuple[int, list[str]]:
    """How many modules one submission imports, and the ``count`` slowest, by cumulative
    then self time."""
    with message.open("rb") as stdin:
        done = subprocess.run(
            [str(dma.parent / "python"), "-X", "importtime", str(dma), "-C", str(conf), rcpt],
            stdin=stdin,
            capture_output=True,
            text=True,
        )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:"):].split("|")
        rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    if done.returncode != 0:
        raise SystemExit(f"the -X importtime submission failed: {done.stderr[-500:]}")
    rows.sort(reverse=True)
    return len(rows), [f"{cum / 1000:7.2f} {own / 1000:7.2f}  {name}"
                       for cum, own, name in rows[:count]]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def report_times(times: dict[str, list[float]], floor: str, say: Callable[[str], None]) -> None:
    """Median, quartiles and the ratio and difference to ``floor`` per candidate."""
    base = statistics.median(times[floor])
    say(f"{'candidate':<22} {'median':>8} {'p25':>8} {'p75':>8} {'min':>8} {'ratio':>6} {'+ms':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (median,) * 3
        say(
            f"{name:<22} {_ms(median)} {_ms(q1)} {_ms(q3)} {_ms(min(values))} "
            f"{median / base:6.2f} {_ms(median - base)}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as the options ask and print the table; exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    _venv.add_interpreter_options(parser, DEFAULT_VENV)
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--big-mb", type=int, default=100, help="big message MiB (default 100)")
    parser.add_argument("--big-runs", type=int, default=5,
                        help="rounds of the big message (default 5)")
    parser.add_argument("--rcpt", default="root", help="recipient (default root)")
    parser.add_argument("--imports", type=int, default=0, metavar="N",
                        help="also list the N slowest imports of one submission")
    parser.add_argument("--no-cdma", action="store_true", help="skip the C dma")
    parser.add_argument("--no-big", "--no-rss", action="store_true",
                        help="skip the big message")
    args = parser.parse_args(argv)

    if not args.python.exists():
        raise SystemExit(f"{args.python} does not exist: run scripts/setup or pass --python")
    python = _venv.pydma_python(args.python, args.venv, args.reinstall, args.committed)
    dma = python.parent / "dma"
    use_cdma = not args.no_cdma
    if use_cdma and (os.geteuid() != 0 or not C_DMA.exists()):
        print(f"note: skipping the C dma (needs root and {C_DMA})", file=sys.stderr)
        use_cdma = False

    # Let the warm-up runs write .pyc files: without them every run compiles our sources.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    work = Path(tempfile.mkdtemp(prefix="dma-bench-"))
    work.chmod(0o755)  # the C dma runs as user mail and must reach its spool
    try:
        return _bench(args, python, dma, work, use_cdma)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, python: Path, dma: Path, work: Path, use_cdma: bool) -> int:
    say = print
    message = work / "msg-2k"
    message.write_bytes(small_message())
    py_spool = work / "spool-py"
    c_spool = work / "spool-c"
    for spool in (py_spool, c_spool):
        spool.mkdir()
    if use_cdma:
        shutil.chown(c_spool, "root", "mail")
        c_spool.chmod(0o2770)
    conf = work / "dma.conf"
    conf.write_text(f"SPOOLDIR {py_spool}\nDEFER\n")
    pydma = Candidate("pydma 2 KB DEFER", (str(dma), "-C", str(conf), args.rcpt), py_spool)
    cdma = Candidate("C dma 0.13 2 KB DEFER", (str(C_DMA), args.rcpt), c_spool)
    candidates = [Candidate("python -c pass", (str(python), "-c", "pass")), pydma]
    if use_cdma:
        candidates.append(cdma)

    say(f"interpreter: {_venv.describe(python)}; the bench runs on {sys.version.split()[0]}")
    say(f"pydma: {dma}; {args.rounds} interleaved rounds; times in ms; load {load()}")
    with system_config(f"SPOOLDIR {c_spool}\nDEFER\n") if use_cdma else _nothing():
        times = time_rounds(candidates, message, args.rounds)
    report_times(times, "python -c pass", say)
    floor = statistics.median(times["python -c pass"])
    over = statistics.median(times[pydma.name]) - floor
    missed = over * 1000 > START_UP_TARGET_MS
    say(f"pydma start-up over bare python: {over * 1000:.2f} ms "
        f"(target <= {START_UP_TARGET_MS:.0f} ms: {'MISSED' if missed else 'met'})")
    if use_cdma:
        ratio = statistics.median(times[pydma.name]) / statistics.median(times[cdma.name])
        say(f"pydma's median / the C dma's: {ratio:.1f}x")
    say(f"load {load()}")

    if args.imports:
        count, rows = import_top(dma, conf, message, args.rcpt, args.imports)
        say(f"\none submission imports {count} modules; the slowest (ms, cumulative then "
            "self, -X importtime):")
        for row in rows:
            say("  " + row)
        empty_spool(py_spool)

    if not args.no_big:
        missed = _bench_big(args, work, python, pydma, cdma if use_cdma else None, say) or missed
    return 1 if missed else 0


def _bench_big(args: argparse.Namespace, work: Path, python: Path, pydma: Candidate,
               cdma: Candidate | None, say: Callable[[str], None]) -> bool:
    """The big message: wall and peak RSS per candidate, in interleaved rounds; True when a
    target is missed."""
    big = work / "msg-big"
    write_big_message(big, args.big_mb)
    rows = [Candidate("python -c pass", (str(python), "-c", "pass")),
            Candidate("pydma", pydma.argv, pydma.spool)]
    if cdma is not None:
        rows.append(Candidate("C dma 0.13", cdma.argv, cdma.spool))
    walls: dict[str, list[float]] = {row.name: [] for row in rows}
    peaks: dict[str, list[float]] = {row.name: [] for row in rows}
    say(f"\n{args.big_mb} MiB message, {args.big_runs} interleaved rounds, a fresh process "
        f"each; load {load()}")
    with system_config(f"SPOOLDIR {cdma.spool}\nDEFER\n") if cdma is not None else _nothing():
        order = list(rows)
        for _ in range(args.big_runs):
            random.shuffle(order)
            for row in order:
                kib, seconds = peak_rss_kib(row.argv, big, work)
                if row.spool is not None:
                    if queued_octets(row.spool) < big.stat().st_size:
                        raise SystemExit(f"{row.name} did not queue the whole big message")
                    empty_spool(row.spool)
                walls[row.name].append(seconds)
                peaks[row.name].append(kib / 1024)
    say(f"{'candidate':<16} {'wall s':>7} {'p25':>6} {'p75':>6} {'ratio':>6} {'max RSS MB':>11}")
    reference = statistics.median(walls[rows[-1].name]) if cdma is not None else None
    for row in rows:
        values = walls[row.name]
        median = statistics.median(values)
        q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (median,) * 3
        shown = f"{median / reference:6.2f}" if reference else f"{'-':>6}"
        say(f"{row.name:<16} {median:7.3f} {q1:6.3f} {q3:6.3f} {shown} "
            f"{max(peaks[row.name]):11.1f}")
    peak = max(peaks["pydma"])
    rss_missed = peak > RSS_TARGET_MB
    say(f"pydma peak RSS {peak:.1f} MB (target <= {RSS_TARGET_MB:.0f} MB: "
        f"{'MISSED' if rss_missed else 'met'})")
    missed = rss_missed
    if reference:
        ratio = statistics.median(walls["pydma"]) / reference
        wall_missed = ratio > WALL_TARGET_RATIO
        say(f"pydma wall {ratio:.2f}x the C dma's (target <= {WALL_TARGET_RATIO:.0f}x: "
            f"{'MISSED' if wall_missed else 'met'})")
        missed = missed or wall_missed
    say(f"load {load()}")
    return missed


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    sys.exit(main())
