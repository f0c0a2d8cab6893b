"""The process model (SPEC 5.1): what runs after submission, and queue runs.

After spooling, the submitting process forks one detached child that delivers the
new message's items and exits; the caller gets its exit status at once.  `-D`
delivers in the foreground instead.  `dma -q` tries every item now; `dma -qTIME`
is a long-lived runner (one per spool, by a lock) that honours each item's next
try time.  Nothing ever sleeps for days inside a delivery.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Sequence

from dma.adapters import system
from dma.adapters.spool import Spool
from dma.core.cmdline import Invocation
from dma.core.retry import is_due
from dma.shell.guard import log_crash
from dma.shell.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RUNNER_LOCK = ".runner.lock"


def _logger(invocation: Invocation, *, stderr: bool) -> Any:
    from dma.adapters.log import configure_structlog, structlog_logger

    configure_structlog(invocation.syslog_tag, stderr=stderr)
    return structlog_logger()


def deliver_now(invocation: Invocation, settings: Settings, item_ids: Sequence[str],
                *, stderr: bool) -> int:
    """Deliver these items in this process; the exit status says how it went."""
    from dma.shell.queue_run import QueueRun

    log = _logger(invocation, stderr=stderr)
    run = QueueRun(settings, log, verbose=invocation.verbose)
    return run.run(item_ids).exit_code()


def after_submission(invocation: Invocation, settings: Settings, item_ids: list[str]) -> int:
    """Queue only (DEFER, -bq), deliver in the foreground (-D), or detach a deliverer."""
    if settings.config.defer or invocation.queue_only:
        return 0
    if invocation.foreground:
        return deliver_now(invocation, settings, item_ids, stderr=True)
    try:
        _detach(lambda: deliver_now(invocation, settings, item_ids, stderr=False),
                invocation.syslog_tag)
    except OSError as error:
        # the message is safely queued: the next queue run delivers it; a non-zero
        # exit here would make the caller submit it twice
        _log_failure(invocation, "cannot start background delivery; left queued", error)
    return 0


def _detach(work: Any, tag: str) -> None:
    """Run ``work`` in a grandchild with no terminal and no stdio; return at once."""
    import signal

    for stream in (sys.stdout, sys.stderr):  # the child must not write our buffers again
        try:
            stream.flush()
        except Exception:
            pass
    first = os.fork()
    if first:
        os.waitpid(first, 0)
        return
    try:
        os.setsid()
        if os.fork():
            os._exit(0)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.chdir("/")
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        work()
    except BaseException as error:  # nobody watches this process: say it in syslog
        try:
            log_crash(tag, "background delivery failed; the message stays queued", error)
        finally:
            os._exit(70)
    os._exit(0)


def _log_failure(invocation: Invocation | None, event: str, error: BaseException) -> None:
    """Say in syslog what went wrong where nobody watches stderr (detached child, runner)."""
    log_crash(invocation.syslog_tag if invocation is not None else "dma", event, error)


def _one_pass(invocation: Invocation, settings: Settings, *, honour_next_try: bool) -> int:
    from dma.core.mailq import select_entries  # queue runs only: keeps submission light
    from dma.shell.queue_ops import report_quarantined

    log = None

    def moved_aside(moved: Any) -> None:  # damaged items clean() or scan() set aside
        nonlocal log
        log = log or _logger(invocation, stderr=invocation.verbose)
        report_quarantined(log, moved)

    spool = Spool(settings.config.spooldir, on_quarantine=moved_aside)
    spool.prepare()
    spool.clean(system.epoch())
    if not invocation.selectors and not honour_next_try:  # plain -q: every item, now
        ids = spool.item_ids()  # a damaged one is set aside (and logged) by its claim
        if not ids:
            return 0
        return deliver_now(invocation, settings, ids, stderr=invocation.verbose)
    scan = spool.scan(probe_locks=False)
    for problem in scan.problems:  # never silently invisible (SPEC 5.7)
        _log_failure(invocation, f"damaged queue item {problem.name}", problem.error)
    entries = select_entries(list(scan.entries), invocation.selectors)
    now = int(system.epoch())
    if honour_next_try:
        entries = [entry for entry in entries if is_due(entry.item, now)]
    if not entries:
        return 0
    return deliver_now(invocation, settings, [e.item.id for e in entries],
                       stderr=invocation.verbose)


def run_queue(invocation: Invocation, settings: Settings) -> int:
    """-q: one pass over every item now; -qTIME: a runner that repeats at that interval."""
    if invocation.queue_interval is None:
        code = _one_pass(invocation, settings, honour_next_try=False)
        return 0 if code in (0, 75, 69) else code
    Spool(settings.config.spooldir).prepare()
    lock_path = os.path.join(settings.config.spooldir, RUNNER_LOCK)
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        _one_pass(invocation, settings, honour_next_try=False)
        return 0
    import signal

    stop = False
    wake = False

    def request_stop(_signum: int, _frame: Any) -> None:
        nonlocal stop
        stop = True

    def request_run(_signum: int, _frame: Any) -> None:
        nonlocal wake
        wake = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGHUP, request_run)  # SIGHUP: run the queue now
    try:
        while not stop:
            wake = False
            try:
                _one_pass(invocation, settings, honour_next_try=True)
            except Exception as error:  # a runner outlives one bad pass
                _log_failure(invocation, "queue run failed; trying again later", error)
            deadline = time.monotonic() + invocation.queue_interval
            while not stop and not wake and time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        os.close(lock_fd)
    return 0
