"""Find and load the configuration: -C, $DMA_CONF, /etc/dma/dma.conf, or the embedded default.

The embedded default (SPEC 8) lets a user or a container with no /etc/dma/dma.conf
run dma with nothing set up: config under $XDG_CONFIG_HOME/dma, spool and
mailboxes under $XDG_STATE_HOME/dma, all created on first use and owned by that
user.  Installing /etc/dma/dma.conf switches to the system MTA layout.
"""

from __future__ import annotations

import os
import stat

from dma.adapters import system
from dma.core.config import Config, key_line, mailname_from_file, parse_config
from dma.core.errors import CantCreateError, ConfigError, NoInputError
from dma.core.values import frozen, replace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from dma.core.accounts import AccountsFile
    from dma.core.aliases import AliasTable

SYSTEM_CONFIG = "/etc/dma/dma.conf"


@frozen
class Settings:
    """Everything a workflow needs to know about where it runs."""

    config: Config
    config_path: str
    embedded: bool
    mailname: str
    system_hostname: str


@frozen
class EmbeddedLayout:
    """Where the embedded default keeps its files for one user."""

    config_dir: str
    state_dir: str

    @property
    def config_file(self) -> str:
        return os.path.join(self.config_dir, "dma.conf")

    def defaults(self) -> Config:
        return Config(
            spooldir=os.path.join(self.state_dir, "spool"),
            maildir=os.path.join(self.state_dir, "mail"),
            aliases=os.path.join(self.config_dir, "aliases"),
        )


def embedded_layout(environ: Mapping[str, str]) -> EmbeddedLayout:
    """The XDG directories of the embedded default."""
    home = system.home_directory()
    config_home = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    state_home = environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    return EmbeddedLayout(os.path.join(config_home, "dma"), os.path.join(state_home, "dma"))


def _embedded_config_text(layout: EmbeddedLayout) -> str:
    defaults = layout.defaults()
    return (
        "# dma configuration, created on first use (the embedded default: no root needed).\n"
        "# Keys and their defaults are listed in pydma's README. Examples:\n"
        "#   SMARTHOST smtp.example.org\n"
        "#   PORT 587\n"
        "#   SECURETRANSFER\n"
        "#   STARTTLS\n"
        "#   AUTHPATH " + os.path.join(layout.config_dir, "auth.conf") + "\n"
        f"SPOOLDIR {defaults.spooldir}\n"
        f"MAILDIR {defaults.maildir}\n"
        f"ALIASES {defaults.aliases}\n"
    )


def _create_embedded(layout: EmbeddedLayout) -> None:
    try:
        os.makedirs(layout.config_dir, mode=0o700, exist_ok=True)
        fd = os.open(layout.config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as error:
        raise CantCreateError(
            f"cannot create the embedded configuration {layout.config_file}: {error.strerror}",
            hint="set DMA_CONF or pass -C to use another file",
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(_embedded_config_text(layout))


def read_text(path: str, what: str, hint: str) -> str | None:
    """The file's text, None when it does not exist; other errors are NoInputError.

    Opened non-blocking and checked to be a regular file, so that a FIFO or a
    device named by mistake is refused instead of hanging the caller.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, encoding="utf-8", errors="surrogateescape") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NoInputError(f"{what} {path} is not a regular file", hint=hint)
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise NoInputError(f"cannot read {what} {path}: {error.strerror}", hint=hint) from None


def load_aliases(path: str) -> AliasTable:
    """The aliases table; a missing file is an empty table (as in the C dma)."""
    from dma.core.aliases import AliasTable, parse_aliases  # only the paths that route mail

    text = read_text(path, "aliases file", "fix its permissions or the ALIASES setting")
    return parse_aliases(text, path) if text is not None else AliasTable(path=path)


_PATH_KEYS = ("aliases", "spooldir", "authpath", "certfile", "cafile", "maildir", "accounts")


def _absolute_paths(config: Config, base: str) -> Config:
    """Relative paths in dma.conf are relative to the file itself, never to the cwd:
    the detached deliverer runs in /, where a cwd-relative spool would be another."""
    changes: dict[str, Any] = {}
    for key in _PATH_KEYS:
        value = getattr(config, key)
        if value and not os.path.isabs(value):
            changes[key] = os.path.normpath(os.path.join(base, value))
    return replace(config, **changes) if changes else config


MAILNAME_READ_LIMIT = 4096  # octets of a MAILNAME file read at most: a name is under 256

_MAILNAME_HINT = (
    "MAILNAME takes the mail name itself or the path of a regular file whose first line"
    " is it: fix the path, or write the name"
)
def read_mailname_file(path: str, where: str) -> str | None:
    """The first line of the MAILNAME file ``path``, None when there is no such file.

    Regular files only, opened non-blocking (a FIFO never hangs us) and read for at
    most MAILNAME_READ_LIMIT octets (``/dev/zero`` or a huge line never fills memory).
    Anything else, or a file that cannot be read, is a ConfigError at ``where`` (the
    MAILNAME line of dma.conf).  A missing file is not an error: the C dma then uses
    the system host name, and so do we.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise ConfigError(
            f"MAILNAME file {path} cannot be opened: {error.strerror}",
            where=where,
            hint="make it readable by every user who runs dma (e.g. chmod 644),"
            " or write the name itself after MAILNAME"
            if isinstance(error, PermissionError)
            else _MAILNAME_HINT,
        ) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            from dma.adapters.file_kinds import file_kind

            raise ConfigError(
                f"MAILNAME file {path} is {file_kind(mode)}, not a regular file",
                where=where,
                hint=_MAILNAME_HINT,
            )
        data = b""
        while len(data) < MAILNAME_READ_LIMIT and b"\n" not in data:
            chunk = os.read(fd, MAILNAME_READ_LIMIT - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as error:
        raise ConfigError(
            f"MAILNAME file {path} cannot be read: {error.strerror}",
            where=where,
            hint=_MAILNAME_HINT,
        ) from None
    finally:
        os.close(fd)
    return data.split(b"\n", 1)[0].decode("utf-8", errors="replace")


def _resolve_mailname(config: Config, fallback: str, text: str | None, path: str) -> str:
    """The mail name: MAILNAME, the first line of the file it names, or ``fallback``."""
    name = config.mailname
    if not name:
        return fallback
    if name.startswith("/"):
        where = key_line(text, path, "mailname") if text is not None else path
        first = read_mailname_file(name, where)
        return (mailname_from_file(first) if first is not None else None) or fallback
    return name


def load_settings(config_path: str | None, environ: Mapping[str, str]) -> Settings:
    """Load dma.conf from the first place that applies, as SPEC 2.1 and 8 describe."""
    explicit = config_path or environ.get("DMA_CONF")
    embedded = False
    defaults = Config()
    if explicit:
        path = explicit
        text = read_text(path, "configuration", "check the path given with -C or DMA_CONF")
        if text is None:
            raise NoInputError(
                f"configuration file {path} does not exist",
                hint="check the path given with -C or DMA_CONF",
            )
    elif os.path.exists(SYSTEM_CONFIG):
        path = SYSTEM_CONFIG
        text = read_text(path, "configuration", "fix its permissions")
    else:
        layout = embedded_layout(environ)
        embedded = True
        path = layout.config_file
        defaults = layout.defaults()
        _create_embedded(layout)
        text = read_text(path, "configuration", "fix its permissions")
    config = parse_config(text, path, defaults) if text is not None else defaults
    config = _absolute_paths(config, os.path.dirname(os.path.abspath(path)))
    host = system.system_hostname()
    return Settings(
        config=config,
        config_path=path,
        embedded=embedded,
        mailname=_resolve_mailname(config, host, text, path),
        system_hostname=host,
    )


ACCOUNTS_READ_LIMIT = 1 << 20  # octets: an accounts file is a few KiB


def load_accounts(settings: Settings) -> AccountsFile | None:
    """The ACCOUNTS file's accounts and routes (SPEC 2.4); None when ACCOUNTS is not set.

    Only remote delivery and -bv call this, so that a submission never imports
    tomllib.  The file must exist, be a regular file of at most ACCOUNTS_READ_LIMIT
    octets in UTF-8, owned by root or by the user running dma; its mode goes to the
    parser, which refuses secrets that others may read and a file others may write.
    Every problem is a ConfigError (exit 78) naming the file.
    """
    path = settings.config.accounts
    if not path:
        return None
    from dma.core.accounts import parse_accounts

    data, mode = _read_accounts_file(path, settings.config_path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError("the accounts file is not UTF-8 text", where=f"{path}:{line}",
                          hint="TOML files are UTF-8: fix the octets on that line") from None
    return parse_accounts(text, path, mode)


def _read_accounts_file(path: str, config_path: str) -> tuple[bytes, int]:
    """The octets and the mode of the accounts file ``path``."""
    fix = f"fix ACCOUNTS in {config_path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        missing = isinstance(error, (FileNotFoundError, NotADirectoryError))
        raise ConfigError(
            f"cannot read the accounts file: {error.strerror}", where=path,
            hint=f"create it, or {fix}" if missing
            else "remote delivery and -bv read it: run them as root or as the file's owner",
        ) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            from dma.adapters.file_kinds import file_kind

            raise ConfigError(f"the accounts file is {file_kind(status.st_mode)}, not a regular"
                              " file", where=path, hint=fix)
        if status.st_uid not in (0, system.euid()):
            raise ConfigError(
                f"the accounts file is owned by uid {status.st_uid}, neither root nor you"
                f" (uid {system.euid()}): its owner chooses the commands dma runs",
                where=path, hint="chown it to root or to yourself")
        data = b""
        while len(data) <= ACCOUNTS_READ_LIMIT:
            chunk = os.read(fd, ACCOUNTS_READ_LIMIT + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as error:
        raise ConfigError(f"cannot read the accounts file: {error.strerror}", where=path,
                          hint=fix) from None
    finally:
        os.close(fd)
    if len(data) > ACCOUNTS_READ_LIMIT:
        raise ConfigError(f"the accounts file is over {ACCOUNTS_READ_LIMIT} octets", where=path,
                          hint=f"an accounts file is a few KiB: {fix}")
    return data, status.st_mode
