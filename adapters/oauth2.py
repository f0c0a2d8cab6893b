"""OAuth2 access tokens for smarthost accounts: HTTPS, token files, token commands (SPEC 2.4).

``AccessTokens`` gives the access token of an account for one queue run: from its
``token_command``, or from pydma's own refresh (RFC 6749 refresh-token grant)
with the refresh token in ``refresh_token_file``.  Decisions are core's
(``core/oauth2.py``); this module moves the octets:

- HTTPS POSTs with the standard library's ``http.client``: the certificate and the
  host name are checked against the system CAs or CAFILE (``adapters/net.tls_context``:
  TLS 1.2 at least), within a timeout; a redirect is never followed (the form
  holds secrets), and nothing but ``https://`` is ever asked;
- ``token_command``: run by ``adapters/secrets.run_secret_command``, the runner of
  ``password_command`` (its first line must be a token: visible ASCII);
- the refresh token file (0600; a rotated refresh token replaces it atomically)
  and the access-token cache beside it (``<refresh_token_file>.access``, 0600):
  written to a temporary name, fsynced, renamed, the directory fsynced; a file
  that root rewrites keeps the owner it had (the delivery user's, in system mode);
- one refresh per account per run: the outcome, a token or the error, is
  remembered in the process (a later call in the same run gets it again; only a
  token that runs out during a long run is refreshed once more), and one process
  at a time refreshes an account (a flock on the file's directory, after which the
  cache is read again: another process may have just refreshed).

Every failure is a ``TempFailure``: the mail waits (SPEC 5.6).  No token, refresh
token, device code or client secret is in any message, log line or exception text.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dma.adapters.net import NetError, TlsPolicy, tls_context
from dma.core.errors import DataError, DmaError, TempFailure
from dma.core.oauth2 import (
    CACHE_MARGIN,
    MAX_ANSWER_OCTETS,
    CachedToken,
    Endpoints,
    FormPost,
    OAuth2Settings,
    Refused,
    cache_entry,
    endpoints,
    login_hint,
    parse_cache,
    parse_token_response,
    redact,
    refresh_request,
    refusal_error,
    render_cache,
    settings_for,
    usable,
)
from dma.core.octets import printable
from dma.core.version import VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dma.adapters.log import Logger
    from dma.core.accounts import Account

HTTP_TIMEOUT = 30.0
"""Seconds for the connection, the TLS handshake and each read from a token endpoint."""

COMMAND_TIMEOUT = 30.0
"""Seconds a ``token_command`` may run."""

MAX_FILE_OCTETS = 64 * 1024
"""A refresh token or cache file larger than this is not one."""

SECRET_FILE_MODE = 0o600
SECRET_DIRECTORY_MODE = 0o700

Owner = tuple[int, int]


# --- HTTPS -------------------------------------------------------------------------


def _reason(error: BaseException) -> str:
    import ssl

    if isinstance(error, ssl.SSLCertVerificationError):
        return str(error.verify_message or error.reason or "certificate not accepted")
    if isinstance(error, ssl.SSLError):
        return str(error.reason or type(error).__name__)
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def _target(url: str) -> tuple[str, int, str]:
    """Host, port and request path of an ``https://`` URL; TempFailure for anything else."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port or 443
    except ValueError:
        parts, port = None, 0
    if parts is None or parts.scheme.lower() != "https" or not parts.hostname:
        raise TempFailure(f"{url}: not an https:// URL", hint="tokens travel only over HTTPS")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.hostname, port, path


def post_form(
    post: FormPost, *, cafile: str | None = None, timeout: float = HTTP_TIMEOUT
) -> tuple[int, bytes]:
    """POST ``post`` over verified HTTPS; the HTTP status and at most
    ``MAX_ANSWER_OCTETS`` + 1 octets of the body.  TempFailure when the endpoint
    cannot be reached, its certificate is not accepted, or it answers with a redirect."""
    import http.client
    import ssl

    host, port, path = _target(post.url)
    try:
        context = tls_context(TlsPolicy(verify=True, server_name=host, cafile=cafile))
    except NetError as error:
        raise TempFailure(f"{post.url}: {error.message}", hint=error.hint) from None
    connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    try:
        connection.request("POST", path, body=post.body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
            "User-Agent": f"pydma/{VERSION}",
        })
        response = connection.getresponse()
        status = response.status
        body = response.read(MAX_ANSWER_OCTETS + 1)
    except ssl.SSLCertVerificationError as error:
        raise TempFailure(
            f"{post.url}: TLS certificate not accepted: {_reason(error)}",
            hint="check the endpoint's name, or CAFILE in dma.conf") from None
    except (OSError, http.client.HTTPException, ValueError) as error:
        raise TempFailure(f"{post.url}: {_reason(error)}",
                          hint="check the network and the endpoint's address") from None
    finally:
        connection.close()
    if 300 <= status < 400:
        raise TempFailure(f"{post.url}: answered with a redirect (HTTP {status})",
                          hint="pydma does not follow redirects; check token_url or device_url")
    return status, body


# --- secret files ------------------------------------------------------------------


def read_secret_file(path: str) -> tuple[bytes, os.stat_result]:
    """The octets of a small regular file, and its status; OSError when it cannot be
    read (a link is not followed, a FIFO does not block)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if status.st_size > MAX_FILE_OCTETS:
            raise OSError(errno.EFBIG, "too large for a token file")
        data = os.read(fd, MAX_FILE_OCTETS + 1)
    finally:
        os.close(fd)
    return data, status


def _owner_to_keep(directory_fd: int, name: str, owner: Owner | None) -> Owner | None:
    """The owner a rewritten file gets: ``owner``, else (as root) the old file's."""
    if owner is not None or os.geteuid() != 0:
        return owner
    try:
        old = os.stat(name, dir_fd=directory_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return (old.st_uid, old.st_gid) if stat.S_ISREG(old.st_mode) else None


def write_secret_file(path: str, data: bytes, *, owner: Owner | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600: a temporary name beside it
    (O_EXCL, O_NOFOLLOW), fsync, rename, fsync of the directory.  ``owner`` (uid, gid)
    is given to it when we are root; a file root rewrites keeps its owner."""
    directory, name = os.path.split(path)
    directory_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        keep = _owner_to_keep(directory_fd, name, owner)
        temporary = f".{name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, SECRET_FILE_MODE, dir_fd=directory_fd)
        try:
            try:
                os.fchmod(fd, SECRET_FILE_MODE)
                if keep is not None and os.geteuid() == 0:
                    os.fchown(fd, *keep)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, name, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
        except BaseException:
            try:
                os.unlink(temporary, dir_fd=directory_fd)
            except OSError:
                pass
            raise
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def token_line(data: bytes) -> str | None:
    """The first line of a token file or a command's output, when it is a token
    (visible ASCII, bounded); None otherwise."""
    first = data.split(b"\n", 1)[0].rstrip(b"\r").strip(b" \t")
    if not first or len(first) > MAX_FILE_OCTETS or not all(0x21 <= c <= 0x7E for c in first):
        return None
    return first.decode("ascii")


def read_refresh_token(settings: OAuth2Settings, log: Logger | None = None) -> str:
    """The account's refresh token, or TempFailure saying what to do."""
    path = settings.refresh_token_file or ""
    account = settings.account
    try:
        data, status = read_secret_file(path)
    except FileNotFoundError:
        raise TempFailure(f"account {account}: no refresh token in {path}",
                          hint=login_hint(account)) from None
    except OSError as error:
        raise TempFailure(f"account {account}: cannot read the refresh token file {path}: "
                          f"{_reason(error)}",
                          hint="it must be a regular file that delivery can read "
                               "(`dma oauth2 login` makes it so)") from None
    if status.st_mode & 0o077 and log is not None:
        log.warning("refresh token file readable by others", account=account, file=path,
                    mode=f"{stat.S_IMODE(status.st_mode):04o}", fix="chmod 600")
    token = token_line(data)
    if token is None:
        raise TempFailure(f"account {account}: {path} holds no refresh token",
                          hint=login_hint(account))
    return token


def read_cache(settings: OAuth2Settings) -> CachedToken | None:
    """The cached access token, or None when there is none that this version reads."""
    if settings.cache_file is None:
        return None
    try:
        data, _ = read_secret_file(settings.cache_file)
        return parse_cache(data)
    except (OSError, DataError):
        return None


def prepare_token_directory(path: str, owner: Owner | None) -> None:
    """Make sure the directory of the refresh token file ``path`` exists and that
    whoever delivers can replace files in it: created 0700 (given to ``owner`` when
    we are root) when missing; in system mode (``owner`` given) one of another owner
    is refused, since the delivery user could not store a rotated refresh token."""
    from dma.core.errors import ConfigError

    directory = os.path.dirname(path) or "."
    try:
        os.mkdir(directory, SECRET_DIRECTORY_MODE)
        if owner is not None and os.geteuid() == 0:
            os.chown(directory, *owner, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as error:
        raise ConfigError(f"cannot create the directory {directory}: {_reason(error)}",
                          hint="create the parent directory, or choose another "
                               "refresh_token_file") from None
    status = os.stat(directory, follow_symlinks=False)
    if not stat.S_ISDIR(status.st_mode):
        raise ConfigError(f"{directory} is not a directory",
                          hint="choose another refresh_token_file")
    if owner is not None and status.st_uid != owner[0]:
        raise ConfigError(
            f"the delivery user (uid {owner[0]}) cannot replace files in {directory} "
            f"(owner uid {status.st_uid})",
            hint="put refresh_token_file in a directory of its own, for example "
                 "/var/lib/dma/oauth2/ACCOUNT.refresh: `dma oauth2 login` creates it "
                 "for the delivery user")


# --- token_command -------------------------------------------------------------------


def run_token_command(account: str, argv: Sequence[str], *,
                      timeout: float = COMMAND_TIMEOUT) -> str:
    """The access token ``argv`` prints on its first line, run as adapters/secrets runs a
    password_command (no shell, a minimal environment, a timeout, bounded output);
    TempFailure naming the program, its exit status and first stderr line, never its
    output, when it fails or prints no token (visible ASCII: it goes into an SMTP command)."""
    from dma.adapters.secrets import run_secret_command

    what = f"account {account}: token_command"
    line = run_secret_command(argv, what=what, timeout=timeout)
    token = token_line(line.encode("utf-8", "surrogateescape"))
    if token is None:
        raise TempFailure(f"{what} {printable(argv[0])}: its first line is no access token",
                          hint="it must print the access token alone on its first line")
    return token


# --- one run's tokens ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Memo:
    token: str | None
    expires_at: float
    error: DmaError | None


class _DirectoryLock:
    """An exclusive flock on a directory, waited for at most ``timeout`` seconds."""

    def __init__(self, directory: str, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout
        self.fd: int | None = None

    def __enter__(self) -> _DirectoryLock:
        try:
            self.fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return self  # the token file read that follows says what is wrong
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise TempFailure(
                        f"another process has been refreshing a token in {self.directory} "
                        f"for {self.timeout:g}s", hint="the mail waits for the next run") from None
                time.sleep(0.05)

    def __exit__(self, *_: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _copy(error: DmaError) -> DmaError:
    """A fresh exception with the same text (one instance is never raised twice)."""
    return type(error)(error.message, where=error.where, hint=error.hint)


class AccessTokens:
    """The access tokens of one queue run (make one per run; threads may share it).

    ``token(settings)`` gives an account's access token or raises TempFailure.
    ``clock`` gives epoch seconds; ``cafile`` is dma.conf's CAFILE.
    """

    def __init__(
        self, *, cafile: str | None = None, timeout: float = HTTP_TIMEOUT,
        clock: Callable[[], float] = time.time, log: Logger | None = None,
    ) -> None:
        self.cafile = cafile
        self.timeout = timeout
        self.clock = clock
        self.log = log
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._memo: dict[str, _Memo] = {}

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def account_token(self, account: Account) -> str:
        """The access token of an account of the ACCOUNTS file: the ``oauth2_token``
        that ``adapters/secrets.Secrets`` takes."""
        if account.oauth2 is None:
            raise TempFailure(f"account {account.name} has no oauth2 table",
                              hint="this is a bug in the caller")
        return self.token(settings_for(account.name, account.oauth2))

    def token(self, settings: OAuth2Settings) -> str:
        """The account's access token: from its token_command, or cached, or refreshed."""
        if settings.token_command is not None:
            key = "command\0" + "\0".join(settings.token_command)
        else:
            key = "file\0" + (settings.refresh_token_file or "")
        with self._lock(key):
            memo = self._memo.get(key)
            if memo is not None and memo.error is not None:
                raise _copy(memo.error)
            if memo is not None and memo.token is not None and (
                    settings.token_command is not None or self.clock() < memo.expires_at):
                return memo.token
            try:
                memo = self._fetch(settings)
            except DmaError as error:
                self._memo[key] = _Memo(None, 0.0, error)
                raise
            self._memo[key] = memo
            assert memo.token is not None
            return memo.token

    def _fetch(self, settings: OAuth2Settings) -> _Memo:
        if settings.token_command is not None:
            token = run_token_command(settings.account, settings.token_command)
            return _Memo(token, float("inf"), None)
        where = endpoints(settings)
        cached = read_cache(settings)
        if cached is not None and usable(cached, settings, where, self.clock()):
            return self._memo_of(cached)
        directory = os.path.dirname(settings.refresh_token_file or "") or "."
        with _DirectoryLock(directory, self.timeout + 5):
            cached = read_cache(settings)  # another process may have refreshed meanwhile
            if cached is not None and usable(cached, settings, where, self.clock()):
                return self._memo_of(cached)
            return self._refresh(settings, where)

    @staticmethod
    def _memo_of(cached: CachedToken) -> _Memo:
        return _Memo(cached.access_token, cached.expires_at - CACHE_MARGIN, None)

    def _refresh(self, settings: OAuth2Settings, where: Endpoints) -> _Memo:
        """One refresh; the token is then this run's until CACHE_MARGIN before it
        expires (for the whole run when the server said nothing of its lifetime)."""
        account = settings.account
        refresh_token = read_refresh_token(settings, self.log)
        post = refresh_request(settings, where, refresh_token)
        status, body = post_form(post, cafile=self.cafile, timeout=self.timeout)
        try:
            answer = parse_token_response(status, body, self.clock())
        except DataError as error:
            raise TempFailure(f"account {account}: {where.token_url}: {error.message}",
                              hint="the token endpoint is not answering as OAuth2 says; "
                                   "the mail waits") from None
        if isinstance(answer, Refused):
            refused = Refused(answer.error, redact(answer.description, post.secrets))
            failure = refusal_error(account, refused)
            if self.log is not None:
                self.log.warning("oauth2 refresh refused", account=account,
                                 error=refused.error, hint=failure.hint)
            raise failure
        rotated = answer.refresh_token is not None and answer.refresh_token != refresh_token
        if rotated:
            self._store(settings, (answer.refresh_token or "").encode("ascii") + b"\n",
                        settings.refresh_token_file or "", "the new refresh token")
        now = self.clock()
        cached = cache_entry(settings, where, answer)
        if answer.expires_at > now:
            self._store(settings, render_cache(cached), settings.cache_file or "",
                        "the access token cache")
        if self.log is not None:
            self.log.info("oauth2 access token refreshed", account=account,
                          valid_for=f"{max(0, int(answer.expires_at - now))}s",
                          rotated="yes" if rotated else "no")
        until = answer.expires_at - CACHE_MARGIN if answer.expires_at > now else float("inf")
        return _Memo(answer.access_token, until, None)

    def _store(self, settings: OAuth2Settings, data: bytes, path: str, what: str) -> None:
        """Write a token file; a failure is logged, not raised: this run has its token."""
        try:
            write_secret_file(path, data)
        except OSError as error:
            if self.log is not None:
                self.log.warning(f"cannot store {what}", account=settings.account, file=path,
                                 reason=_reason(error),
                                 fix="the delivery user must own the file's directory")

