"""Queue flush benchmark (issue 3): ``dma -q`` of N deferred 2 KB messages, pydma against the C dma.

1. pydma queues N messages of 2 KB for one remote recipient with ``-bq`` (through
   its own submission workflow, in one process, so the items are real and complete:
   Received header, Message-Id, Q and M files); that spool is the pristine copy.
2. A loopback SMTP sink on 127.0.0.1 (a raw asyncio server in a child process)
   counts connections and messages and notes when each message's final dot came.
3. Per run a fresh copy of the pristine spool is flushed, by pydma's ``dma -C conf
   -q`` or by Debian's C dma 0.13 (``.cache/cdma/usr/sbin/dma -q``, which reads the
   fixed /etc/dma/dma.conf: it holds SPOOLDIR, SMARTHOST 127.0.0.1 and PORT for
   the duration of each C run only, then the original file, or its absence, is put
   back).  A run is done when the sink has all N messages.
4. Every ~20 ms the RSS of all processes of the run is summed (the run is started in
   its own memory cgroup, which also catches the C dma's daemonized children; without
   cgroups, the descendants of this process) and the maximum kept.

Rounds alternate the order of the two implementations; the table shows medians and
the ratios ours / C.  Targets from the issue: at least 2x the C dma's messages per
second and at most a tenth of its peak memory.  When the speed target is missed,
pydma is run once more under cProfile and the top of the profile printed.

Both implementations need the same conditions: same items, same sink, MAILNAME set
in both configurations (so the C dma does no host name lookups), no TLS, no AUTH.
The sink offers PIPELINING, 8BITMIME and SIZE like a usual MTA; the C dma uses none.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import grp
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
C_DMA = REPO / ".cache" / "cdma" / "usr" / "sbin" / "dma"
SYSTEM_CONF_DIR = Path("/etc/dma")
SYSTEM_CONF = SYSTEM_CONF_DIR / "dma.conf"
CGROUP_MEMORY = Path("/sys/fs/cgroup/memory")
MAILNAME = "bench.example"
RECIPIENT = "sink@example.net"
SPEED_TARGET = 2.0  # ours / C, messages per second: at least
MEMORY_TARGET = 0.1  # ours / C, peak memory: at most
SAMPLE_SECONDS = 0.02
PAGE = os.sysconf("SC_PAGE_SIZE")

OURS = "pydma"
THEIRS = "C dma 0.13"

# slots of the sink's shared counters
CONNECTIONS, MESSAGES, OCTETS, COMMANDS = range(4)


# --- the sink ---------------------------------------------------------------------------


class _SinkSession(asyncio.Protocol):
    """One SMTP connection: accept everything, count it, never look at the content."""

    def __init__(self, counts: Any, last: Any) -> None:
        self.counts = counts
        self.last = last
        self.buffer = bytearray()
        self.in_data = False
        self.scan_from = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counts[CONNECTIONS] += 1
        transport.write(b"220 sink.bench ESMTP ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = bytearray()
        while True:
            if self.in_data:
                # the buffer starts with the CRLF that ended DATA, so an empty
                # message and a dot on the first line are found as well
                end = self.buffer.find(b"\r\n.\r\n", self.scan_from)
                if end < 0:
                    self.scan_from = max(0, len(self.buffer) - 4)
                    break
                self.counts[OCTETS] += end
                self.counts[MESSAGES] += 1
                self.last[0] = time.monotonic()
                del self.buffer[: end + 5]
                self.in_data = False
                out += b"250 2.0.0 Ok: queued\r\n"
                continue
            eol = self.buffer.find(b"\n")
            if eol < 0:
                if len(self.buffer) > 4096:
                    self.buffer.clear()
                    out += b"500 5.5.0 line too long\r\n"
                break
            line = bytes(self.buffer[:eol]).rstrip(b"\r")
            del self.buffer[: eol + 1]
            self.counts[COMMANDS] += 1
            verb = line[:4].upper()
            if verb == b"EHLO":
                out += b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
            elif verb == b"HELO":
                out += b"250 sink.bench\r\n"
            elif verb == b"MAIL":
                out += b"250 2.1.0 Ok\r\n"
            elif verb == b"RCPT":
                out += b"250 2.1.5 Ok\r\n"
            elif verb == b"DATA":
                out += b"354 End data with <CR><LF>.<CR><LF>\r\n"
                self.in_data = True
                self.buffer[0:0] = b"\r\n"
                self.scan_from = 0
            elif verb in (b"RSET", b"NOOP"):
                out += b"250 2.0.0 Ok\r\n"
            elif verb == b"QUIT":
                out += b"221 2.0.0 Bye\r\n"
                assert self.transport is not None
                self.transport.write(bytes(out))
                self.transport.close()
                return
            else:
                out += b"502 5.5.2 command not implemented\r\n"
        if out and self.transport is not None:
            self.transport.write(bytes(out))


def _sink_main(counts: Any, last: Any, report: Connection) -> None:
    """Serve SMTP on an ephemeral loopback port until terminated; send the port first."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: _SinkSession(counts, last), "127.0.0.1", 0, backlog=4096)
    )
    report.send(server.sockets[0].getsockname()[1])
    report.close()
    loop.run_forever()


@dataclass
class Sink:
    """The sink process and its shared counters (written by the sink, read here)."""

    process: multiprocessing.process.BaseProcess
    port: int
    counts: Any
    last: Any

    def reset(self) -> None:
        for slot in range(len(self.counts)):
            self.counts[slot] = 0
        self.last[0] = 0.0

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


def start_sink() -> Sink:
    """Fork the sink (before anything big exists in this process) and wait for its port."""
    context = multiprocessing.get_context("fork")
    counts = context.RawArray(ctypes.c_longlong, 4)
    last = context.RawArray(ctypes.c_double, 1)
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_sink_main, args=(counts, last, send), daemon=True)
    process.start()
    send.close()
    if not receive.poll(10):
        process.terminate()
        raise SystemExit("the SMTP sink did not start within 10 s")
    return Sink(process, receive.recv(), counts, last)


# --- the spool ----------------------------------------------------------------------------


def message_text(number: int, size: int) -> bytes:
    """Message ``number`` of the run: ``size`` octets of plain text, like a cron report."""
    head = (
        f"From: cron@{MAILNAME}\nTo: {RECIPIENT}\nSubject: flush bench {number}\n\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 1] + b"\n"


QUEUE_SCRIPT = """\
import os, sys
from dma.core.cmdline import parse_command_line
from dma.shell.settings import load_settings
from dma.shell.submit import submit

class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

conf, directory, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
invocation = parse_command_line(["sendmail", "-C", conf, "-bq", sys.argv[4]])
settings = load_settings(invocation.config_path, os.environ)
for number in range(count):
    with open(os.path.join(directory, f"msg-{number}"), "rb") as handle:
        submit(invocation, settings, Quiet(), [handle.read()])
"""


def fill_spool(python: Path, dma: Sequence[str], conf: Path, work: Path, count: int,
               size: int) -> None:
    """Queue ``count`` messages with pydma (-bq): in one process, or one dma per message."""
    messages = work / "messages"
    messages.mkdir()
    for number in range(count):
        (messages / f"msg-{number}").write_bytes(message_text(number, size))
    done = subprocess.run(
        [str(python), "-c", QUEUE_SCRIPT, str(conf), str(messages), str(count), RECIPIENT],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        print("note: queueing through dma.shell.submit failed, using one `dma -bq` per message:"
              f"\n{done.stderr.strip()}", file=sys.stderr)
        for number in range(count):
            with (messages / f"msg-{number}").open("rb") as stdin:
                subprocess.run([*dma, "-C", str(conf), "-bq", RECIPIENT], stdin=stdin,
                               check=True, capture_output=True)
    shutil.rmtree(messages)


def queue_files(spool: Path) -> list[str]:
    return [name for name in os.listdir(spool) if name.startswith("Q")]


def copy_spool(source: Path, target: Path, mail_gid: int | None) -> None:
    """Copy the spool keeping mtimes (arrival) and hard links; group mail may write it."""
    target.mkdir(mode=0o770)
    if mail_gid is not None:
        os.chown(target, 0, mail_gid)
    target.chmod(0o2770)
    seen: dict[tuple[int, int], Path] = {}
    for entry in os.scandir(source):
        if not entry.is_file(follow_symlinks=False):
            continue
        info = entry.stat(follow_symlinks=False)
        copy = target / entry.name
        key = (info.st_dev, info.st_ino)
        if key in seen:
            os.link(seen[key], copy)
            continue
        shutil.copy2(entry.path, copy)
        if mail_gid is not None:
            os.chown(copy, 0, mail_gid)
        copy.chmod(0o660)
        seen[key] = copy


# --- the C dma's configuration --------------------------------------------------------------


@contextmanager
def system_config(text: str) -> Iterator[None]:
    """Hold ``text`` in /etc/dma/dma.conf, then put back what was there (or nothing)."""
    had_dir = SYSTEM_CONF_DIR.exists()
    original = SYSTEM_CONF.read_bytes() if SYSTEM_CONF.exists() else None
    mode = SYSTEM_CONF.stat().st_mode & 0o7777 if original is not None else None
    SYSTEM_CONF_DIR.mkdir(exist_ok=True)
    try:
        SYSTEM_CONF.write_text(text)
        SYSTEM_CONF.chmod(0o644)
        yield
    finally:
        if original is not None:
            SYSTEM_CONF.write_bytes(original)
            if mode is not None:
                SYSTEM_CONF.chmod(mode)
        else:
            SYSTEM_CONF.unlink(missing_ok=True)
            if not had_dir:
                try:
                    SYSTEM_CONF_DIR.rmdir()
                except OSError:
                    pass  # someone else put files there meanwhile: leave them


def dma_conf(spool: Path, port: int) -> str:
    return f"SPOOLDIR {spool}\nSMARTHOST 127.0.0.1\nPORT {port}\nMAILNAME {MAILNAME}\n"


# --- watching the processes of a run ---------------------------------------------------------


class Watch:
    """The processes of one run: a fresh memory cgroup when possible, else our descendants."""

    def __init__(self, name: str, exclude: int) -> None:
        self.cgroup: Path | None = None
        self.exclude = exclude
        if os.geteuid() == 0 and (CGROUP_MEMORY / "cgroup.procs").exists():
            path = CGROUP_MEMORY / f"dma-flush-bench-{os.getpid()}-{name}"
            try:
                path.mkdir()
                self.cgroup = path
            except OSError:
                self.cgroup = None

    def enter(self) -> None:
        """Called in the child before exec: move it (and so all it forks) into the cgroup."""
        if self.cgroup is not None:
            (self.cgroup / "cgroup.procs").write_text("0")

    def pids(self) -> list[int]:
        if self.cgroup is not None:
            text = (self.cgroup / "cgroup.procs").read_text()
            return [int(pid) for pid in text.split()]
        return _descendants(os.getpid(), self.exclude)

    def charged_peak(self) -> int | None:
        """The cgroup's peak charged memory (RSS, page cache, kernel memory), if any."""
        if self.cgroup is None:
            return None
        return int((self.cgroup / "memory.max_usage_in_bytes").read_text())

    def close(self) -> None:
        if self.cgroup is None:
            return
        for pid in self.pids():  # only processes this run started are in there
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            self.cgroup.rmdir()
        except OSError as error:
            print(f"note: could not remove {self.cgroup}: {error}", file=sys.stderr)


def _descendants(root: int, exclude: int) -> list[int]:
    """Descendants of ``root`` (not ``exclude`` and its own), from a scan of /proc."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        parents[int(name)] = int(stat[stat.rfind(b")") + 2:].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid != exclude:
                found.append(pid)
                frontier.append(pid)
    return found


@dataclass(frozen=True, slots=True)
class Memory:
    """Summed memory of processes: RSS counts a shared page in each process, PSS divides it."""

    rss: int
    pss: int | None  # None where /proc/<pid>/smaps_rollup is missing


def memory_of(pids: Sequence[int]) -> Memory:
    """Sum of RSS and PSS of ``pids`` (vanished ones count nothing)."""
    rss = pss = 0
    rollup = True
    for pid in pids:
        try:
            if rollup:
                try:
                    with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
                        lines = handle.read().split(b"\n")
                    rss += int(lines[1].split()[1]) * 1024
                    pss += int(lines[2].split()[1]) * 1024
                    continue
                except FileNotFoundError:
                    if os.path.exists(f"/proc/{pid}"):
                        rollup = False
                    else:
                        continue
            with open(f"/proc/{pid}/statm", "rb") as handle:
                rss += int(handle.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
    return Memory(rss, pss if rollup else None)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- one run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunResult:
    """What one flush did, seen from the sink and from /proc."""

    name: str
    seconds: float  # start to the final dot of the last message (or to the timeout)
    exited: float  # start to the moment all the run's processes had exited
    delivered: int
    connections: int
    peak_rss: int  # bytes: the highest sum of RSS over the run's processes
    peak_pss: int | None  # bytes: the same for PSS (shared pages divided among sharers)
    peak_processes: int
    charged_peak: int | None  # bytes: the cgroup's peak charge (incl. kernel memory)
    sink_cpu: float  # CPU seconds the sink used during the run
    probe_cpu: float  # CPU seconds this process spent sampling /proc during the run
    left_in_queue: int
    exit_code: int | None

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else 0.0


def flush_once(name: str, argv: Sequence[str], spool: Path, sink: Sink, count: int,
               timeout: float) -> RunResult:
    """Start ``argv`` on ``spool``; wait until the sink has ``count`` messages and all exited."""
    sink.reset()
    sink_pid = sink.process.pid or -1
    watch = Watch(name.split()[0], sink_pid)
    peak_rss = peak_pss = peak_processes = 0
    pss_known = True
    sink_cpu = cpu_seconds(sink_pid)
    probe_cpu = time.process_time()
    try:
        start = time.monotonic()
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=watch.enter,
        )
        deadline = start + timeout
        finished_at: float | None = None
        exited_at: float | None = None
        while True:
            pids = watch.pids()
            if process.poll() is None and process.pid not in pids:
                pids.append(process.pid)
            memory = memory_of(pids)
            peak_rss = max(peak_rss, memory.rss)
            if memory.pss is None:
                pss_known = False
            else:
                peak_pss = max(peak_pss, memory.pss)
            peak_processes = max(peak_processes, len(pids))
            now = time.monotonic()
            if finished_at is None and sink.counts[MESSAGES] >= count:
                finished_at = sink.last[0]
            if process.poll() is not None and not pids:
                exited_at = now
                break
            if finished_at is not None and now > finished_at + 30:
                print(f"note: {name} still had {len(pids)} processes 30 s after the last "
                      "message; killed", file=sys.stderr)
                break
            if now > deadline:
                print(f"note: {name} timed out after {timeout:.0f} s with "
                      f"{sink.counts[MESSAGES]} of {count} messages at the sink",
                      file=sys.stderr)
                break
            time.sleep(SAMPLE_SECONDS)
        if process.poll() is None:
            process.kill()
        exit_code = process.wait()
        stderr = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
        if exit_code != 0 or (stderr and sink.counts[MESSAGES] < count):
            print(f"note: {name} exited {exit_code}: {stderr[-2000:]}", file=sys.stderr)
        if finished_at is None and sink.counts[MESSAGES] >= count:
            finished_at = sink.last[0]
        end = finished_at if finished_at is not None else time.monotonic()
        charged = watch.charged_peak()
        sink_cpu = cpu_seconds(sink_pid) - sink_cpu
        probe_cpu = time.process_time() - probe_cpu
    finally:
        watch.close()
    return RunResult(
        name=name,
        seconds=end - start,
        exited=(exited_at if exited_at is not None else time.monotonic()) - start,
        delivered=int(sink.counts[MESSAGES]),
        connections=int(sink.counts[CONNECTIONS]),
        peak_rss=peak_rss,
        peak_pss=peak_pss if pss_known else None,
        peak_processes=peak_processes,
        charged_peak=charged,
        sink_cpu=sink_cpu,
        probe_cpu=probe_cpu,
        left_in_queue=len(queue_files(spool)),
        exit_code=exit_code,
    )


# --- profiling --------------------------------------------------------------------------------

PROFILE_RUN = """\
import cProfile, pstats, sys, threading
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
profiles = [cProfile.Profile()]

def in_thread(*_):
    profile = cProfile.Profile()  # replaces this hook for the rest of the thread
    profiles.append(profile)
    profile.enable()

threading.setprofile(in_thread)
with open(script, "rb") as handle:
    code = compile(handle.read(), script, "exec")
profiles[0].enable()
try:
    exec(code, {"__name__": "__main__", "__file__": script})
except SystemExit:
    pass
finally:
    profiles[0].disable()
    threading.setprofile(None)
stats = pstats.Stats(profiles[0])
for profile in profiles[1:]:
    stats.add(profile)
stats.dump_stats(out)
print(f"{len(profiles)} threads profiled", file=sys.stderr)
"""

PROFILE_REPORT = """\
import pstats, sys
stats = pstats.Stats(sys.argv[1])
stats.sort_stats("cumulative").print_stats(int(sys.argv[2]))
stats.sort_stats("tottime").print_stats(int(sys.argv[2]))
"""


def profile_ours(python: Path, dma: Sequence[str], conf: Path, out: Path, top: int) -> str:
    """Run ``dma -q`` under cProfile, every thread included; return the top of the profile."""
    if len(dma) != 2 or dma[0] != str(python):
        return "(cannot profile: no dma script next to the interpreter)"
    began = time.monotonic()
    run = subprocess.run([str(python), "-c", PROFILE_RUN, str(out), dma[1], "-C", str(conf),
                          "-q"], capture_output=True, text=True)
    took = time.monotonic() - began
    report = subprocess.run([str(python), "-c", PROFILE_REPORT, str(out), str(top)],
                            capture_output=True, text=True)
    return (f"(profiled run: {took:.2f} s wall, exit {run.returncode}; "
            f"{run.stderr.strip()[-500:]})\n" + report.stdout + report.stderr)


# --- report ------------------------------------------------------------------------------------


def _mb(octets: float | None) -> str:
    return "-" if octets is None else f"{octets / 2**20:.1f}"


def summarise(results: Sequence[RunResult], say: Callable[[str], None]) -> dict[str, float]:
    """Print every run, then the medians; return the medians that the targets compare."""
    say(f"{'run':<11} {'seconds':>7} {'exited':>6} {'msg/s':>7} {'deliv':>5} {'conns':>5} "
        f"{'RSS MB':>7} {'PSS MB':>7} {'cg MB':>6} {'procs':>5} {'sinkCPU':>7} "
        f"{'probeCPU':>8} {'left':>4} {'exit':>4}")
    for r in results:
        say(f"{r.name:<11} {r.seconds:7.2f} {r.exited:6.2f} {r.rate:7.1f} {r.delivered:5d} "
            f"{r.connections:5d} "
            f"{_mb(r.peak_rss):>7} {_mb(r.peak_pss):>7} {_mb(r.charged_peak):>6} "
            f"{r.peak_processes:5d} {r.sink_cpu:7.2f} {r.probe_cpu:8.2f} {r.left_in_queue:4d} "
            f"{r.exit_code!s:>4}")
    medians: dict[str, float] = {}
    say("")
    say(f"{'median':<11} {'msg/s':>7} {'conns':>5} {'RSS MB':>7} {'PSS MB':>7} {'cg MB':>6} "
        f"{'procs':>5}")

    def median(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if len(known) == len(values) else None

    for name in dict.fromkeys(r.name for r in results):
        mine = [r for r in results if r.name == name]
        row = {
            "rate": median([r.rate for r in mine]),
            "conns": median([r.connections for r in mine]),
            "rss": median([r.peak_rss for r in mine]),
            "pss": median([r.peak_pss for r in mine]),
            "cgroup": median([r.charged_peak for r in mine]),
            "procs": median([r.peak_processes for r in mine]),
        }
        for key, value in row.items():
            if value is not None:
                medians[f"{name} {key}"] = value
        say(f"{name:<11} {row['rate'] or 0:7.1f} {row['conns'] or 0:5.0f} {_mb(row['rss']):>7} "
            f"{_mb(row['pss']):>7} {_mb(row['cgroup']):>6} {row['procs'] or 0:5.0f}")
    return medians


def ratios(medians: dict[str, float], say: Callable[[str], None]) -> tuple[bool, bool]:
    """Print ours / C for every measure; return (speed target missed, memory target missed)."""

    def ratio(key: str) -> float | None:
        ours, theirs = medians.get(f"{OURS} {key}"), medians.get(f"{THEIRS} {key}")
        return None if ours is None or not theirs else ours / theirs

    speed, memory = ratio("rate"), ratio("rss")
    slow = speed is None or speed < SPEED_TARGET
    big = memory is None or memory > MEMORY_TARGET
    say("")
    say("ratios ours / C:")
    say(f"  messages per second  {speed or 0:7.3f}  target >= {SPEED_TARGET:g}: "
        f"{'MISSED' if slow else 'met'}")
    say(f"  peak RSS (summed)    {memory or 0:7.3f}  target <= {MEMORY_TARGET:g}: "
        f"{'MISSED' if big else 'met'}")
    for key, label in (("pss", "peak PSS (summed)"), ("cgroup", "cgroup peak charge"),
                       ("conns", "connections")):
        value = ratio(key)
        if value is not None:
            say(f"  {label:<20} {value:7.3f}")
    return slow, big


def _spawn_argv(python: Path) -> list[str]:
    """pydma's command: the dma script next to ``python``, or its main module."""
    script = python.parent / "dma"
    if script.exists():
        return [str(python), str(script)]
    return [str(python), "-c",
            "import sys; from dma.shell.main import main; sys.argv[0] = 'dma'; sys.exit(main())"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark as the options ask; exit 1 when a target is missed."""
    # Let the first runs write .pyc files, as an installed pydma has: without them
    # every run would compile our sources again (this environment sets the variable).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="messages (default 1000)")
    parser.add_argument("--size", type=int, default=2048, help="message octets (default 2048)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds one run may take (default 600)")
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python",
                        help="interpreter with pydma installed (default the repo's .venv)")
    parser.add_argument("--no-cdma", action="store_true", help="measure pydma only")
    parser.add_argument("--profile", action="store_true",
                        help="profile pydma's flush even when it meets the targets")
    parser.add_argument("--profile-top", type=int, default=25, metavar="N",
                        help="rows of the profile to print (default 25)")
    args = parser.parse_args(argv)

    python = args.python
    if not python.exists():
        raise SystemExit(f"{python} does not exist: run scripts/setup or pass --python PATH")
    use_cdma = not args.no_cdma
    if use_cdma and os.geteuid() != 0:
        print("note: skipping the C dma (it reads /etc/dma/dma.conf: needs root)",
              file=sys.stderr)
        use_cdma = False
    if use_cdma and not C_DMA.exists():
        subprocess.run([str(REPO / "scripts" / "setup")], check=False)
        if not C_DMA.exists():
            print(f"note: skipping the C dma ({C_DMA} missing)", file=sys.stderr)
            use_cdma = False

    sink = start_sink()
    work = Path(tempfile.mkdtemp(prefix="dma-flush-bench-"))
    work.chmod(0o711)  # the C dma runs as user mail and must reach its spool
    try:
        return _bench(args, python, sink, work, use_cdma)
    finally:
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def _bench(args: argparse.Namespace, python: Path, sink: Sink, work: Path,
           use_cdma: bool) -> int:
    say = print
    mail_gid = grp.getgrnam("mail").gr_gid if os.geteuid() == 0 else None
    dma = _spawn_argv(python)
    pristine = work / "pristine"
    pristine.mkdir(mode=0o700)
    fill_conf = work / "fill.conf"
    fill_conf.write_text(dma_conf(pristine, sink.port) + "DEFER\n")
    began = time.monotonic()
    fill_spool(python, dma, fill_conf, work, args.count, args.size)
    items = len(queue_files(pristine))
    say(f"queued {items} items of {args.size} octets with pydma -bq in "
        f"{time.monotonic() - began:.1f} s; sink on 127.0.0.1:{sink.port}")
    if items != args.count:
        raise SystemExit(f"expected {args.count} queued items, found {items} in {pristine}")

    run_spool = work / "spool"
    ours_conf = work / "dma.conf"
    ours_conf.write_text(dma_conf(run_spool, sink.port))

    def run(name: str) -> RunResult:
        if run_spool.exists():
            shutil.rmtree(run_spool)
        copy_spool(pristine, run_spool, mail_gid)
        if name == OURS:
            return flush_once(name, [*dma, "-C", str(ours_conf), "-q"], run_spool, sink,
                              args.count, args.timeout)
        with system_config(dma_conf(run_spool, sink.port)):
            return flush_once(name, [str(C_DMA), "-q"], run_spool, sink, args.count,
                              args.timeout)

    names = [OURS, THEIRS] if use_cdma else [OURS]
    say(f"pydma: {' '.join(dma)}")
    if use_cdma:
        say(f"C dma: {C_DMA} -q (as user mail, /etc/dma/dma.conf held during its runs)")
    say(f"{args.rounds} rounds of {args.count} messages, order alternating; "
        f"{os.cpu_count()} CPUs")
    results: list[RunResult] = []
    for number in range(args.rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            result = run(name)
            results.append(result)
            say(f"  round {number + 1}: {name:<11} {result.rate:8.1f} msg/s, "
                f"{result.delivered} delivered, {result.connections} connections, "
                f"peak RSS {_mb(result.peak_rss)} MB")
            time.sleep(1.0)  # let the sockets and page cache settle
    say("")
    medians = summarise(results, say)
    missed = any(r.delivered < args.count for r in results)
    if missed:
        say(f"some runs never had all {args.count} messages at the sink (see 'deliv')")
    slow = False
    if use_cdma:
        slow, big = ratios(medians, say)
        missed = missed or slow or big
    if slow or args.profile:
        if run_spool.exists():
            shutil.rmtree(run_spool)
        copy_spool(pristine, run_spool, mail_gid)
        sink.reset()
        say(f"\nprofile of pydma's flush (cProfile, all threads, {args.count} messages):")
        say(profile_ours(python, dma, ours_conf, work / "flush.prof", args.profile_top))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
