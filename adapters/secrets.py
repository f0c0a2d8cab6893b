"""An account's secret: ``password``, ``password_file`` or ``password_command`` (SPEC 2.4).

``secret_for(account)`` gives the ``Credentials`` the SMTP client logs in with; an
account without a login gives None (no AUTH).  OAuth2 accounts get their access
token from the caller's ``oauth2_token`` (``adapters/oauth2``): this module only
knows passwords.

- ``password``: as the accounts file gives it.
- ``password_file``: the first line (without its line end) of a regular file, read
  non-blocking and at most MAX_FILE_OCTETS; a file that others may read is used
  with a warning in the log.
- ``password_command``: argv, no shell, stdin /dev/null, in a session of its own,
  for at most COMMAND_TIMEOUT seconds, with a minimal environment (``command_environment``);
  the first line of its stdout is the password.  Stdout is read up to
  MAX_OUTPUT octets: more, and the command is killed and fails.

Every failure (missing or unreadable file, non-zero exit, timeout, missing
program, empty first line, too much output) is a TempFailure: the mail waits until
the user fixes it (SPEC 5.6).  Its message names the account, the key, the
program (argv[0] only: the arguments are the user's business), the exit status
and the FIRST stderr line, and never anything the command printed on stdout:
that is where the secret is.
"""

from __future__ import annotations

import os
import selectors
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from dma.core.credentials import Credentials
from dma.core.errors import DmaError, SoftwareError, TempFailure
from dma.core.octets import printable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.adapters.log import Logger
    from dma.core.accounts import Account

COMMAND_TIMEOUT = 30.0
"""Seconds a password_command may run: enough for gpg-agent to start and a hardware
key to answer, short enough that a hung command does not hold a delivery for long."""

EXIT_GRACE = 1.0
"""Seconds we still read after the command exits (a child of it may hold its pipes)."""

MAX_OUTPUT = 64 * 1024
"""Octets of a command's stdout read at most; more kills it.  Of stderr we keep as
many and drain the rest."""

MAX_FILE_OCTETS = 64 * 1024
"""A password_file over this size is refused: it is not a password file."""

MAX_SHOWN = 200
"""Characters of the first stderr line a message shows."""

COMMAND_PATH = "/usr/local/bin:/usr/bin:/bin"
"""PATH of a password_command: the system's programs (pass, secret-tool, gpg); anything
else by its absolute path in argv[0]."""

PASSED_THROUGH = ("GNUPGHOME", "PASSWORD_STORE_DIR", "XDG_RUNTIME_DIR",
                  "DBUS_SESSION_BUS_ADDRESS")
"""Variables kept from our environment when set: pass and gpg find their keys through
GNUPGHOME and PASSWORD_STORE_DIR (else under HOME), gpg-agent's socket and the
desktop keyring (secret-tool) through XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS."""


def command_environment(environ: Mapping[str, str], home: str, user: str) -> dict[str, str]:
    """The whole environment of a password_command.

    PATH (COMMAND_PATH), HOME and USER/LOGNAME of the user dma runs as (the
    password database's, not an inherited $HOME: sudo or a service may leave another
    one, and gpg would look for the keys there), LANG=C.UTF-8 (the output is read as
    UTF-8, and messages we may show stay in one language), and PASSED_THROUGH from
    ``environ``.  Nothing else: no DMA_CONF, no LD_PRELOAD, no proxy settings.
    """
    kept = {name: environ[name] for name in PASSED_THROUGH if environ.get(name)}
    return {"PATH": COMMAND_PATH, "HOME": home, "USER": user, "LOGNAME": user,
            "LANG": "C.UTF-8", **kept}


def _user() -> tuple[str, str]:
    """Home directory and name of the user we run as (effective uid)."""
    import pwd

    try:
        entry = pwd.getpwuid(os.geteuid())
    except KeyError:
        return os.environ.get("HOME") or "/", str(os.geteuid())
    return entry.pw_dir, entry.pw_name


# --- password_command ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Finished:
    status: int | None  # None: killed by us (timeout or too much output)
    stdout: bytes
    stderr: bytes
    overflow: bool


def run_secret_command(argv: Sequence[str], *, what: str, timeout: float = COMMAND_TIMEOUT,
                       environ: Mapping[str, str] | None = None) -> str:
    """The first stdout line of ``argv``, run as the module says.

    ``what`` names the command in messages, e.g. ``account office: password_command``;
    the message adds argv[0].  Raises TempFailure on every failure.
    """
    named = f"{what} {printable(argv[0] if argv else '')}"
    home, user = _user()
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, close_fds=True, start_new_session=True,
            env=command_environment(os.environ if environ is None else environ, home, user))
    except (OSError, ValueError) as error:
        raise _not_started(named, error) from None
    try:
        finished = _collect(process, time.monotonic() + timeout)
    finally:
        if process.poll() is None:  # timed out or too much output (or a bug): kill it
            _kill(process)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return _first_line(named, finished, timeout)


def _not_started(named: str, error: OSError | ValueError) -> TempFailure:
    if isinstance(error, FileNotFoundError):
        problem = "no such program"
        hint = f"install it, or give its absolute path (PATH is {COMMAND_PATH})"
    elif isinstance(error, PermissionError):
        problem = "it may not be run (permission denied)"
        hint = "make it executable for the user dma runs as"
    else:
        problem = f"it cannot be started: {getattr(error, 'strerror', None) or error}"
        hint = "fix the command in the accounts file"
    return TempFailure(f"{named}: {problem}", hint=hint)


def _collect(process: subprocess.Popen[bytes], deadline: float) -> _Finished:
    """Read both pipes until they end (or EXIT_GRACE after the command exits), the
    deadline passes, or stdout is too long."""
    out, err = bytearray(), bytearray()
    assert process.stdout is not None and process.stderr is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            if process.poll() is not None:
                deadline = min(deadline, time.monotonic() + EXIT_GRACE)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in selector.select(min(left, 0.1)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                elif key.data is out and len(out) + len(chunk) > MAX_OUTPUT:
                    return _Finished(None, b"", bytes(err), True)
                elif len(key.data) < MAX_OUTPUT:  # stderr past it is drained, not kept
                    key.data.extend(chunk)
    status = process.poll()
    if status is None and not selector.get_map():  # pipes closed: wait for the exit
        try:
            status = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            status = None
    return _Finished(status, bytes(out), bytes(err), False)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's session (its children too), then reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _first_line(named: str, finished: _Finished, timeout: float) -> str:
    """The secret, or the TempFailure that says why there is none (never stdout)."""
    line = finished.stdout.split(b"\n", 1)[0].removesuffix(b"\r")
    said = _stderr_line(finished.stderr, line)
    hint = "run it by hand as the user dma runs as, with stdin from /dev/null, to see why"
    if finished.overflow:
        raise TempFailure(f"{named}: printed more than {MAX_OUTPUT} octets and was killed{said}",
                          hint="it must print the password on its first line")
    if finished.status is None:
        raise TempFailure(f"{named}: did not finish within {timeout:g}s and was killed{said}",
                          hint="it must not wait for a terminal or a prompt: " + hint)
    if finished.status != 0:
        status = (f"killed by signal {-finished.status}" if finished.status < 0
                  else f"exit status {finished.status}")
        raise TempFailure(f"{named}: failed with {status}{said}", hint=hint)
    if not line:
        raise TempFailure(f"{named}: printed no password on its first line{said}", hint=hint)
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise TempFailure(f"{named}: its first line is not UTF-8 text", hint=hint) from None


def _stderr_line(stderr: bytes, secret: bytes) -> str:
    """``: <first stderr line>`` for a message, printable and bounded, with the secret
    (stdout's first line) cut out should the command have echoed it; or nothing."""
    first = stderr.split(b"\n", 1)[0].removesuffix(b"\r")
    if secret:
        first = first.replace(secret, b"<secret hidden>")
    shown = printable(first.decode("utf-8", "replace")).strip()
    if len(shown) > MAX_SHOWN:
        shown = shown[:MAX_SHOWN] + "..."
    return f": {shown}" if shown else ""


# --- password_file --------------------------------------------------------------------


def read_password_file(path: str, *, what: str, log: Logger | None = None) -> str:
    """The first line of the regular file ``path``; TempFailure when there is none.

    ``what`` names it in messages (``account office: password_file``).  A file
    that others may read is used, with a warning.
    """
    named = f"{what} {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise TempFailure(f"{named}: cannot be opened: {error.strerror}",
                          hint="fix password_file, or the file's permissions for the user dma"
                          " runs as") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise TempFailure(f"{named}: is not a regular file",
                              hint="password_file names a file whose first line is the password")
        data = _read_bounded(fd)
    except OSError as error:
        raise TempFailure(f"{named}: cannot be read: {error.strerror}",
                          hint="check the file") from None
    finally:
        os.close(fd)
    if mode & 0o004 and log is not None:
        log.warning("password file is readable by everyone; restrict it (chmod 600)",
                    path=path, account=what)
    return _file_line(named, data)


def _read_bounded(fd: int) -> bytes:
    data = b""
    while len(data) <= MAX_FILE_OCTETS:
        chunk = os.read(fd, MAX_FILE_OCTETS + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _file_line(named: str, data: bytes) -> str:
    if len(data) > MAX_FILE_OCTETS:
        raise TempFailure(f"{named}: is over {MAX_FILE_OCTETS} octets, too big for a password"
                          " file", hint="password_file names a file whose first line is the"
                          " password")
    line = data.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        raise TempFailure(f"{named}: its first line is empty",
                          hint="write the password on the file's first line")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise TempFailure(f"{named}: its first line is not UTF-8 text",
                          hint="write the password in UTF-8") from None


# --- an account's credentials --------------------------------------------------------------

OAuth2Token = Callable[["Account"], str]
"""Gives an OAuth2 account's access token (adapters/oauth2), or raises TempFailure."""


def secret_for(account: Account, *, log: Logger | None = None,
               oauth2_token: OAuth2Token | None = None) -> Credentials | None:
    """What ``account`` logs in with; None for an account without AUTH.

    Raises TempFailure when the secret cannot be had (the mail waits).
    """
    if account.login is None:
        return None
    what = f"account {account.name}: {account.secret_source}"
    if account.oauth2 is not None:
        if oauth2_token is None:
            raise SoftwareError(f"account {account.name} uses OAuth2 but no token source was"
                                " given", hint="this is a bug: pass oauth2_token")
        return Credentials(account.login, oauth2_token(account), "oauth2", account.auth)
    if account.password is not None:
        secret = account.password
    elif account.password_file is not None:
        secret = read_password_file(account.password_file, what=what, log=log)
    elif account.password_command is not None:
        secret = run_secret_command(account.password_command, what=what)
    else:
        raise SoftwareError(f"account {account.name} has a login but no secret source",
                            hint="this is a bug: parse_accounts refuses such an account")
    return Credentials(account.login, secret, "password", account.auth)


class Secrets:
    """The credentials of each account, fetched once per queue run (thread-safe).

    A failure is remembered too: a broken password_command runs once per run, not
    once per hop or connection, and every delivery through the account defers with
    the same TempFailure.
    """

    def __init__(self, *, log: Logger | None = None,
                 oauth2_token: OAuth2Token | None = None) -> None:
        self._log = log
        self._oauth2_token = oauth2_token
        self._known: dict[str, Credentials | DmaError | None] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def credentials(self, account: Account) -> Credentials | None:
        """``secret_for(account)``, once per account; raises its TempFailure again."""
        with self._lock:
            lock = self._locks.setdefault(account.name, threading.Lock())
        with lock:
            if account.name not in self._known:
                try:
                    self._known[account.name] = secret_for(
                        account, log=self._log, oauth2_token=self._oauth2_token)
                except TempFailure as error:
                    self._known[account.name] = error
            known = self._known[account.name]
        if isinstance(known, DmaError):
            raise TempFailure(known.message, hint=known.hint)
        return known
