"""Submission benchmark (issue 2): start-up of a small DEFER submission, peak RSS of a big one.

Side by side, in interleaved rounds so that load on a shared machine hits every
candidate alike:

1. ``python -c pass`` with the interpreter pydma is installed in (the floor);
2. pydma's ``dma`` console script queueing a 2 KB message with DEFER set;
3. Debian's C dma 0.13 (``.cache/cdma/usr/sbin/dma``, extracted by scripts/setup)
   queueing the same message with the same settings.

Then the peak RSS of pydma queueing a 100 MB message, each measurement in a fresh
process: GNU time's ``%M`` when /usr/bin/time exists, else a probe that reports
``RUSAGE_CHILDREN.ru_maxrss`` of its single child.

The C dma reads the fixed ``/etc/dma/dma.conf``: while the bench runs it holds one
naming a temporary spool and DEFER; the original file (or its absence) is restored
afterwards.  The C dma switches to user ``mail``, so it needs root and a spool
writable by group mail.  Targets: pydma at most 30 ms above ``python -c pass``
(median), at most 40 MB peak RSS for 100 MB.

Run ``bench/submit.py --venv /tmp/bench-venv`` to measure a non-editable install
(the venv is created and pydma installed into it when missing; ``--reinstall``
installs the current tree again).  Without ``--venv`` the repo's .venv is used,
whose editable finder adds start-up time real installs do not have.
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

REPO = Path(__file__).resolve().parent.parent
C_DMA = REPO / ".cache" / "cdma" / "usr" / "sbin" / "dma"
SYSTEM_CONF_DIR = Path("/etc/dma")
SYSTEM_CONF = SYSTEM_CONF_DIR / "dma.conf"
START_UP_TARGET_MS = 30.0
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


@contextmanager
def system_config(text: str) -> Iterator[None]:
    """Hold ``text`` in /etc/dma/dma.conf, then put back what was there (or nothing)."""
    had_dir = SYSTEM_CONF_DIR.exists()
    original = SYSTEM_CONF.read_bytes() if SYSTEM_CONF.exists() else None
    mode = SYSTEM_CONF.stat().st_mode & 0o7777 if original is not None else None
    SYSTEM_CONF_DIR.mkdir(exist_ok=True)
    try:
        SYSTEM_CONF.write_text(text)
        yield
    finally:
        if original is not None:
            SYSTEM_CONF.write_bytes(original)
            if mode is not None:
                SYSTEM_CONF.chmod(mode)
        else:
            SYSTEM_CONF.unlink(missing_ok=True)
            if not had_dir:
                SYSTEM_CONF_DIR.rmdir()


def ensure_venv(venv: Path, reinstall: bool) -> Path:
    """The venv's python, creating the venv and installing pydma (not editable) when asked.

    pip builds from a copy of the package sources, so no build/ appears in the repo.
    """
    python = venv / "bin" / "python"
    fresh = not python.exists()
    if fresh:
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    if fresh or reinstall:
        with tempfile.TemporaryDirectory(prefix="dma-bench-src-") as source:
            for name in ("pyproject.toml", "README.md"):
                shutil.copy(REPO / name, source)
            for name in ("core", "adapters", "shell"):
                shutil.copytree(
                    REPO / name, Path(source, name), ignore=shutil.ignore_patterns("__pycache__")
                )
            pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            extra = [] if fresh else ["--force-reinstall", "--no-deps"]
            subprocess.run([*pip, *extra, source], check=True)
    if not (venv / "bin" / "dma").exists():
        raise SystemExit(f"{venv} has no dma script: pass --reinstall to install pydma there")
    return python


def import_top(dma: Path, conf: Path, message: Path, rcpt: str, count: int) -> list[str]:
    """The ``count`` slowest imports of one submission, by cumulative then self time."""
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
    rows.sort(reverse=True)
    return [f"{cum / 1000:7.2f} {own / 1000:7.2f}  {name}" for cum, own, name in rows[:count]]


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, help="pydma venv (created when missing)")
    parser.add_argument("--reinstall", action="store_true", help="install the tree again")
    parser.add_argument("--rounds", type=int, default=40, help="timed rounds (default 40)")
    parser.add_argument("--big-mb", type=int, default=100, help="RSS message size (default 100)")
    parser.add_argument("--rss-runs", type=int, default=3, help="RSS runs each (default 3)")
    parser.add_argument("--rcpt", default="root", help="recipient (default root)")
    parser.add_argument("--imports", type=int, default=0, metavar="N",
                        help="also list the N slowest imports of one submission")
    parser.add_argument("--no-cdma", action="store_true", help="skip the C dma")
    parser.add_argument("--no-rss", action="store_true", help="skip the big message")
    args = parser.parse_args(argv)

    venv = args.venv or REPO / ".venv"
    if args.venv is None and not (venv / "bin" / "python").exists():
        raise SystemExit(f"{venv} does not exist: run scripts/setup or pass --venv PATH")
    python = ensure_venv(venv, args.reinstall) if args.venv else venv / "bin" / "python"
    dma = venv / "bin" / "dma"
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
    candidates = [
        Candidate("python -c pass", (str(python), "-c", "pass")),
        Candidate("pydma 2 KB DEFER", (str(dma), "-C", str(conf), args.rcpt), py_spool),
    ]
    if use_cdma:
        candidates.append(Candidate("C dma 0.13 2 KB DEFER", (str(C_DMA), args.rcpt), c_spool))

    say(f"interpreter: {python} ({sys.version.split()[0]} runs the bench)")
    say(f"pydma: {dma}; {args.rounds} interleaved rounds; times in ms")
    if use_cdma:
        with system_config(f"SPOOLDIR {c_spool}\nDEFER\n"):
            times = time_rounds(candidates, message, args.rounds)
    else:
        times = time_rounds(candidates, message, args.rounds)
    report_times(times, "python -c pass", say)
    floor = statistics.median(times["python -c pass"])
    over = statistics.median(times["pydma 2 KB DEFER"]) - floor
    missed = over * 1000 > START_UP_TARGET_MS
    say(f"pydma start-up over bare python: {over * 1000:.2f} ms "
        f"(target <= {START_UP_TARGET_MS:.0f} ms: {'MISSED' if missed else 'met'})")

    if args.imports:
        say("\nslowest imports of one submission (ms, cumulative then self, -X importtime):")
        for row in import_top(dma, conf, message, args.rcpt, args.imports):
            say("  " + row)
        empty_spool(py_spool)

    if not args.no_rss:
        big = work / "msg-big"
        write_big_message(big, args.big_mb)
        say(f"\npeak RSS, {args.big_mb} MB message, {args.rss_runs} fresh runs each (MB):")
        rss_rows = [("python -c pass", (str(python), "-c", "pass"), None),
                    ("pydma", (str(dma), "-C", str(conf), args.rcpt), py_spool)]
        if use_cdma:
            rss_rows.append(("C dma 0.13", (str(C_DMA), args.rcpt), c_spool))
        peaks: dict[str, float] = {}
        with system_config(f"SPOOLDIR {c_spool}\nDEFER\n") if use_cdma else _nothing():
            for name, argv, spool in rss_rows:
                runs = []
                for _ in range(args.rss_runs):
                    runs.append(peak_rss_kib(argv, big, work))
                    if spool is not None:
                        if queued_octets(spool) < big.stat().st_size:
                            raise SystemExit(f"{name} did not queue the whole big message")
                        empty_spool(spool)
                peaks[name] = max(kib for kib, _ in runs) / 1024
                wall = statistics.median(seconds for _, seconds in runs)
                say(f"  {name:<20} max {peaks[name]:7.1f} MB   median wall {wall:6.2f} s")
        rss_missed = peaks["pydma"] > RSS_TARGET_MB
        say(f"pydma peak RSS {peaks['pydma']:.1f} MB "
            f"(target <= {RSS_TARGET_MB:.0f} MB: {'MISSED' if rss_missed else 'met'})")
        missed = missed or rss_missed
    return 1 if missed else 0


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    sys.exit(main())
