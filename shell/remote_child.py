"""Remote delivery as the delivery user, in a child of a root queue run (SPEC 8.2).

The root parent has made the remote delivery (auth.conf read: the secrets are in
its memory) and claimed the items.  It forks; the child gives up root for good
(``adapters/privileges.become``), does DNS, SMTP and TLS, and writes each address's
outcome to a pipe as one line (``core/report_lines``).  The parent reads each line as
it comes and reports it to the run, which acts at once: Q files, bounces and
deletions are the parent's, never the child's.  The child writes nothing in the
spool but its connection slot files.

When the child dies, what it did not report stays open: the parent defers it with
the child's end as the reason, and logs how it ended.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, NoReturn

from dma.adapters.privileges import Identity, become, die_with_parent
from dma.adapters.slots import SlotError, Slots
from dma.core.errors import DataError, DmaError
from dma.core.ledger import AddressId, Report
from dma.core.outcomes import Outcome, deferred
from dma.core.report_lines import MAX_REPORT_OCTETS, decode_report, encode_report
from dma.core.values import frozen
from dma.shell.guard import describe

if TYPE_CHECKING:
    from dma.adapters.log import Logger
    from dma.adapters.spool import Claim
    from dma.shell.remote import Parcel

DeliverRemote = Callable[[Sequence["Parcel"], Report], None]

_READ_CHUNK = 1 << 16


class _PipeReport:
    """The child's ``Report``: one line per outcome into the pipe, whole lines only
    (hops report from threads).  When the parent is gone the child ends at once:
    nobody would act on what it sends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def __call__(self, address: AddressId, outcome: Outcome) -> None:
        line = memoryview(encode_report(address, outcome))
        with self.lock:
            try:
                while line:
                    line = line[os.write(self.fd, line):]
            except OSError:
                os._exit(75)


@frozen
class _ChildWork:
    """What the child does, and what it must let go of first."""

    identity: Identity
    parent: int
    work: Callable[[Report], None]
    wanted: frozenset[AddressId]
    claims: tuple[Claim, ...]
    preload: Callable[[], None] | None


def deliver_as(identity: Identity, deliver: DeliverRemote, parcels: Sequence[Parcel],
               report: Report, log: Logger, *, claims: Iterable[Claim], spooldir: str,
               preload: Callable[[], None] | None = None) -> None:
    """Run ``deliver(parcels, ...)`` in a child as ``identity``; report here what it reports.

    ``preload`` runs in the child before it gives up root: it imports what delivery
    would import on demand later, when the installation (a venv under /root, say)
    may no longer be readable.
    """
    _prepare_slots(spooldir, log)
    wanted = {parcel.address.id for parcel in parcels}
    read_fd, write_fd = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # the child must not write our buffers again
        try:
            stream.flush()
        except Exception:
            pass
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(_ChildWork(identity, parent, lambda out: deliver(parcels, out),
                          frozenset(wanted), tuple(claims), preload), write_fd, log)
    os.close(write_fd)
    finished = False
    try:
        _relay(read_fd, wanted, report, log)
        finished = True
    finally:
        os.close(read_fd)
        if not finished:
            _kill(pid)
        status = _reap(pid)
    _ended(pid, status, wanted, report, log)


def _prepare_slots(spooldir: str, log: Logger) -> None:
    """Make the connection slot directory as root, so the child may use it."""
    try:
        Slots(spooldir, 1).prepare()
    except SlotError as error:
        log.warning("connection slots unusable; connecting without the limit "
                    "across processes", error=str(error))


def _child(child: _ChildWork, fd: int, log: Logger) -> NoReturn:
    """The child's life: drop root, deliver, report; it never returns into the run."""
    code = 70
    out = _PipeReport(fd)
    try:
        for claim in child.claims:  # our copies of the Q files' descriptors (the parent's
            claim.release()         # keep the locks): nothing here may write a Q file
        for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(number, signal.SIG_DFL)  # a runner's handlers are not ours
        if child.preload is not None:
            child.preload()
        os.chdir("/")
        become(child.identity)
        die_with_parent(child.parent)
        log.info("remote delivery runs unprivileged", user=child.identity.name,
                 uid=os.getuid(), gid=os.getgid(), pid=os.getpid())
        _work(child.work, out, child.wanted, log)
        code = 0
    except BaseException as error:
        reason = str(error) if isinstance(error, DmaError) else \
            f"internal error: {describe(error)}"
        try:
            log.error("remote delivery process cannot run; its items stay queued",
                      error=reason)
            for address in child.wanted:
                out(address, deferred(reason))
        except BaseException:
            pass
    finally:
        os._exit(code)


def _work(work: Callable[[Report], None], out: _PipeReport, wanted: Iterable[AddressId],
          log: Logger) -> None:
    """Deliver; a bug defers every address not yet reported, with the bug as the reason
    (the parent's ledger keeps the first outcome of each)."""
    try:
        work(out)
    except Exception as error:
        reason = f"internal error: {describe(error)}"
        log.error("internal error in remote delivery; the items stay queued", error=reason)
        for address in wanted:
            out(address, deferred(reason))


def _relay(fd: int, wanted: set[AddressId], report: Report, log: Logger) -> None:
    """Read report lines until the child closes the pipe; report each at once."""
    pending = b""
    while chunk := os.read(fd, _READ_CHUNK):
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _take(line, wanted, report, log)
        if len(pending) > MAX_REPORT_OCTETS:
            raise DataError("the remote delivery process wrote a report line longer than "
                            f"{MAX_REPORT_OCTETS} octets", hint="this is a bug")
    if pending:
        log.error("the remote delivery process ended in the middle of a report line")


def _take(line: bytes, wanted: set[AddressId], report: Report, log: Logger) -> None:
    try:
        address, outcome = decode_report(line)
    except DataError as error:
        log.error("ignoring a report of the remote delivery process", error=str(error))
        return
    if address not in wanted:
        log.error("ignoring a report of the remote delivery process on an address it "
                  "was not given", id=str(address), part=address.part)
        return
    report(address, outcome)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int:
    """The child's exit code (negative: the signal that ended it)."""
    while True:
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0  # reaped elsewhere (SIGCHLD ignored): its reports are all we know
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status)


def _ended(pid: int, code: int, wanted: Iterable[AddressId], report: Report,
           log: Logger) -> None:
    """Log how the child ended; when it did not end well, defer what it left open."""
    if code == 0:
        log.debug("remote delivery process ended", pid=pid, status=0)
        return
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    reason = f"the remote delivery process (pid {pid}) {how}"
    log.error("remote delivery process ended abnormally; what it did not report stays "
              "queued", pid=pid, status=code, reason=reason)
    for address in wanted:  # the run's ledger ignores addresses already reported
        report(address, deferred(reason))
