"""Properties of core/install_plan over many hosts: install then install again does
nothing; install then uninstall leaves the host as it was; without --force another
MTA's files stop the install before any step."""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from install_sim import World, apply, debian, directory, link, regular, view

from dma.core.errors import CantCreateError
from dma.core.install_plan import (
    COMMAND_LINKS,
    CRON_FILE,
    STATE_DIR,
    Options,
    Plan,
    parse_manifest,
    plan_install,
    plan_uninstall,
    render_manifest,
)

OWNERS = st.sampled_from(["root", "alice", "mail", "1234"])
GROUPS = st.sampled_from(["root", "mail", "alice"])
MODES = st.sampled_from([0o600, 0o640, 0o644, 0o660, 0o755, 0o2775, 0o1777])


@st.composite
def hosts(draw: st.DrawFn) -> World:
    """A Debian host with some of: systemd, a manual page, no mail group, an odd or
    missing /var/mail, a C dma spool with items, dma.conf and auth.conf, another MTA's
    files (a package's or nobody's), a dma user already there, no dpkg."""
    world = debian(systemd=draw(st.booleans()),
                   manual=draw(st.sampled_from([None, ".TH DMA 8\n"])))
    if draw(st.booleans()):
        world.groups.discard("mail")
    mail = draw(st.sampled_from(["debian", "odd", "missing"]))
    if mail == "odd":
        world.put("/var/mail", directory(draw(OWNERS), draw(GROUPS), draw(MODES)))
    elif mail == "missing":
        world.drop("/var/mail")
    if draw(st.booleans()):
        world.put("/var/spool/dma", directory("root", "mail", 0o2775))
        for number in range(draw(st.integers(0, 3))):
            for kind in "QM":
                world.put(f"/var/spool/dma/{kind}{number:x}.1",
                          regular(kind, draw(OWNERS), "mail", 0o660))
    if draw(st.booleans()):
        world.put("/etc/dma", directory())
        world.put("/etc/dma/dma.conf", regular("SMARTHOST x\n", mode=draw(MODES)))
        if draw(st.booleans()):
            world.put("/etc/dma/auth.conf", regular("a|b:c\n", "root", draw(GROUPS),
                                                    draw(MODES)))
    if draw(st.booleans()):
        world.users.add("dma")
    if draw(st.booleans()):
        world.drop("/usr/local/share/man")
    for path, _ in COMMAND_LINKS:
        other = draw(st.sampled_from(["none", "package", "nobody"]))
        if other == "package":
            world.put(path, link("exim4"))
            assert world.packages is not None
            world.packages[path] = "exim4-daemon-light"
        elif other == "nobody":
            world.put(path, regular("#!/bin/sh\n", mode=0o755))
    if draw(st.booleans()):
        world.put(CRON_FILE, regular("# someone else's\n"))
    if draw(st.booleans()):
        world.packages = None
    return world


def _state(world: World) -> tuple[object, ...]:
    return world.snapshot(), set(world.users), set(world.groups)


@settings(max_examples=300, deadline=None)
@given(hosts())
def test_install_twice_changes_nothing_the_second_time(world: World) -> None:
    """After a forced install, a second install's plan is empty, and the manifest
    reads back as written."""
    apply(world, plan_install(view(world), Options(force=True)))
    assert plan_install(view(world)).steps == ()
    assert parse_manifest(render_manifest(world.manifest)) == world.manifest


@settings(max_examples=300, deadline=None)
@given(hosts())
def test_uninstall_leaves_the_host_as_it_was(world: World) -> None:
    """Install (forced) then uninstall gives back every path, user and group as they
    were; a second uninstall has nothing to do."""
    before = _state(world)
    apply(world, plan_install(view(world), Options(force=True)))
    apply(world, plan_uninstall(view(world, uninstall=True)))
    assert _state(world) == before
    assert plan_uninstall(view(world, uninstall=True)).steps == ()


@settings(max_examples=300, deadline=None)
@given(hosts())
def test_without_force_another_mtas_files_refuse_the_whole_install(world: World) -> None:
    """Without --force the install is refused exactly when a file of another package
    or of nobody sits where ours go; when it is not refused, it sets nothing aside."""
    foreign = any(world.paths.get(path) is not None for path, _ in COMMAND_LINKS) or (
        not world.systemd and CRON_FILE in world.paths)
    try:
        plan = plan_install(view(world))
    except CantCreateError as error:
        assert foreign, error
        assert "nothing was changed" in str(error)
    else:
        assert not foreign
        assert not [step for step in plan.steps if type(step).__name__ == "SetAside"]


@settings(max_examples=300, deadline=None)
@given(hosts(), st.integers(0, 60))
def test_an_install_that_stopped_midway_is_undone(world: World, done: int) -> None:
    """Install stopped after ``done`` steps, the next one recorded in the manifest but
    not made (a crash between the two): uninstall still gives back every path, user
    and group as they were."""
    before = _state(world)
    plan = plan_install(view(world), Options(force=True))
    apply(world, Plan(plan.steps[:done]))
    if done < len(plan.steps) and world.paths.get(STATE_DIR) is not None:
        record = plan.steps[done].record()
        if record is not None:
            world.manifest = world.manifest.plus(record)
    apply(world, plan_uninstall(view(world, uninstall=True)))
    assert _state(world) == before
