"""The process's outer guard: standard streams, and errors nobody else handled (SPEC 3.8).

One rule for every command: a caller may start us with stdin, stdout or stderr
closed (GNU mailutils' ``mail`` closes stderr), so they are reopened on /dev/null
before anything else; and no Python traceback ever reaches a caller.  An error that
escapes every handler is logged to syslog as one line (its type, its message shown
printable, and the file:line that raised it) and becomes exit 70, or 0 once the
message is durably queued: a caller that saw a failure would send it again.
"""

from __future__ import annotations

import os
import sys

from dma.core.octets import printable

_UNICODE_ERRORS = (UnicodeError,)


def reopen_standard_streams() -> None:
    """Open /dev/null on whichever of fds 0, 1, 2 is closed, so that no file opened
    later can become one of them (a spool file opened as fd 1 would receive our
    output, as fd 0 it would be read as the message), and give stdout and stderr
    stream objects.  ``sys.stdin`` stays None when fd 0 was closed: submission
    refuses a closed stdin (exit 66) rather than queue an empty message."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)
            if opened != fd:  # a lower fd was free after all: never leave a stray one
                os.dup2(opened, fd)
                os.close(opened)
    if sys.stdout is None:
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (lives as long as we do)
    if sys.stderr is None:
        sys.stderr = open(2, "w", errors="backslashreplace", closefd=False)  # noqa: SIM115
    # A listing prints what the spool holds: a Latin-1 sender written by the C dma goes
    # out as its octets (as the C dma's mailq prints it), never as an encoding error.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        reconfigure(errors="surrogateescape")


def say(program: str, message: str) -> None:
    """One line on stderr for whoever watches it; a closed or broken stderr is no error."""
    try:
        print(f"{program}: {printable(message)}", file=sys.stderr, flush=True)
    except Exception:
        pass


def where_raised(error: BaseException) -> str:
    """``file:line`` of the innermost frame of ``error``'s traceback (or ``?``)."""
    trace = error.__traceback__
    if trace is None:
        return "?"
    while trace.tb_next is not None:
        trace = trace.tb_next
    code = trace.tb_frame.f_code
    return f"{code.co_filename}:{trace.tb_lineno}"


def describe(error: BaseException) -> str:
    """``Type: message at file:line``, safe for a log line.

    A codec error's message quotes the offending character and its position; the
    text it came from can be a password, so only its reason is kept.
    """
    if isinstance(error, _UNICODE_ERRORS):
        reason = getattr(error, "reason", "") or "cannot encode or decode text"
        message = f"{reason} (octets that are not UTF-8?)"
    else:
        message = printable(error)
    return f"{type(error).__name__}: {message} at {where_raised(error)}"


def log_line(tag: str, line: str, *, error: bool = True) -> None:
    """Write one line to syslog (facility mail) without structlog; never raises."""
    try:
        import syslog

        syslog.openlog(printable(tag), syslog.LOG_PID, syslog.LOG_MAIL)
        syslog.syslog(syslog.LOG_ERR if error else syslog.LOG_INFO, printable(line))
    except Exception:
        pass


def log_crash(tag: str, event: str, error: BaseException) -> None:
    """Say in syslog that ``error`` escaped while doing ``event``."""
    log_line(tag, f"{event}: {describe(error)}")
