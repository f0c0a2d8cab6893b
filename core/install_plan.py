"""``dma install-system``: what to change on a host to make pydma its MTA, and how
to undo it (SPEC 8.2).

Pure: the shell describes the host as a ``Host`` value (paths as ``lstat`` sees
them, users, groups, package owners, units, the record of earlier installs) and
executes the ``Plan`` it gets back, step by step, recording each change in the
manifest before making it.  A host that is set up gets an empty plan; ``--uninstall``
plans from the manifest alone: it undoes what the manifest says was done, and only
where the host still shows what install left (anything changed since is left as it
is, with a note).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from dma.core import sysexits
from dma.core.errors import CantCreateError, ConfigError, DmaError, UsageError
from dma.core.octets import printable
from dma.core.system_files import (
    PICKUP_PATH,
    PICKUP_SERVICE,
    RUNNER_ARGS,
    RUNNER_SERVICE,
    cron_file,
    default_config,
    pickup_path_unit,
    pickup_unit,
    runner_unit,
)
from dma.core.system_layout import (
    DELIVERY_GROUP,
    DELIVERY_USER,
    MAIL_DIRECTORY_MODE,
    MAIL_GROUP,
    MAILDROP,
    MAILDROP_MODE,
    SECRET_FILE_MODE,
    SPOOL_FILE_MODE,
    SPOOL_MODE,
    SYSTEM_CONFIG,
)

ROOT = "root"
STATE_DIR = "/var/lib/dma"
MANIFEST = STATE_DIR + "/install.json"
MANIFEST_VERSION = 1
CONFIG_DIR = "/etc/dma"
DEFAULT_AUTHPATH = CONFIG_DIR + "/auth.conf"
MANUAL_PAGE = "/usr/local/share/man/man8/dma.8"
CRON_FILE = "/etc/cron.d/dma"
UNIT_DIR = "/etc/systemd/system"
COMMAND_LINKS = (
    ("/usr/sbin/sendmail", "sendmail"),
    ("/usr/lib/sendmail", "sendmail"),
    ("/usr/bin/mailq", "mailq"),
    ("/usr/bin/newaliases", "newaliases"),
)
"""The paths every program looks for an MTA at, and the command each points at."""

SLOTS = ".slots"
SLOTS_MODE = 0o2770
"""SPOOLDIR/.slots (adapters/slots.py): the delivery user takes connection slots there."""

QUARANTINE = "quarantine"
QUARANTINE_MODE = 0o2750
"""SPOOLDIR/quarantine: root moves damaged items there; the delivery group lists them."""

RUNNER_LOCK = ".runner.lock"
"""The -qTIME runner's lock in SPOOLDIR (shell/delivery.py): no mail, removed with the spool."""

PUBLIC_FILE_MODE = 0o644
PUBLIC_DIRECTORY_MODE = 0o755
DIVERTED_SUFFIX = ".distrib"
"""dpkg-divert's usual name for a package's file set aside."""
SET_ASIDE_SUFFIX = ".before-dma"
"""A file that no package owns (or a package's file under /etc), set aside by rename.
The dot keeps cron and systemd from reading it."""


class NotRootError(DmaError):
    """install-system changes users, /etc, /usr and /var: only root may."""

    exit_code = sysexits.EX_NOPERM


class Kind(enum.Enum):
    """What is at a path (``lstat``: a link is a link)."""

    MISSING = "missing"
    DIRECTORY = "directory"
    FILE = "file"
    LINK = "link"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PathState:
    """One path as the host shows it: kind, owner and group names, permission bits,
    a link's target, a file's SHA-256 (when read), a directory's entry names."""

    kind: Kind
    owner: str = ""
    group: str = ""
    mode: int = 0
    target: str = ""
    digest: str = ""
    entries: tuple[str, ...] = ()

    def has(self, owner: str, group: str, mode: int) -> bool:
        """True when owner, group and permission bits are these."""
        return (self.owner, self.group, self.mode) == (owner, group, mode)

    def shown(self) -> str:
        """``root:dma 2751``, ``a link to X``, ``missing``: for plan lines and notes."""
        if self.kind is Kind.MISSING:
            return "missing"
        if self.kind is Kind.LINK:
            return f"a link to {self.target}"
        return f"{self.owner}:{self.group} {self.mode:04o}"

    def same(self, other: PathState) -> bool:
        """True when ``other`` is this state as far as install set it: a link by its
        target, a file by its content (unknown content is not the same) and owner, group
        and mode, anything else by owner, group and mode."""
        if self.kind is not other.kind:
            return False
        if self.kind is Kind.LINK:
            return self.target == other.target
        if self.kind is Kind.FILE and self.digest != other.digest:
            return False
        return self.has(other.owner, other.group, other.mode)


MISSING = PathState(Kind.MISSING)


@dataclass(frozen=True, slots=True)
class UnitState:
    """A systemd unit as systemctl sees it."""

    enabled: bool = False
    active: bool = False


@dataclass(frozen=True, slots=True)
class Commands:
    """The installed commands (absolute paths): what the links and units point at."""

    dma: str
    sendmail: str
    mailq: str
    newaliases: str

    def named(self, name: str) -> str:
        """The path of the command ``name`` (sendmail, mailq, newaliases, dma)."""
        path: str = getattr(self, name)
        return path


@dataclass(frozen=True, slots=True)
class Layout:
    """Where this host's dma keeps mail (from its dma.conf, or the defaults)."""

    spooldir: str = "/var/spool/dma"
    maildir: str = "/var/mail"
    authpath: str = DEFAULT_AUTHPATH

    @property
    def maildrop(self) -> str:
        return join(self.spooldir, MAILDROP)

    @property
    def slots(self) -> str:
        return join(self.spooldir, SLOTS)

    @property
    def quarantine(self) -> str:
        return join(self.spooldir, QUARANTINE)


class Action(enum.Enum):
    """What a manifest record says install did."""

    GROUP = "group"  # added a system group
    USER = "user"  # added a system user
    DIRECTORY = "directory"  # created a directory
    FILE = "file"  # wrote a file (where none was, or over its own earlier one)
    LINK = "link"  # made a symbolic link
    OWNER_MODE = "owner_mode"  # changed the owner, group or mode of what was there
    SET_ASIDE = "set_aside"  # moved another package's file out of the way
    UNIT = "unit"  # enabled and started a systemd unit


@dataclass(frozen=True, slots=True)
class Record:
    """One change install made, written to the manifest before it is made."""

    action: Action
    subject: str  # a path, a user or group name, a unit name
    before: PathState = MISSING
    after: PathState = MISSING
    package: str = ""  # SET_ASIDE: the owning package ("" for none)
    moved_to: str = ""  # SET_ASIDE: where the file went
    diverted: bool = False  # SET_ASIDE: with dpkg-divert (else a rename)


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything install did on this host, in order (/var/lib/dma/install.json)."""

    layout: Layout = Layout()
    records: tuple[Record, ...] = ()

    def plus(self, record: Record) -> Manifest:
        """This manifest with ``record`` appended."""
        return replace(self, records=(*self.records, record))


@dataclass(frozen=True, slots=True)
class Host:
    """What the shell found on the host; paths not in ``paths`` count as missing."""

    commands: Commands
    layout: Layout = Layout()
    paths: Mapping[str, PathState] = field(default_factory=lambda: MappingProxyType({}))
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    packages: Mapping[str, str] | None = None  # path -> owning package ("" none); None: no dpkg
    systemd: bool = False
    units: Mapping[str, UnitState] = field(default_factory=lambda: MappingProxyType({}))
    runner_running: bool = False
    manual: str | None = None  # the dma(8) page in roff, when this pydma has one
    unreachable: tuple[str, ...] = ()  # why other users cannot run the commands
    manifest: Manifest = Manifest()

    def at(self, path: str) -> PathState:
        """The state of ``path`` (MISSING when the shell did not find it)."""
        return self.paths.get(path, MISSING)

    def package_of(self, path: str) -> str:
        """A phrase naming who owns ``path``: the package, or why none is known."""
        if self.packages is None:
            return "no package database to ask (no dpkg)"
        package = self.packages.get(path, "")
        return f"Debian package {package}" if package else "not from a Debian package"


@dataclass(frozen=True, slots=True)
class Options:
    """The command line of install-system."""

    force: bool = False
    dry_run: bool = False
    uninstall: bool = False
    help: bool = False


USAGE = "usage: dma install-system [--dry-run] [--force | --uninstall]"


def parse_arguments(argv: Sequence[str]) -> Options:
    """install-system's arguments (those after ``install-system``) -> Options;
    UsageError (64) naming a bad one."""
    flags = {"--force": "force", "--dry-run": "dry_run", "--uninstall": "uninstall",
             "--help": "help", "-h": "help"}
    chosen: dict[str, bool] = {}
    for argument in argv:
        name = flags.get(argument)
        if name is None:
            raise UsageError(f"unknown argument {printable(argument)}",
                             hint=USAGE)
        chosen[name] = True
    options = Options(**chosen)
    if options.force and options.uninstall:
        raise UsageError("--force goes with an install, not --uninstall",
                         hint=USAGE)
    return options


# ---- steps -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddGroup:
    """groupadd --system NAME."""

    name: str

    def describe(self) -> str:
        return f"add the system group {self.name}"

    def record(self) -> Record | None:
        return Record(Action.GROUP, self.name)


@dataclass(frozen=True, slots=True)
class AddUser:
    """useradd --system: no login shell, no home directory."""

    name: str
    group: str

    def describe(self) -> str:
        return (f"add the system user {self.name} (group {self.group},"
                " no login shell, no home directory)")

    def record(self) -> Record | None:
        return Record(Action.USER, self.name)


@dataclass(frozen=True, slots=True)
class MakeDirectory:
    """mkdir, then exactly this owner, group and mode."""

    path: str
    owner: str
    group: str
    mode: int

    def describe(self) -> str:
        return f"create {self.path} ({self.owner}:{self.group} {self.mode:04o})"

    def record(self) -> Record | None:
        return Record(Action.DIRECTORY, self.path,
                      after=PathState(Kind.DIRECTORY, self.owner, self.group, self.mode))


@dataclass(frozen=True, slots=True)
class ChangeOwnerMode:
    """chown and chmod what is there (never through a link)."""

    path: str
    owner: str
    group: str
    mode: int
    before: PathState

    def describe(self) -> str:
        return (f"set {self.path} to {self.owner}:{self.group} {self.mode:04o}"
                f" (was {self.before.shown()})")

    def record(self) -> Record | None:
        before = replace(self.before, entries=())
        return Record(Action.OWNER_MODE, self.path, before=before,
                      after=replace(before, owner=self.owner, group=self.group, mode=self.mode))


@dataclass(frozen=True, slots=True)
class WriteFile:
    """Write ``text`` to ``path`` (a temporary name, then rename) with this owner and mode."""

    path: str
    text: str
    what: str
    mode: int = PUBLIC_FILE_MODE
    before: PathState = MISSING

    def describe(self) -> str:
        verb = "write" if self.before.kind is Kind.MISSING else "update"
        return f"{verb} {self.path} ({self.what}; {ROOT}:{ROOT} {self.mode:04o})"

    def record(self) -> Record | None:
        return Record(Action.FILE, self.path, before=replace(self.before, entries=()),
                      after=PathState(Kind.FILE, ROOT, ROOT, self.mode, digest=digest(self.text)))


@dataclass(frozen=True, slots=True)
class Link:
    """A symbolic link ``path`` -> ``target`` (replacing our own older link)."""

    path: str
    target: str
    before: PathState = MISSING

    def describe(self) -> str:
        return f"link {self.path} -> {self.target}"

    def record(self) -> Record | None:
        return Record(Action.LINK, self.path, before=replace(self.before, entries=()),
                      after=PathState(Kind.LINK, target=self.target))


@dataclass(frozen=True, slots=True)
class SetAside:
    """Move another package's (or nobody's) file out of the way: dpkg-divert for a
    package's file outside /etc, so that its upgrades go to the new name too; a
    rename otherwise."""

    path: str
    moved_to: str
    package: str
    diverted: bool
    before: PathState

    def describe(self) -> str:
        if self.diverted:
            return (f"set {self.path} aside: dpkg-divert moves {self.package}'s file to"
                    f" {self.moved_to}")
        owner = f"{self.package}'s" if self.package else "not from a Debian package"
        return f"set {self.path} aside ({owner}) as {self.moved_to}"

    def record(self) -> Record | None:
        return Record(Action.SET_ASIDE, self.path, before=replace(self.before, entries=()),
                      package=self.package,
                      moved_to=self.moved_to, diverted=self.diverted)


@dataclass(frozen=True, slots=True)
class ReloadSystemd:
    """systemctl daemon-reload."""

    def describe(self) -> str:
        return "systemctl daemon-reload"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class EnableUnit:
    """systemctl enable --now UNIT."""

    unit: str

    def describe(self) -> str:
        return f"systemctl enable --now {self.unit}"

    def record(self) -> Record | None:
        return Record(Action.UNIT, self.unit)


@dataclass(frozen=True, slots=True)
class RestartUnit:
    """systemctl restart UNIT (its file changed)."""

    unit: str

    def describe(self) -> str:
        return f"systemctl restart {self.unit}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class StartRunner:
    """Start the long-lived runner now, detached (no systemd: cron starts it at boot)."""

    argv: tuple[str, ...]
    spooldir: str

    def describe(self) -> str:
        return f"start the queue runner: {' '.join(self.argv)} (detached; cron starts it at boot)"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class DisableUnit:
    """systemctl disable --now UNIT."""

    unit: str

    def describe(self) -> str:
        return f"systemctl disable --now {self.unit}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class StopRunner:
    """Stop the runner that holds the spool's runner lock (SIGTERM, then wait)."""

    spooldir: str

    def describe(self) -> str:
        return f"stop the queue runner of {self.spooldir}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class Remove:
    """Unlink a file or link install made."""

    path: str

    def describe(self) -> str:
        return f"remove {self.path}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class RemoveDirectory:
    """Remove these lock files (no mail in them), then the empty directory."""

    path: str
    locks: tuple[str, ...] = ()

    def describe(self) -> str:
        also = f" (and its lock files: {', '.join(self.locks)})" if self.locks else ""
        return f"remove the directory {self.path}{also}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class PutBack:
    """Undo a SetAside."""

    path: str
    moved_to: str
    diverted: bool

    def describe(self) -> str:
        how = " (dpkg-divert --remove)" if self.diverted else ""
        return f"put {self.path} back from {self.moved_to}{how}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class Regroup:
    """What stays under ``path`` with group ``old`` gets group ``new`` (the group goes)."""

    path: str
    old: str
    new: str

    def describe(self) -> str:
        return (f"give what is kept in {self.path} with group {self.old} the group"
                f" {self.new} (group {self.old} goes)")

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class DeleteUser:
    """userdel NAME."""

    name: str

    def describe(self) -> str:
        return f"remove the system user {self.name}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class DeleteGroup:
    """groupdel NAME (when it is still there: userdel may have taken it)."""

    name: str

    def describe(self) -> str:
        return f"remove the system group {self.name}"

    def record(self) -> Record | None:
        return None


@dataclass(frozen=True, slots=True)
class ForgetInstall:
    """Remove the manifest: nothing is left to undo."""

    path: str = MANIFEST

    def describe(self) -> str:
        return f"remove the install record {self.path}"

    def record(self) -> Record | None:
        return None


Step = (AddGroup | AddUser | MakeDirectory | ChangeOwnerMode | WriteFile | Link | SetAside
        | ReloadSystemd | EnableUnit | RestartUnit | StartRunner | DisableUnit | StopRunner
        | Remove | RemoveDirectory | PutBack | Regroup | DeleteUser | DeleteGroup | ForgetInstall)


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered steps, and notes for the administrator (warnings, what is kept)."""

    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        """True when there is nothing to change."""
        return not self.steps


# ---- small pure helpers ------------------------------------------------------------


def join(directory: str, name: str) -> str:
    """``directory/name`` (no os.path in core)."""
    return directory.rstrip("/") + "/" + name


def parents(path: str) -> tuple[str, ...]:
    """The ancestors of an absolute path, outermost first, without ``/``:
    ``/a/b/c`` -> (``/a``, ``/a/b``)."""
    parts = [part for part in path.split("/") if part]
    return tuple("/" + "/".join(parts[:n]) for n in range(1, len(parts)))


def digest(text: str) -> str:
    """The SHA-256 of ``text`` as written (UTF-8), in hex: how files are compared."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def unit_files(layout: Layout, commands: Commands, *, documented: bool) -> tuple[
        tuple[str, str, str], ...]:
    """(path, text, what) of each systemd unit."""
    return (
        (join(UNIT_DIR, RUNNER_SERVICE), runner_unit(commands.dma, documented=documented),
         "systemd: the queue runner"),
        (join(UNIT_DIR, PICKUP_SERVICE), pickup_unit(commands.dma, documented=documented),
         "systemd: one pickup and delivery pass"),
        (join(UNIT_DIR, PICKUP_PATH), pickup_path_unit(layout.spooldir, documented=documented),
         "systemd: starts the pickup when the maildrop changes"),
    )


def _owned_files(layout: Layout) -> tuple[str, ...]:
    """The files install writes that another package might have put there first."""
    units = tuple(join(UNIT_DIR, name) for name in (RUNNER_SERVICE, PICKUP_SERVICE, PICKUP_PATH))
    return (*(path for path, _ in COMMAND_LINKS), MANUAL_PAGE, CRON_FILE, *units)


def install_paths(layout: Layout) -> tuple[str, ...]:
    """Every path the install planner looks at (the shell ``lstat``s each, lists the
    entries of directories, and also looks at the entries of SPOOLDIR)."""
    mine = (STATE_DIR, MANIFEST, layout.spooldir, layout.maildrop, layout.slots,
            layout.quarantine, layout.maildir, CONFIG_DIR, SYSTEM_CONFIG, layout.authpath,
            *_owned_files(layout))
    aside = tuple(path + suffix for path in _owned_files(layout)
                  for suffix in (DIVERTED_SUFFIX, SET_ASIDE_SUFFIX))
    ancestors = tuple(parent for path in mine for parent in parents(path))
    return tuple(dict.fromkeys((*ancestors, *mine, *aside)))


def package_paths(layout: Layout) -> tuple[str, ...]:
    """The paths whose owning package the shell asks dpkg about (when they exist)."""
    return _owned_files(layout)


def uninstall_paths(manifest: Manifest) -> tuple[str, ...]:
    """Every path the uninstall planner looks at."""
    layout = manifest.layout
    found: list[str] = [layout.spooldir, layout.maildrop, layout.quarantine, layout.slots,
                        layout.maildir]
    for record in manifest.records:
        if record.action in _PATH_ACTIONS:
            found.append(record.subject)
        if record.moved_to:
            found.append(record.moved_to)
    return tuple(dict.fromkeys(found))


_PATH_ACTIONS = frozenset({Action.DIRECTORY, Action.FILE, Action.LINK, Action.OWNER_MODE,
                           Action.SET_ASIDE})


# ---- install -----------------------------------------------------------------------


class _Install:
    """Builds the install plan: one method per kind of thing install owns."""

    def __init__(self, host: Host, options: Options) -> None:
        self.host = host
        self.options = options
        self.steps: list[Step] = []
        self.notes: list[str] = []
        self.foreign: list[str] = []
        self.problems: list[str] = []

    def directory(self, path: str, owner: str, group: str, mode: int, *,
                  exact: bool = True) -> None:
        """A directory: created when missing; with ``exact``, owner and mode set."""
        state = self.host.at(path)
        if state.kind is Kind.MISSING:
            self.steps.append(MakeDirectory(path, owner, group, mode))
        elif state.kind is not Kind.DIRECTORY:
            self.problems.append(f"{path} is {_kind_phrase(state)}, not a directory")
        elif exact and not state.has(owner, group, mode):
            self.steps.append(ChangeOwnerMode(path, owner, group, mode, state))

    def directory_chain(self, path: str) -> None:
        """``path`` and its missing ancestors, root:root 0755 (kept as they are when present)."""
        for directory in (*parents(path), path):
            self.directory(directory, ROOT, ROOT, PUBLIC_DIRECTORY_MODE, exact=False)

    def old_spool_files(self) -> None:
        """Queue files a C dma left (group not the delivery group) get root:dma 0640,
        so that the runner and the delivery user can read them."""
        spooldir = self.host.layout.spooldir
        if self.host.at(spooldir).kind is not Kind.DIRECTORY:
            return
        for name in self.host.at(spooldir).entries:
            state = self.host.at(join(spooldir, name))
            if (name[:1] in ("Q", "M") and state.kind is Kind.FILE
                    and state.group != DELIVERY_GROUP):
                self.steps.append(ChangeOwnerMode(join(spooldir, name), ROOT, DELIVERY_GROUP,
                                                  SPOOL_FILE_MODE, state))

    def ours(self, path: str, state: PathState) -> bool:
        """True when the manifest says install put ``state`` at ``path``."""
        made = [record.after for record in self.host.manifest.records
                if record.subject == path and record.action in (Action.FILE, Action.LINK)]
        return bool(made) and made[-1].same(state)

    def clear(self, path: str) -> PathState | None:
        """Make room at ``path``: the state our new file replaces, or None when another
        package's file is in the way and ``--force`` was not given."""
        state = self.host.at(path)
        if state.kind is Kind.MISSING or self.ours(path, state):
            return state
        if not self.options.force:
            self.foreign.append(path)
            return None
        package = (self.host.packages or {}).get(path, "")
        diverted = bool(package) and not path.startswith("/etc/")
        moved_to = path + (DIVERTED_SUFFIX if diverted else SET_ASIDE_SUFFIX)
        if self.host.at(moved_to).kind is not Kind.MISSING:
            self.problems.append(f"cannot set {path} aside: {moved_to} is there already")
            return None
        self.steps.append(SetAside(path, moved_to, package, diverted, state))
        return MISSING

    def file(self, path: str, text: str, what: str) -> bool:
        """A file of ours with exactly ``text``, root:root 0644; True when written."""
        state = self.host.at(path)
        if state.kind is Kind.FILE and state.digest == digest(text):
            if not state.has(ROOT, ROOT, PUBLIC_FILE_MODE):
                self.steps.append(ChangeOwnerMode(path, ROOT, ROOT, PUBLIC_FILE_MODE, state))
            return False
        before = self.clear(path)
        if before is None:
            return False
        self.steps.append(WriteFile(path, text, what, before=before))
        return True

    def link(self, path: str, target: str) -> None:
        """A symbolic link of ours."""
        state = self.host.at(path)
        if state.kind is Kind.LINK and state.target == target:
            return
        before = self.clear(path)
        if before is not None:
            self.steps.append(Link(path, target, before))

    def configuration(self) -> None:
        """/etc/dma, dma.conf (kept when present), auth.conf's owner and mode."""
        self.directory(CONFIG_DIR, ROOT, ROOT, PUBLIC_DIRECTORY_MODE, exact=False)
        config = self.host.at(SYSTEM_CONFIG)
        if config.kind is Kind.MISSING:
            self.steps.append(WriteFile(SYSTEM_CONFIG, default_config(),
                                        "a commented default configuration"))
        elif config.kind is Kind.FILE and not config.mode & 0o004:
            self.notes.append(
                f"{SYSTEM_CONFIG} is kept as it is, but other users cannot read it"
                f" ({config.shown()}): their submissions fail until it is readable"
                " (it must hold no secrets: those go in auth.conf)")
        auth = self.host.layout.authpath
        state = self.host.at(auth)
        if state.kind is Kind.FILE:
            if not state.has(ROOT, DELIVERY_GROUP, SECRET_FILE_MODE):
                self.steps.append(ChangeOwnerMode(auth, ROOT, DELIVERY_GROUP, SECRET_FILE_MODE,
                                                  state))
        elif state.kind is not Kind.MISSING:
            self.notes.append(f"{auth} is {_kind_phrase(state)}: left as it is; make it a"
                              f" regular file {ROOT}:{DELIVERY_GROUP}"
                              f" {SECRET_FILE_MODE:04o}")

    def mailboxes(self) -> None:
        """MAILDIR root:mail 2775, as Debian has it (a link is left alone)."""
        maildir = self.host.layout.maildir
        if self.host.at(maildir).kind is Kind.LINK:
            self.notes.append(f"{maildir} is {_kind_phrase(self.host.at(maildir))}:"
                              " left as it is")
            return
        self.directory(maildir, ROOT, MAIL_GROUP, MAIL_DIRECTORY_MODE)

    def manual(self) -> None:
        """dma(8), when this pydma has it."""
        if self.host.manual is None:
            self.notes.append("dma(8) is not installed: this pydma has no manual page yet")
            return
        self.directory_chain(MANUAL_PAGE.rsplit("/", 1)[0])
        self.file(MANUAL_PAGE, self.host.manual, "the dma(8) manual page")

    def starters(self) -> None:
        """systemd units (enabled and started) where systemd runs; else the cron file
        and the runner started now."""
        host = self.host
        if not host.systemd:
            self.file(CRON_FILE, cron_file(host.commands.dma),
                      "cron: the queue runner at boot, a queue run every 5 minutes")
            if not host.runner_running:
                self.steps.append(StartRunner((host.commands.dma, *RUNNER_ARGS),
                                               host.layout.spooldir))
            return
        written = {path.rsplit("/", 1)[1]
                   for path, text, what in unit_files(host.layout, host.commands,
                                                      documented=host.manual is not None)
                   if self.file(path, text, what)}
        if written:
            self.steps.append(ReloadSystemd())
        for unit in (RUNNER_SERVICE, PICKUP_PATH):
            state = host.units.get(unit, UnitState())
            if not (state.enabled and state.active):
                self.steps.append(EnableUnit(unit))
            elif unit in written:
                self.steps.append(RestartUnit(unit))

    def refusal(self) -> DmaError | None:
        """The error that stops install before any change, if any."""
        if self.problems:
            return CantCreateError(
                "; ".join(self.problems) + "; nothing was changed",
                hint="move it out of the way, then run dma install-system again")
        if not self.foreign:
            return None
        by_owner: dict[str, list[str]] = {}
        for path in self.foreign:
            by_owner.setdefault(self.host.package_of(path), []).append(path)
        owners = "; ".join(f"{', '.join(paths)} ({owner})" for owner, paths in by_owner.items())
        return CantCreateError(
            f"another mail system's files are in the way: {owners}; nothing was changed",
            hint="remove that package, or run `dma install-system --force` to set its files"
                 " aside (`dma install-system --uninstall` puts them back)")


def plan_install(host: Host, options: Options = Options()) -> Plan:
    """The steps that make ``host`` a system-mode dma host, in order; an empty plan
    when it is one.  Raises CantCreateError (73) naming another MTA's files (and their
    package) when they are in the way and ``--force`` was not given, or a path that
    must be a directory and is not: then nothing is planned at all."""
    layout = host.layout
    plan = _Install(host, options)
    plan.directory(STATE_DIR, ROOT, ROOT, PUBLIC_DIRECTORY_MODE, exact=False)
    for group in (MAIL_GROUP, DELIVERY_GROUP):
        if group not in host.groups:
            plan.steps.append(AddGroup(group))
    if DELIVERY_USER not in host.users:
        plan.steps.append(AddUser(DELIVERY_USER, DELIVERY_GROUP))
    plan.directory(layout.spooldir, ROOT, DELIVERY_GROUP, SPOOL_MODE)
    plan.old_spool_files()
    plan.directory(layout.maildrop, ROOT, DELIVERY_GROUP, MAILDROP_MODE)
    plan.directory(layout.slots, ROOT, DELIVERY_GROUP, SLOTS_MODE)
    plan.directory(layout.quarantine, ROOT, DELIVERY_GROUP, QUARANTINE_MODE)
    plan.mailboxes()
    plan.configuration()
    plan.manual()
    for path, command in COMMAND_LINKS:
        plan.link(path, host.commands.named(command))
    plan.starters()
    error = plan.refusal()
    if error is not None:
        raise error
    if host.unreachable:
        plan.notes.append(
            "users other than root cannot run the installed commands ("
            + "; ".join(host.unreachable)
            + "): install pydma where every user can read it, for instance a venv in"
            " /opt/pydma, or pipx with PIPX_HOME=/opt/pipx PIPX_BIN_DIR=/usr/local/bin")
    return Plan(tuple(plan.steps), tuple(plan.notes))


def _of(records: list[Record], *actions: Action) -> list[Record]:
    """The records of these actions, in order."""
    return [record for record in records if record.action in actions]


def _some(names: list[str]) -> str:
    """Up to five names, sorted, for a note."""
    shown = ", ".join(sorted(names)[:5])
    return shown + (", ..." if len(names) > 5 else "")


def _kind_phrase(state: PathState) -> str:
    """``a symbolic link to X``, ``a regular file``, ... for error messages."""
    if state.kind is Kind.LINK:
        return f"a symbolic link to {state.target}"
    return {Kind.FILE: "a regular file", Kind.DIRECTORY: "a directory",
            Kind.OTHER: "a special file", Kind.MISSING: "missing"}[state.kind]


# ---- uninstall ---------------------------------------------------------------------


class _Uninstall:
    """Builds the uninstall plan from the manifest, subject by subject, newest first."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.layout = host.manifest.layout
        self.steps: list[Step] = []
        self.notes: list[str] = []
        self.gone: set[str] = set()

    def subjects(self) -> Iterator[tuple[str, str, list[Record]]]:
        """(category, subject, its records), subjects in reverse order of their first
        record; the category is ``path`` or the action (user, group, unit)."""
        grouped: dict[tuple[str, str], list[Record]] = {}
        for record in self.host.manifest.records:
            category = "path" if record.action in _PATH_ACTIONS else record.action.value
            grouped.setdefault((category, record.subject), []).append(record)
        for (category, subject), records in reversed(grouped.items()):
            yield category, subject, records

    def stop(self) -> None:
        """Units disabled and the runner stopped before anything they use goes."""
        units = dict.fromkeys(r.subject for r in self.host.manifest.records
                              if r.action is Action.UNIT)
        for unit in reversed(units):
            state = self.host.units.get(unit, UnitState())
            if self.host.systemd and (state.enabled or state.active):
                self.steps.append(DisableUnit(unit))
        if self.host.runner_running:
            self.steps.append(StopRunner(self.layout.spooldir))

    def undo(self, category: str, subject: str, records: list[Record]) -> None:
        """Undo what ``records`` did to ``subject``, where the host still shows it
        (units were handled by ``stop``)."""
        if category == Action.USER.value and subject in self.host.users:
            self.steps.append(DeleteUser(subject))
        elif category == Action.GROUP.value:
            self.group(subject)
        elif category == "path":
            self.undo_path(subject, records)

    def undo_path(self, path: str, records: list[Record]) -> None:
        """A path install made (removed), changed (owner and mode back) or set aside
        (put back), in that order."""
        made = _of(records, Action.DIRECTORY, Action.FILE, Action.LINK)
        changed = _of(records, Action.OWNER_MODE)
        aside = _of(records, Action.SET_ASIDE)
        if made:
            self.unmake(path, made[-1])
        if changed:
            self.restore(path, changed[0].before, changed[-1].after)
            if path == self.layout.spooldir and self.host.at(path).kind is Kind.DIRECTORY:
                self.keep_mail(changed[0].before.group)
        if aside:
            self.put_back(path, aside[0])

    def group(self, name: str) -> None:
        """groupdel, unless mailboxes still use the mail group install added."""
        if name not in self.host.groups:
            return
        if name == MAIL_GROUP and self.host.at(self.layout.maildir).entries:
            self.notes.append(f"kept the group {name}: the mailboxes in"
                              f" {self.layout.maildir} use it")
            return
        self.steps.append(DeleteGroup(name))

    def unmake(self, path: str, made: Record) -> None:
        """Remove a directory, file or link install made, if it is still what it made."""
        state = self.host.at(path)
        if state.kind is Kind.MISSING:
            return
        if made.action is Action.DIRECTORY and state.kind is Kind.DIRECTORY:
            self.remove_directory(path, state)
        elif made.after.same(state):
            self.steps.append(Remove(path))
            self.gone.add(path)
        else:
            self.notes.append(f"left {path} as it is: it changed since install"
                              f" (now {_kind_phrase(state)})")

    def remove_directory(self, path: str, state: PathState) -> None:
        """rmdir when nothing but lock files would be left; the spool keeps its mail."""
        locks, left = self.contents(path, state)
        if path == STATE_DIR:
            self.steps.append(ForgetInstall())
        if not left:
            self.steps.append(RemoveDirectory(path, locks))
            self.gone.add(path)
        elif path == self.layout.spooldir:
            self.keep_mail(ROOT)
        elif not path.startswith(join(self.layout.spooldir, "")):  # the spool's note has it
            self.notes.append(f"kept {path}: it is not empty ({_some(left)})")

    def contents(self, path: str, state: PathState) -> tuple[tuple[str, ...], list[str]]:
        """The lock files in a directory, and what else will be left in it once this
        plan's removals (and the manifest's) are done."""
        locks = tuple(name for name in state.entries if self.is_lock(path, name))
        gone = {*self.gone, MANIFEST, *(join(path, name) for name in locks)}
        return locks, [name for name in state.entries if join(path, name) not in gone]

    def is_lock(self, directory: str, name: str) -> bool:
        """True for the spool's lock files: the runner's lock and the connection slots."""
        return ((directory == self.layout.spooldir and name == RUNNER_LOCK)
                or directory == self.layout.slots)

    def keep_mail(self, group: str) -> None:
        """The spool stays with its mail (the runner's lock goes); what has the delivery
        group gets ``group``."""
        spool = self.host.at(self.layout.spooldir)
        if RUNNER_LOCK in spool.entries:
            self.steps.append(Remove(join(self.layout.spooldir, RUNNER_LOCK)))
        queued = sum(1 for name in spool.entries if name.startswith("Q"))
        dropped = len(self.host.at(self.layout.maildrop).entries)
        quarantined = len(self.host.at(self.layout.quarantine).entries)
        counts = [f"{queued} queued item{'s' if queued != 1 else ''}"]
        if dropped:
            counts.append(f"{dropped} in the maildrop")
        if quarantined:
            counts.append(f"{quarantined} quarantined")
        self.notes.append(
            f"kept {self.layout.spooldir} with the mail in it ({', '.join(counts)}): mail is"
            " never deleted; deliver it with another dma run on this spool, or remove it"
            " by hand")
        self.steps.append(Regroup(self.layout.spooldir, DELIVERY_GROUP, group))

    def restore(self, path: str, before: PathState, after: PathState) -> None:
        """Owner, group and mode back to what they were, if install's are still there."""
        state = self.host.at(path)
        if state.kind is Kind.MISSING or state.has(before.owner, before.group, before.mode):
            return
        if state.has(after.owner, after.group, after.mode):
            self.steps.append(ChangeOwnerMode(path, before.owner, before.group, before.mode,
                                              state))
        else:
            self.notes.append(f"left {path} as it is: its owner or mode changed since install"
                              f" (now {state.shown()}, before install {before.shown()})")

    def put_back(self, path: str, aside: Record) -> None:
        """Another package's file back in its place, once ours is gone."""
        if self.host.at(aside.moved_to).kind is Kind.MISSING:
            if not aside.before.same(self.host.at(path)):
                self.notes.append(f"cannot put {path} back: {aside.moved_to} is gone")
            return
        if self.host.at(path).kind is Kind.MISSING or path in self.gone:
            self.steps.append(PutBack(path, aside.moved_to, aside.diverted))
        else:
            self.notes.append(f"left {aside.moved_to} where it is: {path} changed since"
                              " install")


def plan_uninstall(host: Host) -> Plan:
    """The steps that undo what ``host.manifest`` records, newest first, only where
    the host still shows what install left; queued mail is kept (with a note)."""
    if not host.manifest.records:
        return Plan((), (f"nothing to undo: {MANIFEST} records no install",))
    plan = _Uninstall(host)
    plan.stop()
    for category, subject, records in plan.subjects():
        plan.undo(category, subject, records)
    unit_removals = [index for index, step in enumerate(plan.steps)
                     if isinstance(step, Remove) and step.path.startswith(UNIT_DIR + "/")]
    if unit_removals and host.systemd:
        plan.steps.insert(unit_removals[-1] + 1, ReloadSystemd())
    if not any(isinstance(step, ForgetInstall) for step in plan.steps):
        plan.steps.append(ForgetInstall())
    return Plan(tuple(plan.steps), tuple(plan.notes))


# ---- the manifest as JSON ----------------------------------------------------------


def _state_json(state: PathState) -> dict[str, Any]:
    data: dict[str, Any] = {"kind": state.kind.value}
    if state.kind is not Kind.MISSING:
        data.update(owner=state.owner, group=state.group, mode=f"{state.mode:04o}")
    if state.target:
        data["target"] = state.target
    if state.digest:
        data["sha256"] = state.digest
    return data


def _record_json(record: Record) -> dict[str, Any]:
    data: dict[str, Any] = {"action": record.action.value, "subject": record.subject}
    if record.before.kind is not Kind.MISSING:
        data["before"] = _state_json(record.before)
    if record.after.kind is not Kind.MISSING:
        data["after"] = _state_json(record.after)
    if record.action is Action.SET_ASIDE:
        data.update(package=record.package, moved_to=record.moved_to, diverted=record.diverted)
    return data


def render_manifest(manifest: Manifest) -> str:
    """The manifest as JSON text (one record a line, for people who read it)."""
    layout = manifest.layout
    head = json.dumps({"spooldir": layout.spooldir, "maildir": layout.maildir,
                       "authpath": layout.authpath})
    records = ",\n  ".join(json.dumps(_record_json(record)) for record in manifest.records)
    return (f'{{"version": {MANIFEST_VERSION},\n "layout": {head},\n'
            f' "records": [\n  {records}\n ]}}\n')


def _state(data: object) -> PathState:
    if not isinstance(data, dict):
        raise ValueError(f"a path state must be an object, not {data!r}")
    kind = Kind(data["kind"])
    mode = int(data.get("mode", "0"), 8)
    return PathState(kind, str(data.get("owner", "")), str(data.get("group", "")), mode,
                     str(data.get("target", "")), str(data.get("sha256", "")))


def parse_manifest(text: str, path: str = MANIFEST) -> Manifest:
    """The manifest from its JSON text; ConfigError naming ``path`` when it is damaged."""
    try:
        data = json.loads(text)
        if data.get("version") != MANIFEST_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {MANIFEST_VERSION}")
        layout = Layout(**{key: str(value) for key, value in data["layout"].items()})
        records = []
        for item in data["records"]:
            records.append(Record(
                Action(item["action"]), str(item["subject"]),
                _state(item["before"]) if "before" in item else MISSING,
                _state(item["after"]) if "after" in item else MISSING,
                str(item.get("package", "")), str(item.get("moved_to", "")),
                bool(item.get("diverted", False))))
        return Manifest(layout, tuple(records))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ConfigError(f"the install record is damaged: {error}", where=path,
                          hint="restore it from a backup, or undo the install by hand"
                               " using the lines it still has") from None
