"""A host on paper for testing core/install_plan: what each step would change.

``apply(world, plan)`` does to a ``World`` (every path, user, group, unit, the
manifest) what the shell would do to a real host, and ``view`` shows the planner
only the paths the shell would gather (``install_paths`` and SPOOLDIR's entries, or
``uninstall_paths``), so a planner that looks at a path the shell never reads is
caught.  Pure, so that hypothesis can run thousands of install/uninstall rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType

from dma.core.install_plan import (
    MANIFEST,
    MISSING,
    ROOT,
    RUNNER_LOCK,
    AddGroup,
    AddUser,
    ChangeOwnerMode,
    Commands,
    DeleteGroup,
    DeleteUser,
    DisableUnit,
    EnableUnit,
    ForgetInstall,
    Host,
    Kind,
    Layout,
    Link,
    MakeDirectory,
    Manifest,
    PathState,
    Plan,
    PutBack,
    Regroup,
    ReloadSystemd,
    Remove,
    RemoveDirectory,
    RestartUnit,
    SetAside,
    StartRunner,
    Step,
    StopRunner,
    UnitState,
    WriteFile,
    digest,
    install_paths,
    join,
    uninstall_paths,
)
from dma.core.system_files import RUNNER_SERVICE
from dma.core.system_layout import DELIVERY_GROUP

COMMANDS = Commands("/opt/pydma/bin/dma", "/opt/pydma/bin/sendmail", "/opt/pydma/bin/mailq",
                    "/opt/pydma/bin/newaliases")

DEBIAN_DIRECTORIES = ("/etc", "/etc/cron.d", "/etc/systemd", "/etc/systemd/system", "/usr",
                      "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/local", "/usr/local/share",
                      "/usr/local/share/man", "/var", "/var/lib", "/var/spool")


def directory(owner: str = ROOT, group: str = ROOT, mode: int = 0o755) -> PathState:
    return PathState(Kind.DIRECTORY, owner, group, mode)


def regular(text: str = "", owner: str = ROOT, group: str = ROOT, mode: int = 0o644) -> PathState:
    return PathState(Kind.FILE, owner, group, mode, digest=digest(text))


def link(target: str) -> PathState:
    return PathState(Kind.LINK, ROOT, ROOT, 0o777, target=target)


@dataclass
class World:
    """Everything about a host that install-system reads or changes."""

    paths: dict[str, PathState] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    groups: set[str] = field(default_factory=lambda: {"root", "mail"})
    packages: dict[str, str] | None = field(default_factory=dict)
    systemd: bool = False
    units: dict[str, UnitState] = field(default_factory=dict)
    runner_running: bool = False
    manual: str | None = None
    manifest: Manifest = field(default_factory=Manifest)
    layout: Layout = field(default_factory=Layout)
    commands: Commands = COMMANDS

    def put(self, path: str, state: PathState) -> None:
        """``state`` at ``path``, listed in its parent directory."""
        if state.kind is Kind.DIRECTORY and path in self.paths:
            state = replace(state, entries=self.paths[path].entries)
        self.paths[path] = replace(state, entries=state.entries if state.kind is Kind.DIRECTORY
                                   else ())
        parent, name = path.rsplit("/", 1)
        if parent in self.paths:
            entries = set(self.paths[parent].entries) | {name}
            self.paths[parent] = replace(self.paths[parent], entries=tuple(sorted(entries)))

    def drop(self, path: str) -> None:
        """Nothing at ``path`` any more."""
        self.paths.pop(path, None)
        parent, name = path.rsplit("/", 1)
        if parent in self.paths:
            entries = set(self.paths[parent].entries) - {name}
            self.paths[parent] = replace(self.paths[parent], entries=tuple(sorted(entries)))

    def snapshot(self) -> dict[str, PathState]:
        """Every path's state (for before/after comparisons)."""
        return dict(self.paths)


def debian(**changes: object) -> World:
    """A Debian host with no MTA: the usual directories, /var/mail root:mail 2775."""
    world = World()
    for path in DEBIAN_DIRECTORIES:
        world.put(path, directory())
    world.put("/var/mail", directory(ROOT, "mail", 0o2775))
    for key, value in changes.items():
        setattr(world, key, value)
    return world


def view(world: World, *, uninstall: bool = False) -> Host:
    """The host as the shell would gather it for the planner."""
    if uninstall:
        wanted = set(uninstall_paths(world.manifest))
        layout = world.manifest.layout
    else:
        wanted = set(install_paths(world.layout))
        spool = world.paths.get(world.layout.spooldir, MISSING)
        wanted |= {join(world.layout.spooldir, name) for name in spool.entries}
        layout = world.layout
    paths = {path: state for path, state in world.paths.items() if path in wanted}
    packages = None if world.packages is None else {
        path: package for path, package in world.packages.items()
        if path in wanted and world.paths.get(path, MISSING).kind is not Kind.MISSING}
    return Host(
        commands=world.commands, layout=layout, paths=MappingProxyType(paths),
        users=frozenset(world.users), groups=frozenset(world.groups), packages=packages,
        systemd=world.systemd, units=MappingProxyType(dict(world.units)),
        runner_running=world.runner_running, manual=world.manual,
        manifest=world.manifest if world.manifest.records or uninstall
        else Manifest(world.layout))


def apply(world: World, plan: Plan) -> World:
    """Do ``plan`` to ``world`` (in place, and returned), recording as the shell does."""
    for step in plan.steps:
        record = step.record()
        if record is not None:
            world.manifest = world.manifest.plus(record)
        _do(world, step)
        if record is not None and world.paths.get(MANIFEST.rsplit("/", 1)[0]):
            world.put(MANIFEST, regular("the manifest"))
    return world


def _do(world: World, step: Step) -> None:
    if isinstance(step, AddGroup):
        world.groups.add(step.name)
    elif isinstance(step, AddUser):
        world.users.add(step.name)
    elif isinstance(step, MakeDirectory):
        world.put(step.path, directory(step.owner, step.group, step.mode))
    elif isinstance(step, ChangeOwnerMode):
        state = world.paths[step.path]
        world.put(step.path, replace(state, owner=step.owner, group=step.group, mode=step.mode))
    elif isinstance(step, WriteFile):
        world.put(step.path, regular(step.text, mode=step.mode))
    elif isinstance(step, Link):
        world.put(step.path, link(step.target))
    elif isinstance(step, SetAside):
        world.put(step.moved_to, world.paths[step.path])
        world.drop(step.path)
    elif isinstance(step, PutBack):
        world.put(step.path, world.paths[step.moved_to])
        world.drop(step.moved_to)
    elif isinstance(step, EnableUnit):
        world.units[step.unit] = UnitState(True, True)
        if step.unit == RUNNER_SERVICE:
            _run_runner(world)
    elif isinstance(step, DisableUnit):
        world.units[step.unit] = UnitState(False, False)
        if step.unit == RUNNER_SERVICE:
            world.runner_running = False
    elif isinstance(step, StartRunner):
        _run_runner(world)
    elif isinstance(step, StopRunner):
        world.runner_running = False
    elif isinstance(step, Remove):
        world.drop(step.path)
    elif isinstance(step, RemoveDirectory):
        for name in step.locks:
            world.drop(join(step.path, name))
        assert not world.paths[step.path].entries, f"{step.path} is not empty"
        world.drop(step.path)
    elif isinstance(step, Regroup):
        for path, state in list(world.paths.items()):
            if (path == step.path or path.startswith(step.path + "/")) and \
                    state.group == step.old:
                world.paths[path] = replace(state, group=step.new)
    elif isinstance(step, DeleteUser):
        world.users.discard(step.name)
    elif isinstance(step, DeleteGroup):
        world.groups.discard(step.name)
    elif isinstance(step, ForgetInstall):
        world.drop(step.path)
        world.manifest = Manifest()
    else:
        assert isinstance(step, ReloadSystemd | RestartUnit), step


def _run_runner(world: World) -> None:
    """A runner takes its lock file in the spool."""
    world.runner_running = True
    lock = join(world.layout.spooldir, RUNNER_LOCK)
    if lock not in world.paths:
        world.put(lock, regular("", ROOT, DELIVERY_GROUP, 0o640))
