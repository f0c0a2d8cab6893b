"""Queue scale benchmark (issue 11, item 3): mailq, ``dma -bj``, ``dma -q`` at 1k, 10k, 100k items.

1. pydma queues one 2 KB message for one remote recipient with its own submission
   (``-bq``, in-process, as bench/flush.py does); that item is the template.
2. The template's Q and M files are replicated with fresh ids (25 hex digits, the
   ``.0`` item suffix) into a pristine spool of N items: the id is replaced wherever
   it occurs (Q ``ID:``, the Received header's ``id``, the Message-Id), everything
   else stays byte for byte, so the items are in the format both pydma and the C
   dma 0.13 read.  Before timing, ``dma -bj`` must list exactly N items.
3. Every copy of a spool is written to disk (``sync``) before it is timed, as a real
   queue's files are.  Without it a run found its files in the page cache only while
   it was shorter than the kernel's writeback delay (30 s): the 1k and 10k flushes
   deleted files that never had blocks on disk, the 100k flush (~60 s) deleted files
   written meanwhile, each unlink then waiting for the disk (on a file system mounted
   with ``discard``: a synchronous discard per file), so its time per item looked
   1.4x the 1k one's.
4. Rounds over every size (sizes and commands in alternating order, so that a change
   in the machine's load falls on all sizes alike): pydma's ``mailq``, ``dma -bj``
   (listings: wall time, CPU time and peak RSS from GNU time), the C dma's ``-bp``
   (same), and ``dma -q`` to the loopback sink of bench/flush.py (a fresh copy of the
   spool each round; time to the last message's final dot, peak summed RSS of the
   run's processes, as flush.py measures, and the CPU time of the process reaped).
   The C dma's ``-q`` runs only at sizes up to ``--cdma-q-max`` (1000): it forks one
   process and one connection per item.
5. The table: medians (min-max), time and CPU time per item, RSS per item, and each
   size's per-item figures against the smallest size's (1.00 = linear), and the
   marginal cost (start-up left out).  CPU time is the steadier figure on a shared
   machine: waiting for a core or the disk does not count in it.

The C dma reads only /etc/dma/dma.conf: it is held there (SPOOLDIR, SMARTHOST, PORT,
MAILNAME) for its runs only, then put back; without root its rows are skipped.
"""

from __future__ import annotations

import argparse
import grp
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _venv  # bench/_venv.py: the interpreter under test
import flush  # bench/flush.py: the sink, spool copies, the C dma's config

REPO = flush.REPO
C_DMA = flush.C_DMA
TIME = "/usr/bin/time"  # GNU time
DEFAULT_VENV = Path("/tmp/dma-scale-venv")


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run of one command at one size."""

    size: int
    command: str
    seconds: float
    cpu: float  # user + system CPU seconds of the command's process (reaped children too)
    peak_rss: int  # bytes
    ok: bool
    load: float  # the 1-minute load average as it started


# --- the spool ------------------------------------------------------------------------------


def template_item(python: Path, dma: Sequence[str], work: Path,
                  port: int) -> tuple[str, bytes, bytes]:
    """Queue one 2 KB message with pydma; return its message id, Q file and M file."""
    spool = work / "template"
    spool.mkdir(mode=0o700)
    conf = work / "template.conf"
    conf.write_text(flush.dma_conf(spool, port) + "DEFER\n")
    flush.fill_spool(python, dma, conf, work, 1, 2048)
    names = flush.queue_files(spool)
    if len(names) != 1:
        raise SystemExit(f"expected one queued item in {spool}, found {names}")
    item_id = names[0][1:]
    message_id = item_id.rsplit(".", 1)[0]
    queue = (spool / f"Q{item_id}").read_bytes()
    message = (spool / f"M{item_id}").read_bytes()
    shutil.rmtree(spool)
    return message_id, queue, message


def replicate(spool: Path, count: int, message_id: str, queue: bytes, message: bytes) -> None:
    """Write ``count`` items: the template with a fresh id of the same shape each."""
    spool.mkdir(mode=0o700)
    old = message_id.encode()
    width = len(message_id)
    for number in range(count):
        new = f"5ca1e{number:0{width - 5}x}".encode()
        for prefix, body in ((b"M", message), (b"Q", queue)):
            name = spool / (prefix + new + b".0").decode()
            descriptor = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o660)
            try:
                os.write(descriptor, body.replace(old, new))
            finally:
                os.close(descriptor)


# --- runs ---------------------------------------------------------------------------------


def children_cpu() -> float:
    """User plus system CPU seconds of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def on_disk() -> float:
    """``sync``: a spool just copied is written out, as a real queue's files are, whatever
    the size (see the module doc, 3); the seconds it took."""
    began = time.monotonic()
    os.sync()
    return time.monotonic() - began


def listing(argv: Sequence[str], expect: int, json_lines: bool
            ) -> tuple[float, float, int, bool, str]:
    """Run a listing under GNU time; return wall seconds, CPU seconds, peak RSS (bytes),
    whether it listed all, and what went wrong.

    GNU time's ``%M`` and not our own ``wait4``: a child forked from this process starts
    with this process's RSS high-water mark, which survives the exec.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as measured_file:
        start = time.monotonic()
        done = subprocess.run([TIME, "-f", "%M %U %S", "-o", measured_file.name, *argv],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, check=False)
        seconds = time.monotonic() - start
        out.seek(0)
        text = out.read()
        err.seek(0)
        problem = err.read().decode(errors="replace").strip()[-500:]
        measured = measured_file.read().split()
    if json_lines:
        listed = sum(1 for line in text.splitlines() if line.strip().startswith(b"{"))
    else:
        listed = text.count(b"5ca1e")  # every item's id, once per item in every listing
    ok = done.returncode == 0 and listed == expect
    if not ok:
        problem = f"exit {done.returncode}, {listed} of {expect} listed; {problem}"
    if len(measured) < 3:
        return seconds, 0.0, 0, False, f"GNU time wrote {measured}; {problem}"
    kilobytes, user, system = measured[-3:]
    return seconds, float(user) + float(system), int(kilobytes) * 1024, ok, problem


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as the options ask; exit 1 when a run failed."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="queue sizes, comma-separated (default 1000,10000,100000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds at sizes below --big (default 3)")
    parser.add_argument("--big", type=int, default=50000,
                        help="sizes from here on run --big-rounds rounds (default 50000)")
    parser.add_argument("--big-rounds", type=int, default=3, help="(default 3)")
    _venv.add_interpreter_options(parser, DEFAULT_VENV)
    parser.add_argument("--work", type=Path, default=None,
                        help="where the spools go (default a new directory in $TMPDIR); a "
                             "RAM-backed ext4 there takes the disk out of the figures")
    parser.add_argument("--no-cdma", action="store_true", help="measure pydma only")
    parser.add_argument("--cdma-q-max", type=int, default=1000,
                        help="largest size the C dma's -q runs at (default 1000)")
    parser.add_argument("--timeout", type=float, default=900.0,
                        help="seconds one -q run may take (default 900)")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    if not sizes or min(sizes) < 1 or args.rounds < 1 or args.big_rounds < 1:
        parser.error("--sizes, --rounds and --big-rounds must be positive")

    if not args.python.exists():
        raise SystemExit(f"{args.python} does not exist: run scripts/setup or pass --python PATH")
    python = _venv.pydma_python(args.python, args.venv, args.reinstall, args.committed)
    use_cdma = not args.no_cdma and os.geteuid() == 0 and C_DMA.exists()
    if not args.no_cdma and not use_cdma:
        print(f"note: skipping the C dma (needs root and {C_DMA})", file=sys.stderr)

    sink = flush.start_sink()
    work = Path(tempfile.mkdtemp(prefix="dma-scale-bench-", dir=args.work))
    work.chmod(0o711)  # the C dma runs as user mail and must reach its spool
    try:
        samples = _bench(args, sizes, python, sink, work, use_cdma)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)
    report(samples, sizes)
    return 0 if all(sample.ok for sample in samples) else 1


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _bench(args: argparse.Namespace, sizes: Sequence[int], python: Path, sink: flush.Sink,
           work: Path, use_cdma: bool) -> list[Sample]:
    mail_gid = grp.getgrnam("mail").gr_gid if os.geteuid() == 0 else None
    dma = flush._spawn_argv(python)
    mailq = python.parent / "mailq"
    mailq_argv = [str(python), str(mailq)] if mailq.exists() else [*dma, "-bp"]
    message_id, queue, message = template_item(python, dma, work, sink.port)
    print(f"pydma: {_venv.describe(python)}")
    print(f"spools in {work} ({_file_system(work)}); template item {message_id}: Q "
          f"{len(queue)} octets, M {len(message)} octets; {os.cpu_count()} CPUs, load "
          f"{_load()}")
    confs: dict[int, Path] = {}
    for size in sizes:  # every size's spool first: the rounds interleave the sizes
        pristine = work / f"pristine-{size}"
        began = time.monotonic()
        replicate(pristine, size, message_id, queue, message)
        _for_the_c_dma(pristine, mail_gid)
        synced = on_disk()
        confs[size] = work / f"dma-{size}.conf"
        confs[size].write_text(flush.dma_conf(pristine, sink.port))
        _, _, _, ok, problem = listing([*dma, "-C", str(confs[size]), "-bj"], size, True)
        if not ok:
            raise SystemExit(f"pydma does not list the replicated items: {problem}")
        print(f"{size} items written in {time.monotonic() - began:.1f} s (sync "
              f"{synced:.1f} s); pydma -bj lists all {size}; load {_load()}")
    run_conf = work / "run.conf"
    run_spool = work / "spool"
    run_conf.write_text(flush.dma_conf(run_spool, sink.port))
    rounds = {size: args.rounds if size < args.big else args.big_rounds for size in sizes}
    samples: list[Sample] = []
    for number in range(max(rounds.values())):
        for size in sizes if number % 2 == 0 else sizes[::-1]:
            if number >= rounds[size]:
                continue
            commands = ["mailq", "dma -bj", "dma -q"]
            if use_cdma:
                commands += ["C -bp"] + (["C -q"] if size <= args.cdma_q_max else [])
            pristine = work / f"pristine-{size}"
            for command in commands if number % 2 == 0 else commands[::-1]:
                sample = _run(command, size, dma, mailq_argv, confs[size], pristine, run_conf,
                              run_spool, pristine, sink, mail_gid, args.timeout)
                samples.append(sample)
                print(f"  round {number + 1}: {command:<8} {size:>7} {sample.seconds:8.3f} s "
                      f"cpu {sample.cpu:8.3f} s {sample.peak_rss / 2**20:7.1f} MB load "
                      f"{sample.load:5.2f}{'' if sample.ok else '  FAILED'}", flush=True)
    return samples


def _for_the_c_dma(spool: Path, mail_gid: int | None) -> None:
    """Give a spool the C dma's modes: root:mail 2770, files 0660 (it runs set-gid mail)."""
    for path in [spool, *spool.iterdir()]:
        if mail_gid is not None:
            os.chown(path, 0, mail_gid)
        path.chmod(0o2770 if path == spool else 0o660)


def _file_system(path: Path) -> str:
    """The file system type and mount options of ``path``, from /proc/self/mounts."""
    best = ("?", "", "")
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                inside = len(fields) >= 4 and f"{path.resolve()}/".startswith(
                    fields[1].rstrip("/") + "/")
                if inside and len(fields[1]) >= len(best[1]):
                    best = (fields[2], fields[1], fields[3])
    except OSError:
        pass
    return f"{best[0]} at {best[1]}, {best[2]}"


def _run(command: str, size: int, dma: Sequence[str], mailq_argv: Sequence[str], conf: Path,
         listed: Path, run_conf: Path, run_spool: Path, pristine: Path, sink: flush.Sink,
         mail_gid: int | None, timeout: float) -> Sample:
    load = os.getloadavg()[0]
    if command == "mailq":
        seconds, cpu, rss, ok, problem = listing([*mailq_argv, "-C", str(conf)], size, False)
    elif command == "dma -bj":
        seconds, cpu, rss, ok, problem = listing([*dma, "-C", str(conf), "-bj"], size, True)
    elif command == "C -bp":
        with flush.system_config(flush.dma_conf(listed, sink.port)):
            seconds, cpu, rss, ok, problem = listing([str(C_DMA), "-bp"], size, False)
    else:
        if run_spool.exists():
            shutil.rmtree(run_spool)
        flush.copy_spool(pristine, run_spool, mail_gid)
        on_disk()
        time.sleep(1.0)  # let the copy's writeback settle a little
        load = os.getloadavg()[0]
        before = children_cpu()
        if command == "dma -q":
            result = flush.flush_once("pydma", [*dma, "-C", str(run_conf), "-q"], run_spool,
                                      sink, size, timeout)
        else:
            with flush.system_config(flush.dma_conf(run_spool, sink.port)):
                result = flush.flush_once("C", [str(C_DMA), "-q"], run_spool, sink, size,
                                          timeout)
        # the C dma's children are not ours to reap: its CPU time is not known
        cpu = children_cpu() - before if command == "dma -q" else math.nan
        seconds, rss = result.seconds, result.peak_rss
        ok = result.delivered == size and result.left_in_queue == 0
        problem = f"{result.delivered} of {size} delivered, {result.left_in_queue} left"
    if not ok:
        print(f"note: {command} at {size}: {problem}", file=sys.stderr)
    return Sample(size, command, seconds, cpu, rss, ok, load)


def _marginal(now: float, then: float, between: int, unit: float, width: int) -> str:
    """The cost per item of the ``between`` items past the smallest size, in ``unit``."""
    if not between or math.isnan(now):
        return f"{'-':>{width}}"
    return f"{(now - then) / between * unit:{width}.1f}"


def report(samples: Sequence[Sample], sizes: Sequence[int]) -> None:
    """Medians per (command, size), per item, and per-item figures against the smallest
    size's."""
    print("\nmedians (min-max); 'x lin' = per item / per item at the smallest size; 'marg' ="
          "\n(this size - the smallest size) / (the items between): the cost without start-up;"
          "\n'cpu' = user + system CPU seconds of the command's process")
    print(f"{'command':<8} {'items':>7} {'rnds':>4} {'seconds':>8} {'(min-max)':>17} "
          f"{'us/item':>8} {'x lin':>5} {'marg us':>8} {'cpu us':>7} {'x lin':>5} "
          f"{'marg':>6} {'RSS MB':>7} {'KB/item':>7} {'marg KB':>7} {'load':>9} {'ok':>3}")
    for command in dict.fromkeys(sample.command for sample in samples):
        first: tuple[int, float, float, float] | None = None
        for size in sizes:
            mine = [s for s in samples if s.command == command and s.size == size]
            if not mine:
                continue
            seconds = statistics.median(s.seconds for s in mine)
            cpu = statistics.median(s.cpu for s in mine)  # NaN when not known
            rss = statistics.median(s.peak_rss for s in mine)
            first = (size, seconds, cpu, rss) if first is None else first
            between = size - first[0]

            low, high = min(s.seconds for s in mine), max(s.seconds for s in mine)
            loads = [s.load for s in mine]
            print(f"{command:<8} {size:>7} {len(mine):>4} {seconds:8.3f} "
                  f"{f'({low:.3f}-{high:.3f})':>17} {seconds / size * 1e6:8.1f} "
                  f"{seconds / size / (first[1] / first[0]):5.2f} "
                  f"{_marginal(seconds, first[1], between, 1e6, 8)} {cpu / size * 1e6:7.1f} "
                  f"{cpu / size / (first[2] / first[0]) if first[2] else math.nan:5.2f} "
                  f"{_marginal(cpu, first[2], between, 1e6, 6)} {rss / 2**20:7.1f} "
                  f"{rss / size / 1024:7.2f} {_marginal(rss, first[3], between, 1 / 1024, 7)} "
                  f"{f'{min(loads):.1f}-{max(loads):.1f}':>9} "
                  f"{'yes' if all(s.ok for s in mine) else 'NO':>3}")


if __name__ == "__main__":
    sys.exit(main())
