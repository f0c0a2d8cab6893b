"""One error hierarchy for the whole program, each class carrying its sysexits code.

Every error says what is wrong, where (file:line when there is one) and, when we
know it, what to do about it.  The shell prints ``str(error)`` on one line and
exits with ``error.exit_code``.
"""

from __future__ import annotations

from dma.core import sysexits


class DmaError(Exception):
    """Base of every error dma raises on purpose."""

    exit_code: int = sysexits.EX_SOFTWARE

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None) -> None:
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class UsageError(DmaError):
    """The command line is wrong."""

    exit_code = sysexits.EX_USAGE


class DataError(DmaError):
    """The message or an address in it is malformed."""

    exit_code = sysexits.EX_DATAERR


class NoInputError(DmaError):
    """Nothing to work on: no recipients, an input file that cannot be read."""

    exit_code = sysexits.EX_NOINPUT


class NoUserError(DmaError):
    """A local recipient is neither a user nor an alias."""

    exit_code = sysexits.EX_NOUSER


class UnavailableError(DmaError):
    """A service or feature is not available."""

    exit_code = sysexits.EX_UNAVAILABLE


class SoftwareError(DmaError):
    """An internal inconsistency: a bug, or a file we wrote that no longer parses."""

    exit_code = sysexits.EX_SOFTWARE


class CantCreateError(DmaError):
    """A spool or mailbox file cannot be created."""

    exit_code = sysexits.EX_CANTCREAT


class IOFailure(DmaError):
    """Reading or writing failed part way."""

    exit_code = sysexits.EX_IOERR


class TempFailure(DmaError):
    """Try again later: nothing is lost."""

    exit_code = sysexits.EX_TEMPFAIL


class ConfigError(DmaError):
    """dma.conf, auth.conf or the aliases file is wrong."""

    exit_code = sysexits.EX_CONFIG


def at(path: str, line: int) -> str:
    """Format a ``where`` for an error in ``path`` at 1-based ``line``."""
    return f"{path}:{line}"
