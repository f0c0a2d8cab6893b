"""Entry point for `dma`, `sendmail`, `mailq` and `newaliases`: parse, dispatch, exit.

Imports are local to each mode so that a plain submission loads only what it needs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from dma.core.errors import DmaError
from dma.shell.guard import describe, log_crash, reopen_standard_streams, say

TYPE_CHECKING = False  # not typing's: a submission need not import typing
if TYPE_CHECKING:
    from dma.core.cmdline import Invocation
    from dma.shell.settings import Settings


def _program(argv: Sequence[str]) -> str:
    return os.path.basename(argv[0]) if argv and argv[0] else "dma"


def main(argv: Sequence[str] | None = None) -> int:
    """Run dma as the command line asks; return the sysexits code.

    Nothing escapes as a traceback (SPEC 3.8): our own errors are one line with
    their code, anything else is logged where it was raised and exits 70.  Once a
    submission is queued, ``_run`` answers for itself (``_after_queued``).
    """
    reopen_standard_streams()
    args = list(sys.argv if argv is None else argv)
    program = _program(args)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is reported
        return code
    except DmaError as error:
        say(program, str(error))
        return error.exit_code
    except BrokenPipeError:  # `mailq | head`: the reader has all it wanted
        _drop_output()
        return 74
    except KeyboardInterrupt:
        say(program, "interrupted (whatever was queued stays queued)")
        return 75
    except Exception as error:
        _drop_output()
        what = "input/output error" if isinstance(error, OSError) else "internal error"
        log_crash(_syslog_tag(args), what, error)
        say(program, f"{what}: {describe(error)}")
        return 74 if isinstance(error, OSError) else 70


def _drop_output() -> None:
    """Point fd 1 at /dev/null, so that the flush at exit cannot fail a second time."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass


def _syslog_tag(args: Sequence[str]) -> str:
    """The -L tag when the command line parses, else ``dma``."""
    try:
        from dma.core.cmdline import parse_command_line

        return parse_command_line(list(args)).syslog_tag
    except Exception:
        return "dma"


def _run(args: list[str]) -> int:
    if args[1:2] == ["install-system"] and _program(args) == "dma":
        from dma.shell.install_system import main as install_system

        return install_system(args[2:])
    if args[1:2] == ["oauth2"] and _program(args) == "dma":
        from dma.shell.oauth2_login import main as oauth2

        return oauth2(args[2:])
    from dma.core.cmdline import Mode, parse_command_line

    invocation = parse_command_line(args)
    if invocation.mode is Mode.HELP:  # before dma.conf: help works with a broken one
        from dma.core.manual import help_text

        sys.stdout.write(help_text())
        return 0
    from dma.adapters import system
    from dma.shell.settings import load_settings

    settings = load_settings(invocation.config_path, system.environment())
    mode = invocation.mode
    if mode is Mode.SEND:
        from dma.adapters.log import light_logger
        from dma.shell.submit import submit

        log = light_logger(invocation.syslog_tag, stderr=invocation.verbose)
        try:
            ids = submit(invocation, settings, log)
        except DmaError as error:  # stderr may be a cron job's: syslog keeps a trace
            light_logger(invocation.syslog_tag).error(
                "message refused", reason=str(error), exit=error.exit_code)
            raise
        return _after_queued(invocation, settings, ids)
    if mode is Mode.LIST_QUEUE:
        from dma.shell.queue_ops import list_queue

        return list_queue(settings, json_lines=invocation.json, syslog_tag=invocation.syslog_tag)
    if mode is Mode.NEWALIASES:
        from dma.shell.queue_ops import check_aliases

        return check_aliases(settings)
    if mode is Mode.DELETE:
        from dma.shell.queue_ops import delete_items

        return delete_items(settings, invocation)
    if mode is Mode.RUN_QUEUE:
        from dma.shell.delivery import run_queue

        return run_queue(invocation, settings)
    if mode is Mode.VERIFY:
        from dma.shell.queue_ops import verify

        return verify(invocation, settings)
    if mode is Mode.SMTP_SESSION:
        from dma.shell.smtp_session import run_session

        return run_session(invocation, settings)
    if mode is Mode.RELEASE:
        from dma.shell.queue_ops import release_items

        return release_items(settings, invocation)
    from dma.shell.queue_ops import bounce_items

    return bounce_items(settings, invocation)


def _after_queued(invocation: Invocation, settings: Settings, ids: list[str]) -> int:
    """Start the delivery of a queued message; from here the caller must not see a
    failure (it would send the message again), unless -D asked for the outcome."""
    try:
        from dma.shell.delivery import after_submission

        return after_submission(invocation, settings, ids)
    except BaseException as error:
        about = ids[0] if ids else "message"
        log_crash(invocation.syslog_tag, f"{about}: queued; delivery not started", error)
        return 75 if invocation.foreground else 0


if __name__ == "__main__":
    sys.exit(main())
