"""``dma install-system``: make pydma this host's MTA (SPEC 8.2), or undo that.

Reads the host (adapters/host_admin), asks core/install_plan for the steps, prints
them and does them one by one.  Each change is written to the manifest
(/var/lib/dma/install.json) before it is made, so that ``--uninstall`` can undo a
run that stopped midway.  ``--dry-run`` prints the plan and changes nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from dma.adapters import host_admin
from dma.core.config import parse_config
from dma.core.errors import CantCreateError, DmaError
from dma.core.install_plan import (
    DEFAULT_AUTHPATH,
    MANIFEST,
    ROOT,
    RUNNER_LOCK,
    STATE_DIR,
    USAGE,
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
    NotRootError,
    Options,
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
    WriteFile,
    install_paths,
    join,
    package_paths,
    parse_arguments,
    parse_manifest,
    plan_install,
    plan_uninstall,
    render_manifest,
    uninstall_paths,
)
from dma.core.system_files import PICKUP_PATH, RUNNER_SERVICE
from dma.core.system_layout import DELIVERY_GROUP, DELIVERY_USER, MAIL_GROUP, SYSTEM_CONFIG

PROGRAM = "dma install-system"


def main(argv: list[str]) -> int:
    """Run ``dma install-system`` with ``argv`` (the arguments after ``install-system``);
    the exit code.  Our errors are one line on stderr with their sysexits code."""
    try:
        return _main(argv)
    except DmaError as error:
        sys.stdout.flush()
        print(f"{PROGRAM}: {error}", file=sys.stderr)
        return error.exit_code


def _main(argv: list[str]) -> int:
    options = parse_arguments(argv)
    if options.help:
        print(USAGE)
        return 0
    if os.geteuid() != 0:
        raise NotRootError("must run as root: it adds a user and changes /etc, /usr and /var",
                           hint="run it with sudo, or as root")
    if options.uninstall:
        host = gather_for_uninstall()
        plan = plan_uninstall(host)
        heading = f"undoing the install recorded in {MANIFEST}"
    else:
        host = gather_for_install()
        plan = plan_install(host, options)
        heading = "setting this host up for system mode"
    return _carry_out(plan, host.manifest, options, heading)


def _carry_out(plan: Plan, manifest: Manifest, options: Options, heading: str) -> int:
    """Print the plan; unless a dry run, do it, recording install's changes as it goes."""
    if plan.empty:
        if not options.uninstall:
            _say("nothing to do: this host is set up for system mode")
        _notes(plan.notes)
        return 0
    if options.dry_run:
        _say(f"{heading}: the plan (dry run: nothing is changed)")
        for step in plan.steps:
            print(f"  {step.describe()}")
        _notes(plan.notes)
        return 0
    _say(f"{heading}:")
    later = _Executor(manifest).run(plan.steps)
    _notes((*plan.notes, *later))
    if options.uninstall:
        _say("done: the install is undone")
    else:
        _say(f"done; `{PROGRAM} --uninstall` undoes it (recorded in {MANIFEST})")
    return 0


def _say(text: str) -> None:
    print(f"{PROGRAM}: {text}", flush=True)


def _notes(notes: tuple[str, ...]) -> None:
    for note in notes:
        _say(f"note: {note}")


# ---- what the host has -------------------------------------------------------------


def _layout() -> Layout:
    """SPOOLDIR, MAILDIR and AUTHPATH from an existing /etc/dma/dma.conf, else defaults."""
    if host_admin.path_state(SYSTEM_CONFIG, with_digest=False).kind is not Kind.FILE:
        return Layout()
    with open(SYSTEM_CONFIG, encoding="utf-8", errors="surrogateescape") as handle:
        config = parse_config(handle.read(), SYSTEM_CONFIG)
    return Layout(config.spooldir, config.maildir, config.authpath or DEFAULT_AUTHPATH)


def installed_commands() -> Commands:
    """The entry point scripts beside this Python: what the links and units point at.
    A missing ``sendmail``, ``mailq`` or ``newaliases`` script is the ``dma`` script
    (it picks its mode from the name it is called by)."""
    bin_dir = os.path.dirname(os.path.abspath(sys.executable))

    def script(name: str) -> str | None:
        path = os.path.join(bin_dir, name)
        return path if os.path.isfile(path) and os.access(path, os.X_OK) else None

    dma = script("dma")
    if dma is None:
        raise CantCreateError(f"cannot find pydma's dma command in {bin_dir}",
                              hint="run the dma command of a venv or pipx installation")
    return Commands(dma, script("sendmail") or dma, script("mailq") or dma,
                    script("newaliases") or dma)


def _manual() -> str | None:
    """dma(8) in roff, from dma.core.manual when this pydma has it."""
    from importlib import import_module

    try:
        module = import_module("dma.core.manual")
    except ModuleNotFoundError:
        return None
    roff: Callable[[], str] | None = getattr(module, "roff", None)
    return roff() if callable(roff) else None


def _unreachable(commands: Commands) -> tuple[str, ...]:
    """Why other users could not run the commands (the script, its interpreter, the
    package's files)."""
    import dma.core

    paths = [commands.dma, commands.sendmail, os.path.dirname(dma.core.__file__)]
    interpreter = host_admin.interpreter(commands.dma)
    if interpreter:
        paths.append(interpreter)
    return host_admin.unreachable(paths)


def gather_for_install() -> Host:
    """The host as the install planner needs it."""
    layout = _layout()
    manifest = _read_manifest()
    commands = installed_commands()
    paths = host_admin.path_states(install_paths(layout), children_of=(layout.spooldir,))
    present = [path for path in package_paths(layout) if paths[path].kind is not Kind.MISSING]
    systemd = host_admin.systemd_running()
    return Host(
        commands=commands,
        layout=layout,
        paths=paths,
        users=host_admin.existing_users([DELIVERY_USER]),
        groups=host_admin.existing_groups([DELIVERY_GROUP, MAIL_GROUP]),
        packages=host_admin.package_owners(present),
        systemd=systemd,
        units=host_admin.unit_states([RUNNER_SERVICE, PICKUP_PATH]) if systemd else {},
        runner_running=bool(host_admin.lock_holders(join(layout.spooldir, RUNNER_LOCK))),
        manual=_manual(),
        unreachable=_unreachable(commands),
        manifest=manifest if manifest.records else Manifest(layout),
    )


def gather_for_uninstall() -> Host:
    """The host as the uninstall planner needs it: what the manifest names."""
    manifest = _read_manifest()
    layout = manifest.layout
    systemd = host_admin.systemd_running()
    units = [record.subject for record in manifest.records if record.action.value == "unit"]
    return Host(
        commands=Commands("", "", "", ""),
        layout=layout,
        paths=host_admin.path_states(uninstall_paths(manifest)),
        users=host_admin.existing_users([DELIVERY_USER]),
        groups=host_admin.existing_groups([DELIVERY_GROUP, MAIL_GROUP]),
        systemd=systemd,
        units=host_admin.unit_states(units) if systemd else {},
        runner_running=bool(host_admin.lock_holders(join(layout.spooldir, RUNNER_LOCK))),
        manifest=manifest,
    )


def _read_manifest() -> Manifest:
    state = host_admin.path_state(MANIFEST, with_digest=False)
    if state.kind is Kind.MISSING:
        return Manifest()
    with open(MANIFEST, encoding="utf-8") as handle:
        return parse_manifest(handle.read(), MANIFEST)


# ---- doing it ----------------------------------------------------------------------


class _Executor:
    """Does the steps in order; install's changes go to the manifest first."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.notes: list[str] = []

    def run(self, steps: tuple[Step, ...]) -> tuple[str, ...]:
        """Each step, printed as it is done; notes about what could not be done."""
        for step in steps:
            print(f"  {step.describe()}", flush=True)
            record = step.record()
            if record is not None and os.path.isdir(STATE_DIR):
                self._write(self.manifest.plus(record))
                record = None
            try:
                self._do(step)
            except (OSError, DmaError) as error:
                reason = (host_admin.describe_os_error(error) if isinstance(error, OSError)
                          else str(error))
                raise CantCreateError(
                    f"failed: {step.describe()}: {reason}",
                    hint=f"what was done is recorded in {MANIFEST}: fix the cause and run"
                         f" `{PROGRAM}` again, or undo it with `{PROGRAM} --uninstall`",
                ) from None
            if record is not None:  # the manifest's own directory, made just now
                self._write(self.manifest.plus(record))
        return tuple(self.notes)

    def _write(self, manifest: Manifest) -> None:
        host_admin.write_private_file(MANIFEST, render_manifest(manifest))
        self.manifest = manifest

    def _do(self, step: Step) -> None:
        action = _ACTIONS.get(type(step))
        if action is None:
            raise TypeError(f"no way to carry out {step!r}")
        note = action(step)
        if note:
            self.notes.append(note)


def _start_runner(step: StartRunner) -> None:
    host_admin.start_runner(step.argv, join(step.spooldir, RUNNER_LOCK))


def _regroup(step: Regroup) -> None:
    host_admin.regroup(step.path, step.old, step.new)


def _stop_runner(step: StopRunner) -> str | None:
    left = host_admin.stop_runner(join(step.spooldir, RUNNER_LOCK))
    if not left:
        return None
    return (f"the queue runner (pid {', '.join(map(str, left))}) is still finishing a"
            " queue run; it stops after it")


def _remove_directory(step: RemoveDirectory) -> str | None:
    if host_admin.remove_directory(step.path, step.locks):
        return None
    return f"kept {step.path}: something arrived in it meanwhile"


_ACTIONS: dict[type, Callable[[Any], str | None]] = {
    AddGroup: lambda step: host_admin.add_group(step.name),
    AddUser: lambda step: host_admin.add_user(step.name, step.group),
    MakeDirectory: lambda step: host_admin.make_directory(step.path, step.owner, step.group,
                                                          step.mode),
    ChangeOwnerMode: lambda step: host_admin.set_owner_mode(step.path, step.owner, step.group,
                                                            step.mode),
    WriteFile: lambda step: host_admin.write_file(step.path, step.text, ROOT, ROOT, step.mode),
    Link: lambda step: host_admin.make_link(step.path, step.target),
    SetAside: lambda step: host_admin.set_aside(step.path, step.moved_to, divert=step.diverted),
    ReloadSystemd: lambda step: host_admin.systemctl("daemon-reload"),
    EnableUnit: lambda step: host_admin.systemctl("enable", "--now", step.unit),
    RestartUnit: lambda step: host_admin.systemctl("restart", step.unit),
    DisableUnit: lambda step: host_admin.systemctl("disable", "--now", step.unit),
    StartRunner: _start_runner,
    StopRunner: _stop_runner,
    Remove: lambda step: host_admin.remove(step.path),
    RemoveDirectory: _remove_directory,
    PutBack: lambda step: host_admin.put_back(step.path, step.moved_to, divert=step.diverted),
    Regroup: _regroup,
    DeleteUser: lambda step: host_admin.delete_user(step.name),
    DeleteGroup: lambda step: host_admin.delete_group(step.name),
    ForgetInstall: lambda step: host_admin.remove(step.path),
}
"""How each kind of step is done: a note for the administrator, or None."""
