"""The process model (SPEC 5.1): what runs after submission, and queue runs.

After spooling, the submitting process forks one detached child that delivers the
new message's items and exits; the caller gets its exit status at once.  `-D`
delivers in the foreground instead.  `dma -q` tries every item now; `dma -qTIME`
is a long-lived runner (one per spool, by a lock) that honours each item's next
try time.  Nothing ever sleeps for days inside a delivery.

System mode (SPEC 8.2): every queue run as root first picks up the maildrop
(shell/pickup.py), and so does the detached delivery after root's own submission.
The ``-qTIME`` runner also watches the maildrop (inotify, else a look each second)
and delivers what it picks up at once.  A submission that went into the maildrop
starts no delivery: it has no privilege to, and the runner notices the new file by
itself (inotify sees the rename; a systemd path unit does the same).  At the end of
every queue run root writes the users' views of the queue again (what each may list,
shell/pickup.refresh_user_views), as every pickup pass that changed the spool does.
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
import time
from collections.abc import Sequence

from dma.adapters import system
from dma.adapters.spool import Spool
from dma.core.cmdline import Invocation
from dma.shell.guard import log_crash
from dma.shell.settings import Settings

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RUNNER_LOCK = ".runner.lock"


def _logger(invocation: Invocation, *, stderr: bool) -> Any:
    """The long-lived runner (-qTIME) logs through structlog; a run that ends when its
    items are done (-q, -D, the deliverer a submission detaches) through the same
    processors without it: importing structlog (it loads asyncio) takes ~45 ms on
    Debian's Python, a tenth of a 1000-message flush."""
    from dma.adapters.log import configure_structlog, light_logger, structlog_logger

    if invocation.queue_interval is None:
        return light_logger(invocation.syslog_tag, stderr=stderr)
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
    """Queue only (DEFER, -bq), deliver in the foreground (-D), or detach a deliverer.

    A message handed to the maildrop is the runner's from then on (even with -D: the
    delivery needs privileges this process does not have).
    """
    from dma.shell.submit import maildrop_for

    if maildrop_for(settings) is not None:
        return 0
    if settings.config.defer or invocation.queue_only:
        return 0
    if invocation.foreground:
        return deliver_now(invocation, settings, item_ids, stderr=True)

    def work() -> int:
        try:
            return deliver_now(invocation, settings,
                               [*item_ids, *_pick_up(invocation, settings)], stderr=False)
        finally:
            _refresh_views(invocation, settings)

    try:
        _detach(work, invocation.syslog_tag)
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


def _maildrop_present(settings: Settings) -> bool:
    """Root, and a directory named like the maildrop in the spool: what
    ``pickup.maildrop_ready`` (which decides) needs at least, known before the pickup
    code is loaded (~25 ms on Debian's Python), which a run without a maildrop never needs."""
    from dma.core.system_layout import MAILDROP

    try:
        return system.euid() == 0 and stat.S_ISDIR(
            os.lstat(os.path.join(settings.config.spooldir, MAILDROP)).st_mode)
    except OSError:
        return False


def _pick_up(invocation: Invocation, settings: Settings) -> list[str]:
    """Take the maildrop's files into the spool (root, system mode); the ids to deliver
    now.  A failure is logged, never raised: the queue run goes on without them."""
    if not _maildrop_present(settings):
        return []
    try:
        from dma.shell.pickup import maildrop_ready, pick_up

        if not maildrop_ready(settings):
            return []
        return pick_up(settings, _logger(invocation, stderr=invocation.verbose))
    except Exception as error:
        _log_failure(invocation, "maildrop pickup failed; its files wait for the next run",
                     error)
        return []


def _refresh_views(invocation: Invocation, settings: Settings) -> None:
    """Write the users' views of the queue again (root, system mode).  A failure is
    logged, never raised."""
    if not _maildrop_present(settings):
        return
    try:
        from dma.shell.pickup import maildrop_ready, refresh_user_views

        if maildrop_ready(settings):
            refresh_user_views(settings, _logger(invocation, stderr=invocation.verbose))
    except Exception as error:
        _log_failure(invocation, "the users' queue views were not refreshed", error)


def _deliver_picked_up(invocation: Invocation, settings: Settings) -> None:
    """The runner saw something arrive in the maildrop: pick it up and deliver it now
    (with DEFER, at the next pass)."""
    ids = _pick_up(invocation, settings)
    if ids and not settings.config.defer:
        try:
            deliver_now(invocation, settings, ids, stderr=invocation.verbose)
        finally:
            _refresh_views(invocation, settings)


def _one_pass(invocation: Invocation, settings: Settings, *, honour_next_try: bool) -> int:
    """One queue run (after a pickup), then the users' views written again."""
    try:
        return _deliver_due(invocation, settings, honour_next_try=honour_next_try)
    finally:
        _refresh_views(invocation, settings)


def _deliver_due(invocation: Invocation, settings: Settings, *, honour_next_try: bool) -> int:
    _pick_up(invocation, settings)  # new items are due at once: this pass delivers them
    log = None

    def moved_aside(moved: Any) -> None:  # damaged items clean() or scan() set aside
        from dma.shell.queue_ops import report_quarantined  # rare: not loaded otherwise

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
    from dma.core.mailq import select_entries  # selectors and -qTIME only

    scan = spool.scan(probe_locks=False)
    for problem in scan.problems:  # never silently invisible (SPEC 5.7)
        _log_failure(invocation, f"damaged queue item {problem.name}", problem.error)
    entries = select_entries(list(scan.entries), invocation.selectors)
    now = int(system.epoch())
    if honour_next_try:
        from dma.core.retry import is_due  # -qTIME only: a submission need not load it

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
    watcher = _MaildropWatcher(invocation, settings)
    watcher.open()  # before the first pass: what arrives during it wakes the first wait
    try:
        while not stop:
            wake = False
            try:
                _one_pass(invocation, settings, honour_next_try=True)
            except Exception as error:  # a runner outlives one bad pass
                _log_failure(invocation, "queue run failed; trying again later", error)
            deadline = time.monotonic() + invocation.queue_interval
            while not stop and not wake and time.monotonic() < deadline:
                watcher.wait(min(1.0, max(0.0, deadline - time.monotonic())))
    finally:
        watcher.close()
        os.close(lock_fd)
    return 0


class _MaildropWatcher:
    """The runner's eye on the maildrop (system mode, root): waits up to a second at a
    time, and picks up and delivers at once whatever arrives.  Without a maildrop (or
    not root) it only sleeps; the watch is opened when the maildrop appears and opened
    again when it breaks (the directory replaced), each time followed by a pickup, as
    files may have come while nothing watched."""

    def __init__(self, invocation: Invocation, settings: Settings) -> None:
        self._invocation = invocation
        self._settings = settings
        self._watch: Any = None

    def open(self) -> bool:
        """Open the watch if it is not open (or broke) and the maildrop is ours to watch;
        True when it was opened just now."""
        if self._watch is not None and not self._watch.broken:
            return False
        self.close()
        from dma.shell.pickup import maildrop_ready

        if not maildrop_ready(self._settings):
            return False
        from dma.adapters.maildrop import open_watch

        self._watch = open_watch(self._settings.config.spooldir)
        return True

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds (at most one), delivering what arrives."""
        fresh = self.open()
        if self._watch is None:
            time.sleep(timeout)
            return
        if fresh or self._watch.wait(timeout):
            try:
                _deliver_picked_up(self._invocation, self._settings)
            except Exception as error:  # a runner outlives one bad delivery
                _log_failure(self._invocation, "delivery of picked-up mail failed", error)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
