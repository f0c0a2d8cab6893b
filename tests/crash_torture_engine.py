"""Crash torture: real dma processes SIGKILLed at random moments, then one unkilled `dma -q`.

One engine for two callers: tests/test_crash_torture.py (CI, about 200 kills) and
bench/crash_torture.py (1000 kills by default, with its figures).

Set-up: a private site (tests/conftest.py's DmaSite) whose smarthost is an aiosmtpd
sink on loopback that offers PIPELINING, waits a little (random, a few ms) before
it answers the data, and records every message it accepted, and the mbox of the
user running the tests (MAILDIR/<login>) for local mail.  Every message carries a
unique token in its Subject and in every body line; its body's length and SHA-256
are known, so what arrives is checked byte for byte.

Two lanes run at once, each until the kills are reached and it has its share:

- submission lane: ``sendmail`` with a DEFER configuration (nothing is
  delivered, so there is no detached deliverer to chase), some fed slowly,
  SIGKILLed while reading stdin or spooling; some are left to finish.
- delivery lane (one process at a time): ``dma -q`` runs and ``sendmail -D``
  submissions (delivery in the foreground, a configuration without DEFER)
  SIGKILLed in mbox appends and SMTP transactions (inside DATA, before the reply
  to it).  One at a time, so that every copy the sink or the mbox got belongs to
  exactly one process: the sink notes which run was on when it answered, the
  mbox's length is noted around each run.

A short run spends most of its life importing Python, so most kills wait for a
trigger (the process opens its spool temp file, a Q file, the mbox, or connects
to the sink), then a random delay within the work expected after it (learnt as
the run goes: shorter after kills that came too late).  A kill is SIGSTOP of the
process group, a look at the stopped process (open files, sockets, the sink's
state of its connection) to say where it landed, then SIGKILL of the group.
Afterwards one ``dma -q`` is left to finish.

What must hold (``Result.violations`` lists every breach):

- every recipient of every submission that exited 0 (``-D``: 0 or 75) got the
  message, whole (body length and hash), at least once;
- a second copy only where the code cannot avoid one: the first copy went out in
  a run that was then killed (after the sink's reply to the data, or after the
  mbox record's fsync, and before the Q file's removal; or after the final dot
  when the sink answered 250 to a dead client, RFC 1047), never two copies in
  one run; these are counted by kind;
- no partial or foreign message in the mbox or at the sink, the mbox well formed;
- nothing listed in the queue at the end; in the spool only what the clean-up
  removes after its one-hour grace (temp files, a Q without its M, an M without
  its Q), and after ageing those by two hours another ``dma -q`` leaves nothing;
- no unexpected exit status, no Python traceback on any stderr.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import hashlib
import os
import random
import re
import select
import signal
import subprocess
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, syntax
from conftest import DmaSite, command, login_name
from smtp_peers import free_port, write_remote_config

LINE = 72  # body line length without its LF: far below 998, nothing is re-encoded
FILLER = "abcdefghijklmnopqrstuvwxyz0123456789" * 3
FEED_CHUNK = 16 * 1024
SUBJECT = re.compile(rb"^Subject: torture (T\w+)$", re.M)
SUBMIT = "submit"  # sendmail with DEFER: queue only
DIRECT = "submit -D"  # sendmail -D: queue, then deliver in the foreground
QUEUE = "dma -q"
FINAL = "final dma -q"
_LANE_PHASES = {(SUBMIT,): ("submission",), (DIRECT, QUEUE): ("local", "remote")}


@dataclass(frozen=True, slots=True)
class Settings:
    """How hard and how long to torture."""

    kills: int = 200
    seed: int = 0
    submit_workers: int = 1
    # Each lane goes on until the kills are reached and it has at least its share.
    submit_share: float = 0.3  # of the kills at least, in the submission lane
    deliver_share: float = 0.35  # of the kills at least, in the delivery lane
    sink_delay: tuple[float, float] = (0.002, 0.03)  # seconds before the reply to the data
    lock_timeout: float = 10.0  # DMA_LOCK_TIMEOUT for every run: bounds a wait on a dead lock
    max_seconds: float = 600.0  # the lanes stop here even short of their kills
    # Each of the phases submission, local and remote gets at least this many kills (the
    # lanes go on for them, within max_seconds): a run that missed one proves nothing.
    min_phase_kills: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """One message: its token, recipients, body size and how it is fed."""

    token: str
    local: str | None  # the local recipient (the login name), if any
    remote: tuple[str, ...]
    lines: int
    feed_pause: float  # seconds between FEED_CHUNK pieces of stdin
    length: int
    digest: str

    @property
    def recipients(self) -> tuple[str, ...]:
        return ((self.local,) if self.local else ()) + self.remote


def body_of(token: str, lines: int) -> bytes:
    """The body: ``lines`` numbered lines carrying the token, then an end line."""
    text = "".join(f"{token} {n:06d} {FILLER}"[:LINE] + "\n" for n in range(lines))
    return (text + f"END {token}\n").encode()


def message_of(plan: Plan) -> bytes:
    """What is submitted: Subject with the token, To, a blank line, the body."""
    head = f"Subject: torture {plan.token}\nTo: {', '.join(plan.recipients)}\n\n"
    return head.encode() + body_of(plan.token, plan.lines)


def make_plan(rng: random.Random, number: int, local_user: str) -> Plan:
    """A random message: local, remote (1-2 recipients) or both; small, medium or large."""
    token = f"T{number:05d}x{rng.getrandbits(32):08x}"
    shape = rng.random()
    local = local_user if shape < 0.65 else None
    count = 0 if shape < 0.3 else rng.choice((1, 1, 2))
    remote = tuple(f"{token.lower()}-{k}@{('example.org', 'example.net')[k]}"
                   for k in range(count))
    size = rng.random()
    if size < 0.35:
        lines = rng.randint(1, 40)
    elif size < 0.8:
        lines = rng.randint(400, 3000)  # 30 to 220 KB
    else:
        lines = rng.randint(5000, 12000)  # 370 to 880 KB
    body = body_of(token, lines)
    return Plan(token, local, remote, lines, rng.choice((0.0, 0.0, 0.001, 0.003)),
                len(body), hashlib.sha256(body).hexdigest())


# --- the sink ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message the sink accepted (answered 250 to its data)."""

    run: int | None  # the delivery run that was on when the sink answered
    token: str | None
    recipients: tuple[str, ...]
    length: int
    digest: str
    at: float  # time.monotonic() of the answer
    head: bytes  # the first octets, for reports


class _SinkSMTP(SMTP):
    """aiosmtpd's server, telling the sink where each connection is (for kill landings)."""

    def __init__(self, sink: Sink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sink = sink
        self._port: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._port = int(peer[1]) if peer else None
        self._sink.set_phase(self._port, "session")

    def connection_lost(self, error: Exception | None) -> None:
        self._sink.set_phase(self._port, None)
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        """The client is gone (killed): close our side too, instead of a half-open socket."""
        super().eof_received()
        return False

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._sink.set_phase(self._port, "data")
        try:
            await super().smtp_DATA(arg)
        finally:
            self._sink.set_phase(self._port, "session")

    def reply_pending(self) -> None:
        self._sink.set_phase(self._port, "reply")


class _SinkHandler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if isinstance(server, _SinkSMTP):
            server.reply_pending()
        delay = self.sink.next_delay()
        if delay:
            # a client killed now makes aiosmtpd cancel this: nothing recorded, no reply
            await asyncio.sleep(delay)
        self.sink.record(envelope)
        return "250 2.0.0 queued"


class Sink:
    """aiosmtpd on 127.0.0.1 offering PIPELINING; records what it accepts and for which run."""

    def __init__(self, delay: tuple[float, float], seed: int) -> None:
        self.port = free_port()
        self.current_run: int | None = None
        self.connections_seen = 0
        self.arrivals: list[Arrival] = []
        self._phases: dict[int, str] = {}
        self._lock = threading.Lock()
        self._delay = delay
        self._rng = random.Random(f"{seed}-sink")
        sink = self

        class _Controller(Controller):
            def factory(self) -> SMTP:
                return _SinkSMTP(sink, self.handler, **self.SMTP_kwargs)

        self.controller = _Controller(_SinkHandler(self), hostname="127.0.0.1", port=self.port,
                                      ready_timeout=10, server_hostname="sink.test")
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def next_delay(self) -> float:
        with self._lock:
            return self._rng.uniform(*self._delay)

    def set_phase(self, port: int | None, phase: str | None) -> None:
        if port is None:
            return
        with self._lock:
            if phase is None:
                self._phases.pop(port, None)
            elif port not in self._phases:
                self.connections_seen += 1
                self._phases[port] = phase
            else:
                self._phases[port] = phase

    def phase_of(self, port: int) -> str | None:
        with self._lock:
            return self._phases.get(port)

    def busy(self) -> bool:
        """Whether some connection is inside DATA or before its reply: it may still record."""
        with self._lock:
            return any(phase != "session" for phase in self._phases.values())

    def record(self, envelope: Any) -> None:
        content = bytes(envelope.original_content or b"").replace(b"\r\n", b"\n")
        head, _, body = content.partition(b"\n\n")
        found = SUBJECT.search(head)
        arrival = Arrival(
            self.current_run, found.group(1).decode() if found else None,
            tuple(envelope.rcpt_tos), len(body), hashlib.sha256(body).hexdigest(),
            time.monotonic(), content[:300],
        )
        with self._lock:
            self.arrivals.append(arrival)

    def wait_quiet(self, timeout: float = 5.0) -> None:
        """Wait until no connection can record a message any more: none is inside DATA
        or waiting to reply (a killed client's EOF cancels those)."""
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            time.sleep(0.002)


# --- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    """When to kill a run: ``delay`` seconds after its start, or after ``trigger``.

    Triggers: ``spool`` (the process opened its temp file in the spool: submission
    begins to read stdin), ``claim`` (it opened a Q file: a delivery begins).
    """

    trigger: str | None
    delay: float


@dataclass
class Run:
    """One dma process: what it was, when it was killed (if it was) and how it ended."""

    number: int
    kind: str
    plan: Plan | None
    kill: Kill | None
    started: float = 0.0
    triggered: float | None = None  # seconds after start when the trigger was seen
    duration: float = 0.0
    returncode: int | None = None
    landing: str = ""  # where the kill landed
    killed_at: float | None = None
    stderr: bytes = b""
    mbox_span: tuple[int, int] = (0, 0)

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def accepted(self) -> bool:
        """Its submission says the message is queued: exit 0 (``-D``: also 75, deferred)."""
        if self.kind == SUBMIT:
            return self.returncode == 0
        return self.kind == DIRECT and self.returncode in (0, 75)


@dataclass(frozen=True, slots=True)
class Copy:
    """One copy of a message that arrived somewhere."""

    where: str  # "mbox" or "sink"
    run: int | None
    whole: bool
    at: float


@dataclass
class Result:
    """What a torture did and found."""

    seed: int
    wall: float = 0.0
    runs: list[Run] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    duplicates: Counter[str] = field(default_factory=Counter)
    delivered: int = 0  # (message, recipient) pairs that arrived
    messages: int = 0  # messages of which at least one recipient got a copy
    copies: Counter[str] = field(default_factory=Counter)  # per destination, all copies
    partials: int = 0
    lost: int = 0
    killed_but_queued: int = 0
    leftovers: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return sum(1 for run in self.runs if run.killed)

    def kills_by_phase(self) -> Counter[str]:
        return Counter(run.landing.split(":", 1)[0] for run in self.runs if run.killed)

    def kills_by_landing(self) -> Counter[str]:
        return Counter(run.landing for run in self.runs if run.killed)

    def text(self) -> str:
        """The figures, one per line."""
        runs = Counter(run.kind for run in self.runs)
        killed = Counter(run.kind for run in self.runs if run.killed)
        accepted = sum(1 for run in self.runs if run.accepted)
        submitted = sum(1 for run in self.runs if run.kind in (SUBMIT, DIRECT))
        lines = [
            f"seed {self.seed}: {self.kills} SIGKILLs in {self.wall:.1f} s wall",
            "runs (killed/all): " + ", ".join(
                f"{kind} {killed[kind]}/{runs[kind]}" for kind in (SUBMIT, DIRECT, QUEUE, FINAL)),
            "kills per phase: " + ", ".join(
                f"{phase} {n}" for phase, n in sorted(self.kills_by_phase().items())),
        ]
        lines += [f"  {n:5d}  {landing}" for landing, n in sorted(
            self.kills_by_landing().items(), key=lambda pair: -pair[1])]
        lines += [
            f"submissions: {submitted}, exited 0 (-D: 0 or 75) {accepted}, killed but "
            f"(partly) queued and delivered {self.killed_but_queued}",
            f"messages delivered: {self.messages}, (message, recipient) pairs "
            f"{self.delivered}; copies: "
            + ", ".join(f"{where} {n}" for where, n in sorted(self.copies.items())),
            "duplicates: " + (", ".join(f"{kind} {n}" for kind, n in sorted(
                self.duplicates.items())) or "none"),
            f"partials: {self.partials} (must be 0), lost: {self.lost} (must be 0)",
            "spool leftovers before the aged clean-up: " + (", ".join(
                f"{kind} {n}" for kind, n in sorted(self.leftovers.items())) or "none"),
        ]
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"VIOLATION: {v}" for v in self.violations[:40]]
        if len(self.violations) > 40:
            lines.append(f"... and {len(self.violations) - 40} more violations")
        return "\n".join(lines)


def _feed(process: subprocess.Popen[bytes], data: bytes, pause: float,
          done: threading.Event) -> None:
    """Write ``data`` to the process's stdin, in pieces when ``pause``; a kill just ends it."""
    assert process.stdin is not None
    try:
        step = FEED_CHUNK if pause else len(data) or 1
        for start in range(0, len(data), step):
            process.stdin.write(data[start:start + step])
            process.stdin.flush()
            if pause:
                time.sleep(pause)
        process.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass
    finally:
        done.set()


def _reading_time(plan: Plan) -> float:
    """About how long a submission reads and spools ``plan`` once its temp file is open."""
    return 0.02 + plan.length * 3e-8 + plan.feed_pause * (plan.length // FEED_CHUNK + 1)


def _work_time(plan: Plan, trigger: str) -> float:
    """About how long a ``-D`` run works on ``plan`` after ``trigger``."""
    if trigger == "spool":
        return _reading_time(plan)
    local = 0.01 + plan.length * 2e-8 if plan.local else 0.0
    remote = 0.03 + plan.length * 2e-8 if plan.remote else 0.0
    return {"mbox": local, "smtp": remote}.get(trigger, local + remote + 0.02)


def _wait_exit(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Wait up to ``seconds`` for the process to exit (precisely: a pidfd); True if it did."""
    try:
        pidfd = os.pidfd_open(process.pid)
    except (OSError, AttributeError):
        time.sleep(seconds)
        return process.poll() is not None
    try:
        ready, _, _ = select.select([pidfd], [], [], max(0.0, seconds))
        return bool(ready)
    finally:
        os.close(pidfd)


def _pipe_pending(pid: int) -> int:
    """Octets waiting in the stopped process's stdin pipe (-1 when that cannot be told)."""
    try:
        fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return -1
    try:
        buffer = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buffer)
        return int.from_bytes(buffer, "little")
    except OSError:
        return -1
    finally:
        os.close(fd)


def _tcp_client_ports(inodes: set[str], server_port: int) -> list[int]:
    """Local ports of those sockets (by inode) that are TCP connections to ``server_port``."""
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[9] not in inodes:
                continue
            if int(fields[2].rsplit(":", 1)[1], 16) == server_port:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Torture:
    """One torture run in ``root`` (a fresh, empty directory)."""

    def __init__(self, root: Path, settings: Settings,
                 progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.progress = progress or (lambda _text: None)
        self.site = DmaSite(root)
        self.user = login_name()
        self.mbox = self.site.maildir / self.user
        self.sink = Sink(settings.sink_delay, settings.seed)
        self.live_config = write_remote_config(self.site, self.sink.port)
        self.defer_config = root / "dma-defer.conf"
        self.defer_config.write_text(self.live_config.read_text() + "DEFER\n")
        self.environ = dict(self.site.environ)
        self.environ["DMA_LOCK_TIMEOUT"] = str(settings.lock_timeout)
        self.result = Result(settings.seed)
        self.plans: dict[str, Plan] = {}
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 10**9))
        self._stop = threading.Event()
        self._estimates: dict[str, float] = {}
        self._scales: dict[tuple[str, str], float] = {}  # learnt, per kind and trigger
        self._run_marks = (0, 0)  # sink connections and mbox size when the delivery run began

    # -- running one process --

    def _number(self) -> int:
        with self._lock:
            return next(self._numbers)

    def _new_plan(self, rng: random.Random) -> Plan:
        plan = make_plan(rng, self._number(), self.user)
        with self._lock:
            self.plans[plan.token] = plan
        return plan

    def _argv(self, kind: str) -> list[str]:
        if kind == SUBMIT:
            return [*command("sendmail"), "-C", str(self.defer_config)]
        if kind == DIRECT:
            return [*command("sendmail"), "-C", str(self.live_config), "-D"]
        return [*command("dma"), "-C", str(self.defer_config), "-q"]

    def execute(self, kind: str, plan: Plan | None, kill: Kill | None,
                stderr_file: Path) -> Run:
        """Run one process to its end or to its kill; a delivery run owns the sink meanwhile."""
        run = Run(self._number(), kind, plan, kill)
        delivering = kind != SUBMIT
        if delivering:
            before = self._mbox_size()
            self._run_marks = (self.sink.connections_seen, before)
            self.sink.current_run = run.number
        with open(stderr_file, "w+b") as errors:
            process = subprocess.Popen(
                [*self._argv(kind), *(plan.recipients if plan else ())],
                stdin=subprocess.PIPE if plan else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=errors, env=self.environ,
                cwd=self.site.root, start_new_session=True,
            )
            run.started = time.monotonic()
            fed = threading.Event()
            feeder = None
            if plan is not None:
                feeder = threading.Thread(target=_feed, daemon=True,
                                          args=(process, message_of(plan), plan.feed_pause, fed))
                feeder.start()
            if kill is not None:
                self._kill_when(process, run, kill, fed)
            try:
                run.returncode = process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                run.returncode = process.wait()
                run.landing = "hung: killed after 300 s"
            run.duration = time.monotonic() - run.started
            if feeder is not None:
                feeder.join(timeout=60)
            errors.seek(0)
            run.stderr = errors.read()
        if delivering:
            self.sink.wait_quiet()
            self.sink.current_run = None
            run.mbox_span = (before, self._mbox_size())
        with self._lock:
            self.result.runs.append(run)
            if not run.killed and run.kind != FINAL:
                old = self._estimates.get(kind)
                self._estimates[kind] = run.duration if old is None else (
                    0.7 * old + 0.3 * run.duration)
        return run

    def _kill_when(self, process: subprocess.Popen[bytes], run: Run, kill: Kill,
                   fed: threading.Event) -> None:
        """Wait for the kill's trigger (if any), then its delay, then kill."""
        if kill.trigger is not None:
            seen = self._wait_trigger(process, kill.trigger)
            if seen is None:
                return
            run.triggered = seen - run.started
            wait = kill.delay - (time.monotonic() - seen)
        else:
            wait = kill.delay - (time.monotonic() - run.started)
        if not _wait_exit(process, wait):
            run.landing = self._kill(process, run.kind, fed)
            run.killed_at = time.monotonic()

    def _wait_trigger(self, process: subprocess.Popen[bytes], trigger: str) -> float | None:
        """Poll the process's open files until the trigger: it opens its temp file in the
        spool (``spool``), a Q file (``claim``), the mbox (``mbox``), or the sink sees a new
        connection (``smtp``); when that was, or None when the process exited first."""
        spool = str(self.site.spool) + os.sep
        prefix = {"spool": spool + "tmp_", "claim": spool + "Q", "mbox": str(self.mbox)}.get(
            trigger, "")
        connections = self._run_marks[0]
        fds = f"/proc/{process.pid}/fd"
        while True:
            if trigger == "smtp":
                if self.sink.connections_seen != connections:
                    return time.monotonic()
                if _wait_exit(process, 0.002):
                    return None
                continue
            try:
                names = os.listdir(fds)
            except OSError:
                return None
            for name in names:
                try:
                    target = os.readlink(f"{fds}/{name}")
                except OSError:
                    continue
                if target.startswith(prefix):
                    return time.monotonic()
            if _wait_exit(process, 0.002):
                return None

    def _kill(self, process: subprocess.Popen[bytes], kind: str, fed: threading.Event) -> str:
        """SIGSTOP the group, see where it stands, SIGKILL the group; say where it landed."""
        try:
            os.killpg(process.pid, signal.SIGSTOP)
        except ProcessLookupError:
            return "exited"
        try:
            return self._landing(process.pid, kind, fed.is_set())
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    def _landing(self, pid: int, kind: str, fed: bool) -> str:
        """Where a stopped process stands, from its open files and the sink's view."""
        targets = []
        with contextlib.suppress(OSError):
            for name in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        if not targets:
            return "other: exiting"
        mbox = str(self.mbox)
        if any(target in (mbox, mbox + " (deleted)") for target in targets):
            return "local: mbox open (locking, appending or fsync)"
        sockets = {target[8:-1] for target in targets if target.startswith("socket:[")}
        ports = _tcp_client_ports(sockets, self.sink.port) if sockets else []
        if ports:
            phases = {self.sink.phase_of(port) for port in ports}
            if "data" in phases:
                return "remote: inside DATA (message octets)"
            if "reply" in phases:
                return "remote: after the final dot, before the reply"
            return "remote: connection open (greeting, envelope, between messages)"
        spool = str(self.site.spool) + os.sep
        if any(target.startswith(spool + "tmp_") for target in targets):
            if not fed or _pipe_pending(pid) != 0:
                return "submission: reading stdin"
            return "submission: spooling (last lines, fsync, links, Q files)"
        if any(target.startswith(spool + "Q") for target in targets):
            return "delivery: items claimed, no mbox or connection open"
        if kind != QUEUE and (not fed or _pipe_pending(pid) != 0):
            return "other: start-up (stdin not read yet)"
        if kind == SUBMIT:
            return "other: submission exiting"
        worked = (self.sink.connections_seen != self._run_marks[0]
                  or self._mbox_size() != self._run_marks[1])
        if worked:
            return f"other: {kind} after its deliveries (exiting)"
        if kind == DIRECT:
            return "other: submission -D between spooling and delivery"
        return "other: queue run start-up (imports, listing the spool)"

    def _mbox_size(self) -> int:
        try:
            return self.mbox.stat().st_size
        except FileNotFoundError:
            return 0

    def _estimate(self, kind: str, default: float) -> float:
        with self._lock:
            return self._estimates.get(kind, default)

    def _kills_of(self, kinds: tuple[str, ...]) -> int:
        with self._lock:
            return sum(1 for run in self.result.runs if run.killed and run.kind in kinds)

    # -- the lanes --

    def _kill_plan(self, kind: str, trigger: str | None, rng: random.Random,
                   work: float) -> Kill:
        """A kill at a random moment of the work after ``trigger`` (expected to take about
        ``work`` seconds, scaled by what was learnt), or of the whole run without one.

        Python's imports take most of a short run (0.1 to 0.7 s, with the machine's
        load), so a moment drawn over the whole run would mostly hit them: most kills
        wait for a trigger.
        """
        with self._lock:
            if trigger is None:
                return Kill(None, rng.uniform(0.0, 1.1 * self._estimates.get(kind, 0.5)))
            scale = self._scales.get((kind, trigger), 1.0)
        return Kill(trigger, rng.uniform(0.0, scale * work))

    def _learn(self, run: Run) -> None:
        """After a triggered kill: aim earlier when it came too late, else a bit later."""
        if run.kill is None or run.kill.trigger is None or run.triggered is None:
            return
        key = (run.kind, run.kill.trigger)
        late = not run.killed or run.landing.startswith("other")
        with self._lock:
            scale = self._scales.get(key, 1.0) * (0.9 if late else 1.01)
            self._scales[key] = min(20.0, max(0.05, scale))

    def _go_on(self, kinds: tuple[str, ...], share: float, deadline: float) -> bool:
        """Whether a lane goes on: short of the kills in all, or of its own share."""
        if self._stop.is_set() or time.monotonic() >= deadline:
            return False
        with self._lock:
            total = sum(1 for run in self.result.runs if run.killed)
            own = sum(1 for run in self.result.runs if run.killed and run.kind in kinds)
        if total < self.settings.kills or own < share * self.settings.kills:
            return True
        return any(self._short_of(phase) for phase in _LANE_PHASES[kinds])

    def _short_of(self, phase: str) -> bool:
        """Whether ``phase`` has fewer kills than ``min_phase_kills``."""
        with self._lock:
            return self.result.kills_by_phase()[phase] < self.settings.min_phase_kills

    def _submission_lane(self, worker: int, deadline: float, scratch: Path) -> None:
        rng = random.Random(f"{self.settings.seed}-submit-{worker}")
        while self._go_on((SUBMIT,), self.settings.submit_share, deadline):
            plan = self._new_plan(rng)
            kill = None
            if rng.random() < 0.8:
                trigger = "spool" if rng.random() < 0.9 else None
                kill = self._kill_plan(SUBMIT, trigger, rng, _reading_time(plan))
            self._learn(self.execute(SUBMIT, plan, kill, scratch / f"submit-{worker}.err"))

    def _queued(self) -> tuple[int, int]:
        """How many local and remote items are queued (Q files naming the local user)."""
        local = remote = 0
        for name in os.listdir(self.site.spool):
            if not name.startswith("Q"):
                continue
            try:
                text = (self.site.spool / name).read_bytes()
            except OSError:
                continue
            if f"\nRecipient: {self.user}\n".encode() in text:
                local += 1
            else:
                remote += 1
        return local, remote

    def _delivery_lane(self, deadline: float, scratch: Path) -> None:
        rng = random.Random(f"{self.settings.seed}-deliver")
        while self._go_on((DIRECT, QUEUE), self.settings.deliver_share, deadline):
            local, remote = self._queued()
            kill = None
            if local + remote < 2 or rng.random() < 0.2:
                plan = self._new_plan(rng)
                if rng.random() < 0.85:
                    triggers = ["spool", "claim"]
                    triggers += ["mbox", "mbox"] if plan.local else []
                    triggers += ["smtp", "smtp"] if plan.remote else []
                    trigger = rng.choice(triggers)
                    kill = self._kill_plan(DIRECT, trigger, rng, _work_time(plan, trigger))
                run = self.execute(DIRECT, plan, kill, scratch / "deliver.err")
            else:
                if rng.random() < 0.85:
                    choices: list[tuple[str | None, float]] = [
                        (None, 0.0), ("claim", 0.02 + 0.02 * (local + remote))]
                    if local:
                        choices += [("mbox", 0.02 * local)] * 2
                    if remote:
                        choices += [("smtp", 0.03 * remote)] * 2
                    when, work = rng.choice(choices)
                    kill = self._kill_plan(QUEUE, when, rng, work)
                run = self.execute(QUEUE, None, kill, scratch / "deliver.err")
            self._learn(run)

    def run(self) -> Result:
        """Torture, finish with an unkilled ``dma -q``, check; the Result has it all."""
        began = time.monotonic()
        scratch = self.site.root / "stderr"
        scratch.mkdir()
        self.site.spool.mkdir()
        deadline = began + self.settings.max_seconds
        lanes = [threading.Thread(target=self._delivery_lane, args=(deadline, scratch))]
        lanes += [threading.Thread(target=self._submission_lane, args=(n, deadline, scratch))
                  for n in range(self.settings.submit_workers)]
        try:
            for lane in lanes:
                lane.start()
            while any(lane.is_alive() for lane in lanes):
                for lane in lanes:
                    lane.join(timeout=5)
                self.progress(f"{self.result.kills} kills, {time.monotonic() - began:.0f} s")
        finally:
            self._stop.set()
            for lane in lanes:
                lane.join()
        self.execute(FINAL, None, None, scratch / "final.err")
        self.result.wall = time.monotonic() - began
        try:
            self.check()
        finally:
            self.sink.stop()
        return self.result

    # -- the checks --

    def check(self) -> None:
        """Fill in the result's figures and violations."""
        result = self.result
        copies: dict[tuple[str, str], list[Copy]] = {}
        runs = {run.number: run for run in result.runs}
        self._check_runs()
        for token, recipient, copy in self._mbox_copies() + self._sink_copies():
            copies.setdefault((token, recipient), []).append(copy)
            result.copies[copy.where] += 1
        by_run_plan = {run.plan.token: run for run in result.runs if run.plan is not None}
        for token, plan in sorted(self.plans.items()):
            submission = by_run_plan.get(token)
            if submission is None:
                continue
            arrived_any = False
            for recipient in plan.recipients:
                found = sorted(copies.pop((token, recipient), []), key=lambda c: c.at)
                whole = [copy for copy in found if copy.whole]
                result.partials += len(found) - len(whole)
                if whole:
                    arrived_any = True
                    result.delivered += 1
                elif submission.accepted:
                    result.lost += 1
                    result.violations.append(
                        f"lost: {token} to {recipient} ({submission.kind} exited "
                        f"{submission.returncode}, run {submission.number})")
                for copy in found:
                    if not copy.whole:
                        result.violations.append(
                            f"partial: {token} to {recipient} in the {copy.where} (run "
                            f"{copy.run}, {self._describe(runs.get(copy.run or -1))})")
                self._check_duplicates(token, recipient, whole, runs)
            result.messages += arrived_any
            if arrived_any and not submission.accepted:
                result.killed_but_queued += 1
        for (token, recipient), found in sorted(copies.items()):
            result.violations.append(
                f"foreign: {len(found)} cop(ies) of {token} to {recipient}, not one of its "
                f"recipients or no message of ours")
        self._check_queue_and_spool()

    def _describe(self, run: Run | None) -> str:
        if run is None:
            return "no run"
        if run.killed and run.kill is not None:
            after = f" {run.kill.trigger} +" if run.kill.trigger else ""
            return f"{run.kind} killed{after} {run.kill.delay:.3f} s: {run.landing}"
        return f"{run.kind} exited {run.returncode}"

    def _check_duplicates(self, token: str, recipient: str, whole: list[Copy],
                          runs: dict[int, Run]) -> None:
        """Copies beyond the first: each earlier one from a distinct run that was killed."""
        if len(whole) < 2:
            return
        seen: set[int | None] = set()
        for copy in whole:
            if copy.run in seen:
                self.result.violations.append(
                    f"duplicate in one run: {token} to {recipient} twice in run {copy.run} "
                    f"({copy.where})")
            seen.add(copy.run)
        for copy in whole[:-1]:
            run = runs.get(copy.run or -1)
            if run is None or not run.killed:
                self.result.violations.append(
                    f"duplicate outside the window: {token} to {recipient}: a copy from run "
                    f"{copy.run} ({self._describe(run)}) was followed by another")
                continue
            if copy.where == "sink":
                late = run.killed_at is not None and copy.at > run.killed_at
                kind = ("remote: killed after the final dot, the sink answered 250 after "
                        "(RFC 1047)" if late else
                        "remote: killed after the sink's reply, before the Q file's removal")
            else:
                kind = "local: killed after the mbox write, before the Q file's removal"
            self.result.duplicates[kind] += 1

    def _check_runs(self) -> None:
        """Exit statuses as expected; no traceback anywhere."""
        for run in self.result.runs:
            if run.landing.startswith("hung"):
                self.result.violations.append(f"run {run.number} ({run.kind}) hung for 300 s")
            if b"Traceback" in run.stderr:
                self.result.violations.append(
                    f"traceback from run {run.number} ({self._describe(run)}): "
                    f"{run.stderr.decode(errors='replace')[-1500:]}")
            if run.killed:
                continue
            expected: tuple[int, ...] = (0,)
            if run.kind == DIRECT:
                expected = (0, 75)
            if run.returncode not in expected:
                self.result.violations.append(
                    f"run {run.number} ({run.kind}) exited {run.returncode}: "
                    f"{run.stderr.decode(errors='replace')[-800:]}")

    def _run_at(self, offset: int) -> int | None:
        """The delivery run whose mbox span holds ``offset``."""
        spans = sorted((run.mbox_span[0], run.mbox_span[1], run.number)
                       for run in self.result.runs if run.mbox_span[1] > run.mbox_span[0])
        starts = [span[0] for span in spans]
        index = bisect.bisect_right(starts, offset) - 1
        if index >= 0 and spans[index][0] <= offset < spans[index][1]:
            return spans[index][2]
        return None

    def _mbox_copies(self) -> list[tuple[str, str, Copy]]:
        """Every record of the mbox as a copy; malformed ones are violations."""
        found: list[tuple[str, str, Copy]] = []
        try:
            data = self.mbox.read_bytes()
        except FileNotFoundError:
            return found
        if data and not data.startswith(b"From "):
            self.result.violations.append(f"mbox does not start with 'From ': {data[:80]!r}")
        if data and not data.endswith(b"\n\n"):
            self.result.violations.append(f"mbox does not end in a blank line: {data[-80:]!r}")
        for start, record in _records(data):
            run = self._run_at(start)
            if not record.endswith(b"\n\n"):
                self.result.violations.append(
                    f"mbox record at {start} (run {run}) does not end in a blank line")
            _, _, message = record.partition(b"\n")
            head, _, body = message[:-1].partition(b"\n\n")
            token = SUBJECT.search(head)
            if token is None:
                self.result.partials += 1
                self.result.violations.append(
                    f"partial or foreign mbox record at {start}, {len(record)} octets (run "
                    f"{run}, {self._describe(self._run(run))}): {record[:200]!r}")
                continue
            plan = self.plans.get(token.group(1).decode())
            whole = plan is not None and (len(body), hashlib.sha256(body).hexdigest()) == (
                plan.length, plan.digest)
            found.append((token.group(1).decode(), self.user,
                          Copy("mbox", run, whole, float(start))))
        return found

    def _run(self, number: int | None) -> Run | None:
        for run in self.result.runs:
            if run.number == number:
                return run
        return None

    def _sink_copies(self) -> list[tuple[str, str, Copy]]:
        found: list[tuple[str, str, Copy]] = []
        for arrival in self.sink.arrivals:
            if arrival.run is None:
                self.result.violations.append(f"the sink got a message outside any run: "
                                              f"{arrival.head[:200]!r}")
            if arrival.token is None:
                self.result.violations.append(f"foreign message at the sink: "
                                              f"{arrival.head[:200]!r}")
                continue
            plan = self.plans.get(arrival.token)
            whole = plan is not None and (arrival.length, arrival.digest) == (
                plan.length, plan.digest)
            for recipient in arrival.recipients:
                found.append((arrival.token, recipient,
                              Copy("sink", arrival.run, whole, arrival.at)))
        return found

    def _check_queue_and_spool(self) -> None:
        result = self.result
        listed = self.site.run(["-bj"], config=self.defer_config)
        if listed.returncode != 0 or listed.stdout.strip():
            result.violations.append(
                f"queue not empty after the final run: {listed.stdout.decode()[:1500]} "
                f"{listed.stderr.decode()[:500]}")
        names = self.site.spool_names()
        quarantine = self.site.spool / "quarantine"
        if quarantine.is_dir() and any(quarantine.iterdir()):
            result.violations.append(f"quarantined: {sorted(os.listdir(quarantine))}")
        names.discard("quarantine")
        for name in names:
            if name.startswith("tmp_q"):
                result.leftovers["tmp_q* (Q text being written)"] += 1
            elif name.startswith("tmp_"):
                result.leftovers["tmp_* (message being written)"] += 1
            elif name[:1] == "Q" and "M" + name[1:] not in names:
                result.leftovers["Q without M (killed mid-removal)"] += 1
            elif name[:1] == "M" and "Q" + name[1:] not in names:
                result.leftovers["M without Q (killed mid-commit)"] += 1
            else:
                result.violations.append(f"unexpected spool entry after the final run: {name}")
        old = time.time() - 2 * 3600
        for name in names:
            with contextlib.suppress(OSError):
                os.utime(self.site.spool / name, (old, old))
        cleaned = self.site.run(["-q"], config=self.defer_config,
                                env={"DMA_LOCK_TIMEOUT": str(self.settings.lock_timeout)})
        remaining = self.site.spool_names() - {"quarantine"}
        if cleaned.returncode != 0 or remaining:
            result.violations.append(
                f"after ageing the leftovers by 2 h, dma -q left {sorted(remaining)[:20]} "
                f"(exit {cleaned.returncode}: {cleaned.stderr.decode()[:300]})")
        for name in sorted(os.listdir(self.site.maildir)) if self.site.maildir.is_dir() else []:
            if name != self.user:
                result.notes.append(f"left in MAILDIR: {name} (a dead writer's dotlock?)")


def _records(data: bytes) -> Iterator[tuple[int, bytes]]:
    """The mbox's records: (offset, bytes) from a ``From `` line at the start or after a
    blank line, up to the next one (our bodies never hold a line starting ``From ``)."""
    starts = [0] if data.startswith(b"From ") else []
    starts += [match.start() + 2 for match in re.finditer(rb"\n\nFrom ", data)]
    if not starts and data:
        starts = [0]
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        yield start, data[start:end]


def torture(root: Path, settings: Settings,
            progress: Callable[[str], None] | None = None) -> Result:
    """Run one torture in the empty directory ``root``."""
    return Torture(root, settings, progress).run()
