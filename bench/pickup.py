"""Pickup latency in system mode (issue 9 item 2): from a user's ``sendmail`` exiting to the
message's final dot at a loopback SMTP sink, pydma against the C dma in the same run.

Everything runs as root in a private mount namespace (``unshare -m``) where /etc, /usr,
/var and /root are overlayfs mounts over the host's own trees (tests/host_namespace.py's
technique; /root is overlaid so that it can be made 0711 there: the throwaway user and
user dma must reach a venv under it), and a tmpfs over /run, so that no systemd is
reachable and install-system starts the runner itself.  The host is left as it was.
Inside:

1. A raw asyncio SMTP sink on 127.0.0.1 (a child of this process; the namespace shares
   the network and the clock) notes ``time.monotonic()`` at each message's final dot
   and hands it, with the message's token, to this process through a pipe.
2. ``/etc/dma/dma.conf`` (SMARTHOST 127.0.0.1, PORT of the sink, MAILNAME), then
   ``dma install-system --force`` (it sets the host's MTA aside and starts the queue
   runner as it does on a host without systemd: ``dma -q5m``, detached, watching the
   maildrop with inotify).
3. A throwaway user runs ``/usr/sbin/sendmail -f u@example.org r@example.org`` with a
   2 KB message on stdin: pydma's sendmail drops it into the maildrop and exits; the
   runner picks it up and delivers it through its unprivileged child.  The C dma
   (Debian's 0.13, ``.cache/cdma/usr/sbin/dma``, set-gid mail) is run the same way by
   the same user; it spools into its own spool (root:mail 2770) and delivers from a
   background process it forks right after submission.  It reads only the fixed
   /etc/dma/dma.conf, so that file holds the C dma's configuration (its own SPOOLDIR)
   during its runs only; pydma's runner read its configuration at start.
4. Rounds alternate the order of the two; before each submission the previous message's
   work is let finish (the spools empty, then a short pause).  One warm-up round each
   is not counted (the runner imports the delivery code on its first message).

The figure of a run is the sink's final dot minus the moment ``wait()`` saw the
submitting process exit.  Target (issue 9): pydma's median at most 150 ms.  When it is
missed (or with ``--profile``) further pydma rounds run with the runner under strace
(only the syscalls that mark the phases) to show where the time goes.

``--python`` names the interpreter under test: one with pydma installed (a ``dma``
script next to it; default the repo's .venv), or a bare one (``/usr/bin/python3``),
in which case a venv of it is made (``--venv``, default /tmp/dma-pickup-venv) and pydma
installed there, not editable, as bench/submit.py does.
"""

from __future__ import annotations

import argparse
import asyncio
import grp
import multiprocessing
import os
import pwd
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _venv import describe, pydma_python  # bench/_venv.py, shared with flush.py

REPO = Path(__file__).resolve().parent.parent
C_DMA = REPO / ".cache" / "cdma" / "usr" / "sbin" / "dma"
SYSTEM_CONF = Path("/etc/dma/dma.conf")
PYDMA_SPOOL = Path("/var/spool/dma")
C_SPOOL = Path("/var/spool/dma-c")
RUNNER_LOCK = PYDMA_SPOOL / ".runner.lock"
SENDMAIL = "/usr/sbin/sendmail"
MAILNAME = "bench.example"
SENDER = "u@example.org"
RECIPIENT = "r@example.org"
BENCH_USER = "dmapickup"
OURS = "pydma"
THEIRS = "C dma 0.13"
TARGET_MS = 150.0
OVERLAID = ("/etc", "/usr", "/var", "/root")

# bash, as root in the new mount namespace: overlay the trees, then run the inner bench
_SETUP = r"""
set -eu
layers=$1; shift
mount --make-rprivate /
for tree in {trees}; do
    name=$(echo "$tree" | tr / _)
    mkdir -p "$layers/$name/upper" "$layers/$name/work"
    mount -t overlay overlay \
        -o "lowerdir=$tree,upperdir=$layers/$name/upper,workdir=$layers/$name/work" "$tree"
done
chmod 711 /root
# no systemd reachable: install-system starts the runner itself, as on a host without it
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -m 1777 /run/lock
exec "$@"
"""


# --- the sink ---------------------------------------------------------------------------


class _SinkSession(asyncio.Protocol):
    """One SMTP connection: accept everything; at each final dot write the time and the
    message's token (``X-Bench-Token``) to the report pipe."""

    def __init__(self, report_fd: int) -> None:
        self.report_fd = report_fd
        self.buffer = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(b"220 sink.bench ESMTP ready\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = bytearray()
        while self.transport is not None:
            if self.in_data:
                end = self.buffer.find(b"\r\n.\r\n")
                if end < 0:
                    break
                now = time.monotonic()
                token = re.search(rb"(?m)^X-Bench-Token: (\S+)", self.buffer[:end])
                os.write(self.report_fd, b"%r %s\n" % (now, token.group(1) if token else b"-"))
                del self.buffer[: end + 5]
                self.in_data = False
                out += b"250 2.0.0 Ok: queued\r\n"
                continue
            eol = self.buffer.find(b"\n")
            if eol < 0:
                break
            verb = bytes(self.buffer[:4]).upper()
            del self.buffer[: eol + 1]
            if verb == b"EHLO":
                out += b"250-sink.bench\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
            elif verb == b"HELO":
                out += b"250 sink.bench\r\n"
            elif verb == b"DATA":
                out += b"354 End data with <CR><LF>.<CR><LF>\r\n"
                self.in_data = True
                self.buffer[0:0] = b"\r\n"  # so that a dot on the first line is found
            elif verb == b"QUIT":
                self.transport.write(bytes(out) + b"221 2.0.0 Bye\r\n")
                self.transport.close()
                self.transport = None
                return
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                out += b"250 2.0.0 Ok\r\n"
            else:
                out += b"502 5.5.2 command not implemented\r\n"
        if out and self.transport is not None:
            self.transport.write(bytes(out))


def _sink_main(report_fd: int, port_fd: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: _SinkSession(report_fd), "127.0.0.1", 0))
    os.write(port_fd, b"%d\n" % server.sockets[0].getsockname()[1])
    os.close(port_fd)
    loop.run_forever()


@dataclass
class Sink:
    """The sink process, its port, and the read end of its report pipe."""

    process: multiprocessing.process.BaseProcess
    port: int
    reports: int
    pending: bytearray = field(default_factory=bytearray)

    def arrival(self, token: str, deadline: float, stray: list[str]) -> float | None:
        """The final dot's time of the message carrying ``token``, or None at the deadline;
        other messages' tokens go to ``stray``."""
        while True:
            while b"\n" in self.pending:
                line, _, rest = bytes(self.pending).partition(b"\n")
                self.pending[:] = rest
                when, seen = line.decode().split(" ", 1)
                if seen == token:
                    return float(when)
                stray.append(seen)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.reports], [], [], left)[0]:
                return None
            self.pending += os.read(self.reports, 65536)

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(5)


def start_sink() -> Sink:
    context = multiprocessing.get_context("fork")
    reports_in, reports_out = os.pipe()
    port_in, port_out = os.pipe()
    process = context.Process(target=_sink_main, args=(reports_out, port_out), daemon=True)
    process.start()
    os.close(reports_out)
    os.close(port_out)
    if not select.select([port_in], [], [], 10)[0]:
        process.terminate()
        raise SystemExit("the SMTP sink did not start within 10 s")
    port = int(os.read(port_in, 64))
    os.close(port_in)
    return Sink(process, port, reports_in)


# --- one run ------------------------------------------------------------------------------


def message_text(token: str, size: int) -> bytes:
    """A plain-text message of ``size`` octets carrying ``token``, like a cron report."""
    head = (f"From: {SENDER}\nTo: {RECIPIENT}\nSubject: pickup bench\n"
            f"X-Bench-Token: {token}\n\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return (head + body)[: size - 1] + b"\n"


@dataclass(frozen=True)
class Submitter:
    """Who runs the submissions: a throwaway user, or root where set-gid cannot work."""

    uid: int
    gid: int
    name: str

    def environment(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/", "LANG": "C.UTF-8",
                "LOGNAME": self.name, "USER": self.name}


@dataclass(frozen=True)
class Run:
    name: str
    latency: float | None  # seconds from the submitter's exit to the final dot
    submission: float  # seconds the submitting process ran
    exited: float  # when it exited (monotonic)
    status: int
    stderr: str


def submit_once(name: str, argv: Sequence[str], who: Submitter, sink: Sink, token: str,
                size: int, work: Path, timeout: float, stray: list[str]) -> Run:
    """Run one submission as ``who`` and wait for its message at the sink."""
    message = work / "message"
    message.write_bytes(message_text(token, size))
    err = work / "stderr"
    with message.open("rb") as stdin, err.open("wb") as stderr:
        # files, not pipes: the C dma's background deliverer keeps its stderr open
        started = time.monotonic()
        process = subprocess.Popen(
            list(argv), stdin=stdin, stdout=stderr, stderr=stderr, cwd="/",
            env=who.environment(), close_fds=True, user=who.uid if who.uid else None,
            group=who.gid if who.uid else None, extra_groups=[] if who.uid else None,
        )
        status = process.wait()
        exited = time.monotonic()
    dot = sink.arrival(token, exited + timeout, stray) if status == 0 else None
    return Run(name, None if dot is None else dot - exited, exited - started, exited, status,
               err.read_text(errors="replace").strip())


def settle(spools: Sequence[Path], pause: float) -> None:
    """Let the last message's work finish: no Q file left, the maildrop empty; a pause."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        busy = any(entry.name.startswith("Q") for spool in spools if spool.exists()
                   for entry in os.scandir(spool))
        drop = PYDMA_SPOOL / "maildrop"
        if not busy and not (drop.exists() and any(os.scandir(drop))):
            break
        time.sleep(0.01)
    time.sleep(pause)


def write_conf(text: str) -> None:
    """Replace /etc/dma/dma.conf at once (a reader sees the old file or the new one)."""
    new = SYSTEM_CONF.with_name("dma.conf.bench-new")
    new.write_text(text)
    new.chmod(0o644)
    new.replace(SYSTEM_CONF)


def pydma_conf(port: int) -> str:
    return f"SMARTHOST 127.0.0.1\nPORT {port}\nMAILNAME {MAILNAME}\n"


def c_conf(port: int) -> str:
    return f"SPOOLDIR {C_SPOOL}\nSMARTHOST 127.0.0.1\nPORT {port}\nMAILNAME {MAILNAME}\n"


# --- the figures --------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def spread(values: Sequence[float]) -> tuple[float, float, float, float, float]:
    """Minimum, first quartile, median, third quartile, maximum."""
    if len(values) == 1:
        return (values[0],) * 5
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return min(values), q1, median, q3, max(values)


def report(runs: Sequence[Run], names: Sequence[str], say: Callable[[str], None]
           ) -> dict[str, float]:
    """The table of latencies (ms) per implementation, with the time the submitting
    process ran and start to final dot for context; the medians of the latency."""
    say("| ms | runs | exit -> dot: min | q1 | **median** | q3 | max "
        "| submission ran (median) | start -> dot (median) |")
    say("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians: dict[str, float] = {}
    for name in names:
        mine = [run for run in runs if run.name == name]
        values = [run.latency for run in mine if run.latency is not None]
        if not values:
            say(f"| {name} | 0 of {len(mine)} | | | | | | | |")
            continue
        low, q1, median, q3, high = spread(values)
        medians[name] = median
        lost = "" if len(values) == len(mine) else f" of {len(mine)}"
        ran = statistics.median(run.submission for run in mine)
        whole = statistics.median(run.submission + run.latency for run in mine
                                  if run.latency is not None)
        say(f"| {name} | {len(values)}{lost} | {_ms(low)} | {_ms(q1)} | **{_ms(median)}** | "
            f"{_ms(q3)} | {_ms(high)} | {_ms(ran)} | {_ms(whole)} |")
    return medians


# --- where pydma's time goes ----------------------------------------------------------------

_TRACED = ("pselect6,select,openat,unlinkat,clone,clone3,setresuid,connect,sendto,write,"
           "wait4")
_LINE = re.compile(r"^(\d+)\s+(\d+\.\d+) (.*)$")
_MAILDROP_DIR = re.compile(r'^openat\(AT_FDCWD, "[^"]*/maildrop", .*O_DIRECTORY')
_IN_MAILDROP = re.compile(r'^openat\(\d+, "([^"/]+)", O_RDONLY')
PHASES = (
    ("wake", "the runner's select() on its inotify fd returns (that pass picks the file up)"),
    ("opened", "it opens the maildrop file"),
    ("queued", "the spool holds the message: the maildrop file is unlinked"),
    ("fork", "it forks the remote-delivery child"),
    ("dropped", "the child has given up root (setresuid)"),
    ("connect", "the child connects to the sink"),
    ("ehlo", "it sends EHLO (the sink's greeting came)"),
    ("data", "it sends the message's first octets"),
)


def trace_phases(text: str, offset: float) -> dict[str, float]:
    """The moments (monotonic: strace's -ttt wall clock minus ``offset``) of one pickup's
    phases, in order, from the runner's ``strace -f -ttt`` lines of one round."""
    found: dict[str, float] = {}
    last_wake: float | None = None
    in_dir = False
    name = ""
    after: list[tuple[str, Callable[[str], bool]]] = [
        ("queued", lambda call: call.startswith("unlinkat(") and f'"{name}"' in call),
        ("fork", lambda call: call.startswith(("clone(", "clone3("))),
        ("dropped", lambda call: call.startswith("setresuid(")),
        ("connect", lambda call: call.startswith("connect(") and "AF_INET" in call),
        ("ehlo", lambda call: call.startswith("sendto(") and '"EHLO ' in call),
        ("data", lambda call: call.startswith("sendto(") and not re.match(
            r'sendto\(\d+, "(MAIL|RCPT|DATA)', call)),
    ]
    for raw in text.splitlines():
        match = _LINE.match(raw)
        if match is None:
            continue
        when, call = float(match.group(2)) - offset, match.group(3)
        if "select" in call.split("(", 1)[0] and re.search(r"\) = [1-9]", call):
            last_wake = when
        elif "opened" not in found:
            in_dir = in_dir or _MAILDROP_DIR.match(call) is not None
            hit = _IN_MAILDROP.match(call) if in_dir else None
            if hit is not None:
                name, found["opened"] = hit.group(1), when
                if last_wake is not None:
                    found["wake"] = last_wake
        elif after and after[0][1](call):
            found[after.pop(0)[0]] = when
    return found


# --- the bench inside the namespace -----------------------------------------------------------


def inside(args: argparse.Namespace) -> int:
    """Set system mode up on this host copy and run the rounds."""
    say = print
    python = Path(args.python)
    dma = python.parent / "dma"
    sink = start_sink()
    work = Path(tempfile.mkdtemp(prefix="dma-pickup-"))
    work.chmod(0o755)
    try:
        return _bench(args, python, dma, sink, work, say)
    finally:
        subprocess.run([str(python), "-c", "import sys; from dma.adapters.host_admin import "
                        "stop_runner; stop_runner(sys.argv[1], 20)", str(RUNNER_LOCK)],
                       check=False)
        sink.stop()
        shutil.rmtree(work, ignore_errors=True)


def _install(dma: Path, port: int, say: Callable[[str], None]) -> None:
    SYSTEM_CONF.parent.mkdir(exist_ok=True)
    write_conf(pydma_conf(port))
    done = subprocess.run([str(dma), "install-system", "--force"], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"dma install-system --force exited {done.returncode}:\n"
                         f"{done.stdout}{done.stderr}")
    for line in done.stdout.splitlines():
        if "queue runner" in line or "systemctl" in line:
            say(f"install-system: {line.strip()}")


def _c_submitter(user: Submitter, port: int) -> tuple[Submitter, str]:
    """The user when the C dma's set-gid bit works for them here, else root (said why)."""
    mail = grp.getgrnam("mail").gr_gid
    C_SPOOL.mkdir(exist_ok=True)
    os.chown(C_SPOOL, 0, mail)
    C_SPOOL.chmod(0o2770)
    write_conf(c_conf(port))
    try:
        probe = subprocess.run(
            [str(C_DMA), "-bp"], capture_output=True, text=True, check=False, cwd="/",
            env=user.environment(), user=user.uid, group=user.gid, extra_groups=[])
    finally:
        write_conf(pydma_conf(port))
    if probe.returncode == 0:
        return user, f"as {user.name}, set-gid mail"
    return Submitter(0, 0, "root"), (f"as root: its set-gid bit does not work for "
                                      f"{user.name} here ({probe.stderr.strip()})")


def _bench(args: argparse.Namespace, python: Path, dma: Path, sink: Sink, work: Path,
           say: Callable[[str], None]) -> int:
    _install(dma, sink.port, say)
    subprocess.run(["useradd", "--no-create-home", "--user-group", BENCH_USER], check=True)
    entry = pwd.getpwnam(BENCH_USER)
    user = Submitter(entry.pw_uid, entry.pw_gid, BENCH_USER)
    sendmail = [SENDMAIL, "-f", SENDER, RECIPIENT]
    names = [OURS]
    c_who, c_note = user, ""
    if not args.no_cdma:
        if C_DMA.exists():
            c_who, c_note = _c_submitter(user, sink.port)
            names.append(THEIRS)
        else:
            say(f"note: {C_DMA} is missing (scripts/setup fetches it): pydma only")
    say(f"pydma: {describe(python)}; {SENDMAIL} -> {os.readlink(SENDMAIL)}, "
        f"as {user.name}; the runner: {dma} -q5m as install-system started it")
    if len(names) > 1:
        say(f"C dma: {C_DMA} ({c_note}), spool {C_SPOOL}")
    say(f"{args.rounds} rounds of one {args.size}-octet message each, order alternating, "
        f"after one warm-up each; {os.cpu_count()} CPUs; sink 127.0.0.1:{sink.port}")
    stray: list[str] = []
    runs: list[Run] = []
    counter = 0

    def one(name: str) -> Run:
        nonlocal counter
        counter += 1
        token = f"{'py' if name == OURS else 'c'}-{counter}-{os.urandom(4).hex()}"
        if name == OURS:
            settle([PYDMA_SPOOL], args.pause)
            return submit_once(name, sendmail, user, sink, token, args.size, work,
                               args.timeout, stray)
        settle([C_SPOOL], args.pause)
        write_conf(c_conf(sink.port))
        try:
            return submit_once(name, [str(C_DMA), *sendmail[1:]], c_who, sink, token,
                               args.size, work, args.timeout, stray)
        finally:
            settle([C_SPOOL], 0)
            write_conf(pydma_conf(sink.port))

    for name in names:
        warm = one(name)
        say(f"  warm-up: {name:<10} "
            f"{'lost' if warm.latency is None else _ms(warm.latency) + ' ms'}"
            f"{'' if warm.status == 0 else f' exit {warm.status}: {warm.stderr}'}")
    for number in range(args.rounds):
        order = names if number % 2 == 0 else names[::-1]
        for name in order:
            run = one(name)
            runs.append(run)
            if run.status != 0 or run.latency is None or run.stderr or args.verbose:
                said = "lost" if run.latency is None else f"{_ms(run.latency)} ms"
                say(f"  round {number + 1}: {name:<10} {said}, exit {run.status}"
                    f"{': ' + run.stderr if run.stderr else ''}")
    say("")
    medians = report(runs, names, say)
    if stray:
        say(f"note: {len(stray)} message(s) at the sink that no round was waiting for")
    ours = medians.get(OURS)
    missed = ours is None or ours * 1000 > TARGET_MS or any(
        run.latency is None for run in runs)
    if THEIRS in medians and ours is not None:
        say(f"\nratio of medians pydma / C dma: {ours / medians[THEIRS]:.2f}")
    say(f"target: pydma median <= {TARGET_MS:g} ms: "
        f"{'MISSED' if missed else 'met'}")
    if missed or args.profile:
        profile(args, dma, user, sink, work, sendmail, say)
    return 1 if missed else 0


def profile(args: argparse.Namespace, dma: Path, user: Submitter, sink: Sink, work: Path,
            sendmail: Sequence[str], say: Callable[[str], None]) -> None:
    """pydma rounds with the runner under strace (the syscalls that mark each phase only,
    filtered in the kernel): the median moment of each phase, counted from the
    sendmail's exit (negative: before it)."""
    if shutil.which("strace") is None:
        say("note: no strace here: no profile of the runner")
        return
    subprocess.run([str(dma.parent / "python"), "-c", "import sys; from dma.adapters."
                    "host_admin import stop_runner; stop_runner(sys.argv[1], 20)",
                    str(RUNNER_LOCK)], check=True)
    trace = work / "runner.strace"
    runner = subprocess.Popen(
        ["strace", "-f", "-ttt", "-qq", "--seccomp-bpf", "-e", f"trace={_TRACED}",
         "-o", str(trace), str(dma), "-q5m"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, cwd="/", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                              "LANG": "C.UTF-8"})
    stray: list[str] = []
    table: dict[str, list[float]] = {}
    try:
        time.sleep(2)
        for number in range(args.profile_rounds + 1):
            settle([PYDMA_SPOOL], args.pause)
            before = trace.stat().st_size
            run = submit_once(OURS, sendmail, user, sink, f"prof-{number}-{os.urandom(4).hex()}",
                              args.size, work, args.timeout, stray)
            settle([PYDMA_SPOOL], 0.05)
            if run.latency is None or number == 0:  # the first imports the delivery code
                continue
            with trace.open("rb") as whole:
                whole.seek(before)
                text = whole.read().decode(errors="replace")
            for key, value in trace_phases(text, time.time() - time.monotonic()).items():
                table.setdefault(key, []).append(value - run.exited)
            table.setdefault("final dot", []).append(run.latency)
    finally:
        runner.send_signal(signal.SIGTERM)
        try:
            runner.wait(20)
        except subprocess.TimeoutExpired:
            runner.kill()
    if args.trace_out is not None:
        shutil.copy(trace, args.trace_out)
    say(f"\nWhere pydma's time goes: {args.profile_rounds} more rounds with the runner under "
        "strace (-f --seccomp-bpf), which slows each traced call; ms from the sendmail's exit "
        "(negative: before it), median [min, max]:")
    for key, meaning in (*PHASES, ("final dot", "the sink has the final dot")):
        values = table.get(key, [])
        if values:
            say(f"  {key:<9} {_ms(statistics.median(values)):>7} [{_ms(min(values))}, "
                f"{_ms(max(values))}]  {meaning}"
                f"{'' if len(values) == args.profile_rounds else f' ({len(values)} rounds)'}")


# --- outside: the interpreter, then the namespace ---------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Make the venv if asked, then run the bench as root in a private mount namespace."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--python", type=Path, default=REPO / ".venv" / "bin" / "python",
                        help="interpreter with pydma installed, or a bare one to make a venv "
                             "of (default the repo's .venv)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/dma-pickup-venv"),
                        help="where the venv of a bare --python goes (default %(default)s)")
    parser.add_argument("--reinstall", action="store_true",
                        help="install the current tree into that venv again")
    parser.add_argument("--rounds", type=int, default=30, help="rounds (default 30)")
    parser.add_argument("--size", type=int, default=2048, help="message octets (default 2048)")
    parser.add_argument("--pause", type=float, default=0.3,
                        help="seconds of quiet before each submission (default 0.3)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds to wait for a message at the sink (default 10)")
    parser.add_argument("--no-cdma", action="store_true", help="measure pydma only")
    parser.add_argument("--profile", action="store_true",
                        help="trace the runner even when the target is met")
    parser.add_argument("--profile-rounds", type=int, default=15, metavar="N",
                        help="rounds under strace (default 15)")
    parser.add_argument("--trace-out", type=Path, metavar="FILE",
                        help="keep the runner's strace output of the profile there")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside:
        return inside(args)
    if os.geteuid() != 0:
        raise SystemExit("run it as root: it installs system mode in a private mount namespace")
    for tool in ("unshare", "mount", "useradd"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool}")
    if not args.python.exists():
        raise SystemExit(f"{args.python} does not exist: run scripts/setup or pass --python")
    python = pydma_python(args.python, args.venv, args.reinstall)
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    layers = tempfile.mkdtemp(prefix="dma-pickup-layers-")
    try:
        done = subprocess.run(
            ["unshare", "-m", "bash", "-c", _SETUP.format(trees=" ".join(OVERLAID)), "setup",
             layers, sys.executable, str(Path(__file__).resolve()), *forwarded,
             "--python", str(python), "--inside"],
            check=False)
    finally:
        shutil.rmtree(layers, ignore_errors=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
