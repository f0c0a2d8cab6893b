"""core/install_plan: the steps of ``dma install-system`` and of ``--uninstall`` for
given hosts (SPEC 8.2), worked out on paper (tests/install_sim.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from install_sim import COMMANDS, World, apply, debian, directory, link, regular, view

from dma.core.errors import CantCreateError, ConfigError, UsageError
from dma.core.install_plan import (
    CRON_FILE,
    MANIFEST,
    MANUAL_PAGE,
    MISSING,
    STATE_DIR,
    AddGroup,
    AddUser,
    ChangeOwnerMode,
    Commands,
    DeleteGroup,
    DeleteUser,
    DisableUnit,
    EnableUnit,
    ForgetInstall,
    Kind,
    Layout,
    Link,
    MakeDirectory,
    Options,
    PathState,
    PutBack,
    Regroup,
    ReloadSystemd,
    Remove,
    RemoveDirectory,
    RestartUnit,
    SetAside,
    StartRunner,
    StopRunner,
    WriteFile,
    parse_arguments,
    parse_manifest,
    plan_install,
    plan_uninstall,
    render_manifest,
)
from dma.core.system_files import (
    PICKUP_PATH,
    PICKUP_SERVICE,
    RUNNER_SERVICE,
    cron_file,
    default_config,
    pickup_path_unit,
    runner_unit,
)

EXIM = "exim4-daemon-light"
LINKS = ("/usr/sbin/sendmail", "/usr/lib/sendmail", "/usr/bin/mailq", "/usr/bin/newaliases")
UNITS = tuple(f"/etc/systemd/system/{unit}"
              for unit in (RUNNER_SERVICE, PICKUP_SERVICE, PICKUP_PATH))


def exim_host(**changes: object) -> World:
    """A Debian host where exim4 owns the four sendmail paths."""
    world = debian(**changes)
    for path in LINKS:
        world.put(path, link("../sbin/exim4" if path != "/usr/sbin/sendmail" else "exim4"))
    world.packages = dict.fromkeys(LINKS, EXIM)
    return world


def installed(world: World, options: Options | None = None) -> World:
    """``world`` after install-system."""
    return apply(world, plan_install(view(world), options or Options()))


def test_a_fresh_host_gets_every_step_in_order() -> None:
    """No MTA, no dma user, no spool: the user, the spool, dma.conf, the links, the cron
    file and the runner, in this order; the missing manual page is a note."""
    plan = plan_install(view(debian()))
    assert plan.steps == (
        MakeDirectory(STATE_DIR, "root", "root", 0o755),
        AddGroup("dma"),
        AddUser("dma", "dma"),
        MakeDirectory("/var/spool/dma", "root", "dma", 0o2751),
        MakeDirectory("/var/spool/dma/maildrop", "root", "dma", 0o1733),
        MakeDirectory("/var/spool/dma/.slots", "root", "dma", 0o2770),
        MakeDirectory("/var/spool/dma/quarantine", "root", "dma", 0o2750),
        MakeDirectory("/etc/dma", "root", "root", 0o755),
        WriteFile("/etc/dma/dma.conf", default_config(), "a commented default configuration"),
        Link("/usr/sbin/sendmail", COMMANDS.sendmail),
        Link("/usr/lib/sendmail", COMMANDS.sendmail),
        Link("/usr/bin/mailq", COMMANDS.mailq),
        Link("/usr/bin/newaliases", COMMANDS.newaliases),
        WriteFile(CRON_FILE, cron_file(COMMANDS.dma),
                  "cron: the queue runner at boot, a queue run every 5 minutes"),
        StartRunner((COMMANDS.dma, "-q5m"), "/var/spool/dma"),
    )
    assert plan.notes == ("dma(8) is not installed: this pydma has no manual page yet",)


def test_a_second_run_has_nothing_to_do() -> None:
    """After the plan is carried out, planning again gives no step at all."""
    world = installed(debian(manual=".TH DMA 8\n"))
    again = plan_install(view(world))
    assert again.steps == ()
    assert world.paths[MANUAL_PAGE].kind is Kind.FILE


def test_the_mail_group_and_mail_directory_are_made_when_missing() -> None:
    """A host without the mail group or /var/mail gets both, /var/mail root:mail 2775;
    a /var/mail with another mode is set right and its old state recorded."""
    world = debian(groups={"root"})
    world.drop("/var/mail")
    steps = plan_install(view(world)).steps
    assert AddGroup("mail") in steps
    assert MakeDirectory("/var/mail", "root", "mail", 0o2775) in steps
    odd = debian()
    odd.put("/var/mail", directory("root", "root", 0o1777))
    [change] = [s for s in plan_install(view(odd)).steps if isinstance(s, ChangeOwnerMode)]
    assert change == ChangeOwnerMode("/var/mail", "root", "mail", 0o2775,
                                     directory("root", "root", 0o1777))


def test_another_mtas_sendmail_is_refused_naming_its_package() -> None:
    """exim4's sendmail paths stop the install (exit 73) with the package named and
    the way out; no step is planned."""
    with pytest.raises(CantCreateError) as refused:
        plan_install(view(exim_host()))
    text = str(refused.value)
    assert refused.value.exit_code == 73
    assert ("/usr/sbin/sendmail, /usr/lib/sendmail, /usr/bin/mailq, /usr/bin/newaliases"
            f" (Debian package {EXIM})") in text
    assert "nothing was changed" in text
    assert "--force" in text


def test_a_file_no_package_owns_is_refused_as_such() -> None:
    """A sendmail that no package owns is named as not from a Debian package; without
    dpkg the message says there was nothing to ask."""
    world = debian()
    world.put("/usr/sbin/sendmail", regular("#!/bin/sh\n", mode=0o755))
    with pytest.raises(CantCreateError, match=r"/usr/sbin/sendmail \(not from a Debian package\)"):
        plan_install(view(world))
    world.packages = None
    with pytest.raises(CantCreateError, match=r"no package database to ask \(no dpkg\)"):
        plan_install(view(world))


def test_force_sets_another_mtas_files_aside_first() -> None:
    """With --force a package's file is diverted with dpkg-divert to .distrib, just
    before our link takes its place; a file no package owns is renamed .before-dma."""
    world = exim_host()
    world.packages = {path: EXIM for path in LINKS if path != "/usr/bin/newaliases"}
    steps = plan_install(view(world), Options(force=True)).steps
    first = steps.index(SetAside("/usr/sbin/sendmail", "/usr/sbin/sendmail.distrib", EXIM, True,
                                 link("exim4")))
    assert steps[first + 1] == Link("/usr/sbin/sendmail", COMMANDS.sendmail)
    assert SetAside("/usr/bin/newaliases", "/usr/bin/newaliases.before-dma", "", False,
                    link("../sbin/exim4")) in steps


def test_a_package_file_under_etc_is_renamed_not_diverted() -> None:
    """The C dma package's /etc/cron.d/dma (a conffile, which dpkg-divert does not
    handle) is set aside by rename even though a package owns it."""
    world = debian()
    world.put(CRON_FILE, regular("*/5 * * * * root /usr/sbin/dma -q1\n"))
    world.packages = {CRON_FILE: "dma"}
    with pytest.raises(CantCreateError, match=r"/etc/cron.d/dma \(Debian package dma\)"):
        plan_install(view(world))
    steps = plan_install(view(world), Options(force=True)).steps
    assert SetAside(CRON_FILE, CRON_FILE + ".before-dma", "dma", False,
                    world.paths[CRON_FILE]) in steps


def test_a_name_taken_for_setting_aside_is_refused() -> None:
    """When sendmail.distrib exists already, even --force plans nothing and says why."""
    world = exim_host()
    world.put("/usr/sbin/sendmail.distrib", regular("old"))
    with pytest.raises(CantCreateError, match=r"sendmail\.distrib is there already"):
        plan_install(view(world), Options(force=True))


def test_an_existing_dma_conf_is_kept() -> None:
    """An existing dma.conf gets no step; one that others cannot read gets a note,
    since their submissions need it."""
    world = debian()
    world.put("/etc/dma", directory())
    world.put("/etc/dma/dma.conf", regular("SMARTHOST mx.example.org\n"))
    plan = plan_install(view(world))
    assert not [s for s in plan.steps if getattr(s, "path", "") == "/etc/dma/dma.conf"]
    world.put("/etc/dma/dma.conf", regular("SMARTHOST mx.example.org\n", mode=0o600))
    notes = plan_install(view(world)).notes
    assert any("other users cannot read it (root:root 0600)" in note for note in notes)


def test_auth_conf_gets_the_delivery_group() -> None:
    """auth.conf, when present, becomes root:dma 0640 (its old state recorded); a link
    there is left alone with a note."""
    world = debian()
    world.put("/etc/dma", directory())
    world.put("/etc/dma/auth.conf", regular("a|b:c\n", "root", "mail", 0o640))
    steps = plan_install(view(world)).steps
    assert ChangeOwnerMode("/etc/dma/auth.conf", "root", "dma", 0o640,
                           world.paths["/etc/dma/auth.conf"]) in steps
    world.put("/etc/dma/auth.conf", link("/root/secrets"))
    assert any("a symbolic link to /root/secrets: left as it is" in note
               for note in plan_install(view(world)).notes)


def test_c_dma_spool_files_get_the_new_group_and_mode() -> None:
    """A C dma spool (root:mail 2775, items user:mail 0660) gets root:dma 2751 and its
    Q and M files root:dma 0640, old states recorded; other files are left."""
    world = debian()
    world.put("/var/spool/dma", directory("root", "mail", 0o2775))
    for name in ("Qabc.1", "Mabc.1"):
        world.put(f"/var/spool/dma/{name}", regular(name, "alice", "mail", 0o660))
    world.put("/var/spool/dma/flush", regular("", "alice", "mail", 0o660))
    steps = plan_install(view(world)).steps
    changes = [s for s in steps if isinstance(s, ChangeOwnerMode)]
    assert [(c.path, c.owner, c.group, c.mode) for c in changes] == [
        ("/var/spool/dma", "root", "dma", 0o2751),
        ("/var/spool/dma/Mabc.1", "root", "dma", 0o640),
        ("/var/spool/dma/Qabc.1", "root", "dma", 0o640),
    ]


def test_a_link_where_the_spool_goes_is_refused() -> None:
    """A symbolic link at SPOOLDIR (or its maildrop) stops the install: it is named."""
    world = debian()
    world.put("/var/spool/dma", link("/tmp/elsewhere"))
    with pytest.raises(CantCreateError, match="/var/spool/dma is a symbolic link to"
                                              " /tmp/elsewhere, not a directory"):
        plan_install(view(world))


def test_systemd_hosts_get_units_enabled_and_no_cron() -> None:
    """Where systemd runs: three unit files, daemon-reload, enable --now of the runner
    and the path unit; no cron file and no runner started by hand. A second run is
    empty; a new venv rewrites the units and restarts the runner."""
    world = debian(systemd=True)
    steps = plan_install(view(world)).steps
    written = [s.path for s in steps if isinstance(s, WriteFile)]
    assert written == ["/etc/dma/dma.conf", *UNITS]
    assert steps[-3:] == (ReloadSystemd(), EnableUnit(RUNNER_SERVICE), EnableUnit(PICKUP_PATH))
    assert not [s for s in steps if isinstance(s, StartRunner)]
    apply(world, plan_install(view(world)))
    assert plan_install(view(world)).steps == ()
    world.commands = Commands("/opt/new/bin/dma", "/opt/new/bin/sendmail",
                              "/opt/new/bin/mailq", "/opt/new/bin/newaliases")
    steps = plan_install(view(world)).steps
    assert steps[-2:] == (ReloadSystemd(), RestartUnit(RUNNER_SERVICE))
    assert Link("/usr/sbin/sendmail", "/opt/new/bin/sendmail",
                link(COMMANDS.sendmail)) in steps


def test_units_name_the_installed_command_and_the_maildrop() -> None:
    """The runner unit runs the installed dma -q5m; the path unit watches SPOOLDIR's
    maildrop; Documentation= only when the manual page is there."""
    assert "ExecStart=/opt/x/bin/dma -q5m\n" in runner_unit("/opt/x/bin/dma", documented=False)
    assert "Documentation" not in runner_unit("/opt/x/bin/dma", documented=False)
    assert "Documentation=man:dma(8)\n" in runner_unit("/opt/x/bin/dma", documented=True)
    assert "PathChanged=/srv/spool/maildrop\n" in pickup_path_unit("/srv/spool/",
                                                                   documented=False)


def test_unreachable_commands_are_a_note() -> None:
    """When other users cannot reach the commands, the plan says why and what to do."""
    host = replace(view(debian()), unreachable=("/root is mode 0700",))
    [note] = [n for n in plan_install(host).notes if "other than root" in n]
    assert "(/root is mode 0700)" in note
    assert "/opt/pydma" in note


def test_uninstall_undoes_a_fresh_install_in_reverse() -> None:
    """Uninstall stops the runner, removes what install made in reverse order, the
    user and group last, then the record itself; the host is as it was."""
    world = debian()
    before = world.snapshot()
    installed(world)
    plan = plan_uninstall(view(world, uninstall=True))
    assert plan.steps == (
        StopRunner("/var/spool/dma"),
        Remove(CRON_FILE),
        Remove("/usr/bin/newaliases"),
        Remove("/usr/bin/mailq"),
        Remove("/usr/lib/sendmail"),
        Remove("/usr/sbin/sendmail"),
        Remove("/etc/dma/dma.conf"),
        RemoveDirectory("/etc/dma"),
        RemoveDirectory("/var/spool/dma/quarantine"),
        RemoveDirectory("/var/spool/dma/.slots"),
        RemoveDirectory("/var/spool/dma/maildrop"),
        RemoveDirectory("/var/spool/dma", (".runner.lock",)),
        DeleteUser("dma"),
        DeleteGroup("dma"),
        ForgetInstall(),
        RemoveDirectory(STATE_DIR),
    )
    apply(world, plan)
    assert world.snapshot() == before
    assert world.users == set() and world.groups == {"root", "mail"}
    assert plan_uninstall(view(world, uninstall=True)).steps == ()


def test_uninstall_keeps_queued_mail_and_says_so() -> None:
    """A queued item keeps the spool (only the runner's lock goes); what has the dma
    group gets root's; the note counts the mail."""
    world = installed(debian())
    world.put("/var/spool/dma/Qx.1", regular("q", "root", "dma", 0o640))
    world.put("/var/spool/dma/Mx.1", regular("m", "root", "dma", 0o640))
    world.put("/var/spool/dma/maildrop/m1", regular("m", "alice", "alice", 0o600))
    plan = plan_uninstall(view(world, uninstall=True))
    assert Remove("/var/spool/dma/.runner.lock") in plan.steps
    assert Regroup("/var/spool/dma", "dma", "root") in plan.steps
    assert not [s for s in plan.steps if s in (RemoveDirectory("/var/spool/dma/maildrop"),)]
    assert plan.steps.index(Regroup("/var/spool/dma", "dma", "root")) < plan.steps.index(
        DeleteGroup("dma"))
    [note] = [n for n in plan.notes if n.startswith("kept /var/spool/dma")]
    assert "(1 queued item, 1 in the maildrop)" in note
    apply(world, plan)
    assert world.paths["/var/spool/dma/Qx.1"].group == "root"


def test_uninstall_restores_a_c_dma_spool() -> None:
    """A spool that was there before goes back to its owner and mode, C dma items still
    queued too, and the note says the mail is kept."""
    world = debian()
    world.put("/var/spool/dma", directory("root", "mail", 0o2775))
    world.put("/var/spool/dma/Qabc.1", regular("q", "alice", "mail", 0o660))
    world.put("/var/spool/dma/Mabc.1", regular("m", "alice", "mail", 0o660))
    before = world.snapshot()
    installed(world)
    plan = plan_uninstall(view(world, uninstall=True))
    assert ChangeOwnerMode("/var/spool/dma/Qabc.1", "alice", "mail", 0o660,
                           replace(before["/var/spool/dma/Qabc.1"], owner="root", group="dma",
                                   mode=0o640)) in plan.steps
    assert Regroup("/var/spool/dma", "dma", "mail") in plan.steps
    assert any("(1 queued item)" in note for note in plan.notes)
    apply(world, plan)
    assert world.snapshot() == before


def test_uninstall_leaves_what_changed_since_install() -> None:
    """A dma.conf edited after install stays (with a note); so does /etc/dma then."""
    world = installed(debian())
    world.put("/etc/dma/dma.conf", regular("SMARTHOST mine\n"))
    plan = plan_uninstall(view(world, uninstall=True))
    assert Remove("/etc/dma/dma.conf") not in plan.steps
    assert RemoveDirectory("/etc/dma") not in plan.steps
    assert "left /etc/dma/dma.conf as it is: it changed since install (now a regular file)" \
        in plan.notes
    assert "kept /etc/dma: it is not empty (dma.conf)" in plan.notes


def test_uninstall_puts_another_mtas_files_back() -> None:
    """After a forced install, uninstall removes our link and then puts exim's back
    (dpkg-divert --remove); the host is as it was."""
    world = exim_host()
    before = world.snapshot()
    installed(world, Options(force=True))
    assert world.paths["/usr/sbin/sendmail.distrib"] == link("exim4")
    plan = plan_uninstall(view(world, uninstall=True))
    remove = plan.steps.index(Remove("/usr/sbin/sendmail"))
    assert plan.steps[remove + 1] == PutBack("/usr/sbin/sendmail",
                                             "/usr/sbin/sendmail.distrib", True)
    apply(world, plan)
    assert world.snapshot() == before


def test_uninstall_on_systemd_disables_units_first() -> None:
    """Units are disabled (and stopped) before anything they use goes, and systemd
    reloads once their files are gone."""
    world = installed(debian(systemd=True))
    steps = plan_uninstall(view(world, uninstall=True)).steps
    assert steps[:3] == (DisableUnit(PICKUP_PATH), DisableUnit(RUNNER_SERVICE),
                         StopRunner("/var/spool/dma"))
    assert steps[3:7] == (Remove(UNITS[2]), Remove(UNITS[1]), Remove(UNITS[0]), ReloadSystemd())


def test_uninstall_without_a_record_does_nothing() -> None:
    """No manifest: nothing to undo, said so."""
    plan = plan_uninstall(view(debian(), uninstall=True))
    assert plan.steps == ()
    assert plan.notes == (f"nothing to undo: {MANIFEST} records no install",)


def test_the_manifest_reads_back_what_was_written() -> None:
    """render_manifest then parse_manifest gives the same records (states, packages,
    diversions), for a forced install over exim."""
    world = installed(exim_host(), Options(force=True))
    assert parse_manifest(render_manifest(world.manifest)) == world.manifest
    assert world.manifest.layout == Layout()


@pytest.mark.parametrize("text", ["", "{}", '{"version": 2}', "[1]",
                                  '{"version": 1, "layout": {}, "records": [{"action": "x"}]}'])
def test_a_damaged_manifest_is_a_config_error(text: str) -> None:
    """A manifest that does not parse is ConfigError (78) naming the file."""
    with pytest.raises(ConfigError, match=f"^{MANIFEST}: the install record is damaged"):
        parse_manifest(text)


def test_arguments() -> None:
    """--dry-run, --force, --uninstall and --help are read; anything else, or --force
    with --uninstall, is a usage error (64)."""
    assert parse_arguments(["--dry-run", "--force"]) == Options(force=True, dry_run=True)
    assert parse_arguments(["--uninstall"]) == Options(uninstall=True)
    assert parse_arguments(["-h"]).help
    with pytest.raises(UsageError, match="unknown argument -q") as bad:
        parse_arguments(["-q"])
    assert bad.value.exit_code == 64
    with pytest.raises(UsageError, match="--force goes with an install"):
        parse_arguments(["--force", "--uninstall"])


def test_states_compare_by_what_install_sets() -> None:
    """PathState.same: a link by its target, a file by its content (unknown content is
    not the same) and owner, group and mode."""
    assert link("/a").same(link("/a")) and not link("/a").same(link("/b"))
    assert regular("x").same(regular("x")) and not regular("x").same(regular("y"))
    assert not MISSING.same(regular("x"))
    assert not PathState(Kind.FILE, "root", "root", 0o644).same(regular("anything"))
    assert not regular("x", mode=0o600).same(regular("x"))
    assert directory().same(directory()) and not directory(mode=0o700).same(directory())
