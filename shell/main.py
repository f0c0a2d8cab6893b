"""Entry point for `dma`, `sendmail`, `mailq` and `newaliases`: parse, dispatch, exit.

Imports are local to each mode so that a plain submission loads only what it needs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from dma.core.errors import DmaError


def _program(argv: Sequence[str]) -> str:
    return os.path.basename(argv[0]) if argv and argv[0] else "dma"


def main(argv: Sequence[str] | None = None) -> int:
    """Run dma as the command line asks; return the sysexits code."""
    args = list(sys.argv if argv is None else argv)
    program = _program(args)
    try:
        return _run(args)
    except DmaError as error:
        print(f"{program}: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{program}: interrupted (whatever was queued stays queued)", file=sys.stderr)
        return 75


def _run(args: list[str]) -> int:
    from dma.core.cmdline import Mode, parse_command_line

    invocation = parse_command_line(args)
    from dma.shell.settings import load_settings

    settings = load_settings(invocation.config_path, os.environ)
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
        from dma.shell.delivery import after_submission

        return after_submission(invocation, settings, ids)
    if mode is Mode.LIST_QUEUE:
        from dma.shell.queue_ops import list_queue

        return list_queue(settings, json_lines=invocation.json)
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
    from dma.shell.queue_ops import bounce_items

    return bounce_items(settings, invocation)


if __name__ == "__main__":
    sys.exit(main())
