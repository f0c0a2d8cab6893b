"""``dma install-system`` on a throwaway copy of this host (tests/host_namespace.py):
what it sets up, that a second run and --dry-run change nothing, that --uninstall
leaves /etc, /usr and /var as it found them and keeps queued mail, another MTA's
files (refused, then set aside with --force and put back), and the systemd units.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from host_namespace import run_on_host_copy

from dma.core.system_files import pickup_path_unit, pickup_unit, runner_unit

BIN = Path(sys.executable).parent
EXIM = "exim4-daemon-light"

# Shell functions every scenario uses: `inst` runs install-system, `listing` prints
# owner, mode and target of every path install-system touches (and the users, groups
# and dpkg diversions), `stop_runners` ends any queue runner the scenario left.
PRELUDE = r"""
inst() {
    "$BIN/dma" install-system "$@"
}
listing() {
    for p in /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases \
             /usr/sbin/sendmail.distrib /usr/sbin/sendmail.before-dma /etc/dma /etc/cron.d \
             /etc/cron.d/dma /etc/systemd/system /var/spool/dma /var/lib/dma /var/mail \
             /usr/local/share/man /usr/local/share/man/man8; do
        if [ -e "$p" ] || [ -L "$p" ]; then stat -c '%n %U:%G %a %F %N' "$p"
        else echo "$p absent"; fi
    done
    find /etc/dma /var/spool/dma /var/lib/dma /usr/local/share/man/man8 /etc/systemd/system \
         /etc/cron.d -maxdepth 2 -printf '%p %u:%g %m %y %l\n' 2>/dev/null | sort || true
    find /etc/dma /etc/cron.d /usr/sbin/sendmail* -maxdepth 1 -type f -exec sha256sum {} + \
        2>/dev/null | sort || true
    getent passwd dma || echo "no user dma"
    getent group dma || echo "no group dma"
    getent group mail
    dpkg-divert --list | sort
}
LOCK=/var/spool/dma/.runner.lock
stop_runners() {
    "$PY" -c 'import sys; from dma.adapters.host_admin import stop_runner
stop_runner(sys.argv[1], 10)' $LOCK || true
}
runners() {  # how many processes hold the runner's lock
    "$PY" -c 'import sys; from dma.adapters.host_admin import lock_holders
print(len(lock_holders(sys.argv[1])))' $LOCK
}
trap stop_runners EXIT
no_mta() { rm /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases; }
"""


def on_host_copy(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` after PRELUDE on a host copy; ``$OUT`` is ``out``."""
    out.mkdir(exist_ok=True)
    done = run_on_host_copy(f'OUT={out}\n{PRELUDE}\n{script}')
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done


def read(out: Path, name: str) -> str:
    return (out / name).read_text()


@pytest.fixture(autouse=True)
def _dpkg_and_exim() -> None:
    """These scenarios take Debian's exim4 package as the other MTA."""
    if subprocess.run(["dpkg-query", "-S", "/usr/sbin/sendmail"], capture_output=True,
                      text=True, check=False).stdout.split(":")[0] != EXIM:
        pytest.skip(f"needs {EXIM} owning /usr/sbin/sendmail")


def test_install_sets_the_host_up_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    """On a host with no MTA: --dry-run changes nothing; install makes the dma user and
    group, the spool with its modes, a commented dma.conf, the four links to this
    venv's commands, the cron file and a running runner; a second install plans
    nothing and rewrites no file; --uninstall leaves everything as it was found."""
    out = tmp_path / "out"
    on_host_copy(r"""
        no_mta
        listing > $OUT/before
        inst --dry-run > $OUT/dry
        listing > $OUT/after-dry
        inst > $OUT/install
        listing > $OUT/installed
        stat -c '%n %U:%G %a' /var/spool/dma /var/spool/dma/maildrop /var/spool/dma/.slots \
            /var/spool/dma/quarantine /etc/dma/dma.conf /etc/cron.d/dma /var/mail > $OUT/modes
        readlink /usr/sbin/sendmail /usr/lib/sendmail /usr/bin/mailq /usr/bin/newaliases \
            > $OUT/links
        getent passwd dma > $OUT/user
        runners > $OUT/runners
        stat -c '%n %i %Y' /etc/dma/dma.conf /etc/cron.d/dma /usr/sbin/sendmail > $OUT/files1
        inst > $OUT/second
        listing > $OUT/installed2
        stat -c '%n %i %Y' /etc/dma/dma.conf /etc/cron.d/dma /usr/sbin/sendmail > $OUT/files2
        "$PY" -c 'import sys; from dma.core.config import parse_config
parse_config(open(sys.argv[1]).read(), sys.argv[1])' /etc/dma/dma.conf
        inst --uninstall > $OUT/uninstall
        runners > $OUT/runners-after
        listing > $OUT/after
        inst --uninstall > $OUT/uninstall2
    """, out)
    assert read(out, "after-dry") == read(out, "before")
    assert "the plan (dry run: nothing is changed)" in read(out, "dry")
    assert "  add the system user dma" in read(out, "dry")
    assert read(out, "modes").splitlines() == [
        "/var/spool/dma root:dma 2751",
        "/var/spool/dma/maildrop root:dma 1733",
        "/var/spool/dma/.slots root:dma 2770",
        "/var/spool/dma/quarantine root:dma 2750",
        "/etc/dma/dma.conf root:root 644",
        "/etc/cron.d/dma root:root 644",
        "/var/mail root:mail 2775",
    ]
    assert read(out, "links").split() == [str(BIN / "sendmail"), str(BIN / "sendmail"),
                                          str(BIN / "mailq"), str(BIN / "newaliases")]
    user = read(out, "user").strip().split(":")
    assert user[0] == "dma" and user[5:] == ["/nonexistent", "/usr/sbin/nologin"]
    assert read(out, "runners").strip() == "1"
    assert "start the queue runner" in read(out, "install")
    assert read(out, "second").startswith(
        "dma install-system: nothing to do: this host is set up for system mode\n")
    assert read(out, "installed2") == read(out, "installed")
    assert read(out, "files2") == read(out, "files1")
    assert read(out, "runners-after").strip() == "0"
    assert read(out, "after") == read(out, "before")
    assert "nothing to undo" in read(out, "uninstall2")


def test_c_dma_mail_is_delivered_and_queued_mail_survives_uninstall(tmp_path: Path) -> None:
    """A C dma spool (root:mail 2775, items user:mail 0660) and an existing dma.conf:
    install keeps dma.conf, gives the items root:dma 0640, the runner delivers the
    local one; --uninstall keeps the item still queued, says so, and puts the spool's
    owner and mode back."""
    out = tmp_path / "out"
    on_host_copy(r"""
        no_mta
        useradd --no-create-home dmainst1
        mkdir -p /etc/dma
        printf 'PORT 9\n' > /etc/dma/dma.conf
        mkdir -p /var/spool/dma && chown root:mail /var/spool/dma && chmod 2775 /var/spool/dma
        item() {  # id, recipient: a queue item as the C dma leaves it
            printf 'ID: %s\nSender: root@localhost\nRecipient: %s\n' "$1" "$2" > /var/spool/dma/Q$1
            printf 'Received: from root\nSubject: left by the C dma %s\n\nhello\n' "$1" \
                > /var/spool/dma/M$1
            chown dmainst1:mail /var/spool/dma/Q$1 /var/spool/dma/M$1
            chmod 0660 /var/spool/dma/Q$1 /var/spool/dma/M$1
        }
        item 17a.1 dmainst1
        item 17b.1 'nobody@[127.0.0.1]'
        listing | grep -v '^/var/spool/dma' > $OUT/before
        stat -c '%n %U:%G %a' /var/spool/dma > $OUT/spool-before
        inst > $OUT/install
        stat -c '%n %U:%G %a' /var/spool/dma/Q17b.1 /var/spool/dma/M17b.1 > $OUT/items
        for i in $(seq 100); do [ -s /var/mail/dmainst1 ] && break; sleep 0.1; done
        grep -c 'left by the C dma 17a.1' /var/mail/dmainst1 > $OUT/delivered
        stop_runners
        inst --uninstall > $OUT/uninstall
        listing | grep -v '^/var/spool/dma' > $OUT/after
        stat -c '%n %U:%G %a' /var/spool/dma > $OUT/spool-after
        ls /var/spool/dma > $OUT/spool-left
        stat -c '%G' /var/spool/dma/Q17b.1 > $OUT/item-group
    """, out)
    assert "/etc/dma/dma.conf" not in read(out, "install")
    assert read(out, "items").splitlines() == ["/var/spool/dma/Q17b.1 root:dma 640",
                                               "/var/spool/dma/M17b.1 root:dma 640"]
    assert read(out, "delivered").strip() == "1"
    assert "kept /var/spool/dma with the mail in it (1 queued item)" in read(out, "uninstall")
    assert read(out, "spool-after") == read(out, "spool-before")
    assert read(out, "spool-left").split() == ["M17b.1", "Q17b.1"]
    assert read(out, "item-group").strip() == "mail"
    assert read(out, "after") == read(out, "before")


def test_another_mtas_files_are_refused_then_set_aside_and_put_back(tmp_path: Path) -> None:
    """With exim4's sendmail in place install exits 73 naming the package and changes
    nothing; --force diverts exim's files (dpkg-divert) and links ours; --uninstall
    puts exim's back and removes the diversions."""
    out = tmp_path / "out"
    on_host_copy(r"""
        listing > $OUT/before
        status=0; inst 2> $OUT/refused || status=$?
        echo $status > $OUT/status
        listing > $OUT/after-refusal
        inst --force > $OUT/forced
        readlink /usr/sbin/sendmail /usr/sbin/sendmail.distrib > $OUT/links
        dpkg-divert --list /usr/sbin/sendmail > $OUT/diversion
        stop_runners
        inst --uninstall > $OUT/uninstall
        listing > $OUT/after
    """, out)
    assert read(out, "status").strip() == "73"
    refusal = read(out, "refused")
    assert refusal.startswith("dma install-system: another mail system's files are in the way:"
                              " /usr/sbin/sendmail, /usr/lib/sendmail, /usr/bin/mailq,"
                              f" /usr/bin/newaliases (Debian package {EXIM}); nothing was"
                              " changed (remove that package, or run `dma install-system"
                              " --force`")
    assert read(out, "after-refusal") == read(out, "before")
    assert (f"set /usr/sbin/sendmail aside: dpkg-divert moves {EXIM}'s file to"
            " /usr/sbin/sendmail.distrib") in read(out, "forced")
    assert read(out, "links").split() == [str(BIN / "sendmail"), "exim4"]
    assert "local diversion of /usr/sbin/sendmail to /usr/sbin/sendmail.distrib" in read(
        out, "diversion")
    assert "put /usr/sbin/sendmail back from /usr/sbin/sendmail.distrib" in read(
        out, "uninstall")
    assert read(out, "after") == read(out, "before")


def test_a_sendmail_from_no_package_is_named_so_and_comes_back(tmp_path: Path) -> None:
    """A /usr/sbin/sendmail no package owns is refused as "not from a Debian package";
    --force renames it to sendmail.before-dma, --uninstall brings it back unchanged."""
    out = tmp_path / "out"
    on_host_copy(r"""
        sed -i '\#^/usr/sbin/sendmail$#d' /var/lib/dpkg/info/exim4-daemon-light.list
        rm /usr/sbin/sendmail
        printf '#!/bin/sh\necho another mta\n' > /usr/sbin/sendmail
        chmod 0750 /usr/sbin/sendmail
        listing > $OUT/before
        status=0; inst 2> $OUT/refused || status=$?
        echo $status > $OUT/status
        inst --force > $OUT/forced
        cat /usr/sbin/sendmail.before-dma > $OUT/aside
        stop_runners
        inst --uninstall > $OUT/uninstall
        listing > $OUT/after
    """, out)
    assert read(out, "status").strip() == "73"
    assert ("/usr/sbin/sendmail (not from a Debian package); /usr/lib/sendmail, /usr/bin/mailq,"
            f" /usr/bin/newaliases (Debian package {EXIM})") in read(out, "refused")
    assert ("set /usr/sbin/sendmail aside (not from a Debian package) as"
            " /usr/sbin/sendmail.before-dma") in read(out, "forced")
    assert read(out, "aside") == "#!/bin/sh\necho another mta\n"
    assert read(out, "after") == read(out, "before")


def verify_units(directory: Path) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on the three unit files in ``directory``."""
    names = ["dma.service", "dma-pickup.service", "dma-pickup.path"]
    return subprocess.run(["systemd-analyze", "verify", *(str(directory / n) for n in names)],
                          capture_output=True, text=True, check=False, timeout=60)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """The runner, pickup and path units, naming this venv's dma, pass
    ``systemd-analyze verify`` without a word; a unit naming a missing command does not."""
    dma = str(BIN / "dma")
    (tmp_path / "dma.service").write_text(runner_unit(dma, documented=False))
    (tmp_path / "dma-pickup.service").write_text(pickup_unit(dma, documented=False))
    (tmp_path / "dma-pickup.path").write_text(pickup_path_unit("/var/spool/dma",
                                                               documented=False))
    done = verify_units(tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    (tmp_path / "dma.service").write_text(runner_unit("/nonexistent/dma", documented=False))
    assert verify_units(tmp_path).returncode != 0


FAKE_SYSTEMCTL = r"""#!/bin/sh
# systemd cannot run here: this stands in for systemctl, logging each call and
# keeping which units are enabled (and so active) in a file.
echo "$*" >> "$SYSTEMCTL_LOG"
touch "$SYSTEMCTL_STATE"
case "$1" in
    is-enabled) grep -qx "$2" "$SYSTEMCTL_STATE" && echo enabled || { echo disabled; exit 1; } ;;
    is-active) grep -qx "$2" "$SYSTEMCTL_STATE" && echo active || { echo inactive; exit 3; } ;;
    enable) echo "$3" >> "$SYSTEMCTL_STATE" ;;
    disable) grep -vx "$3" "$SYSTEMCTL_STATE" > "$SYSTEMCTL_STATE.new" || true
             mv "$SYSTEMCTL_STATE.new" "$SYSTEMCTL_STATE" ;;
esac
"""


def test_where_systemd_runs_units_are_installed_enabled_and_removed(tmp_path: Path) -> None:
    """With /run/systemd/system present: the three units in /etc/systemd/system (they
    pass systemd-analyze verify, manual page included), daemon-reload and enable --now
    of the runner and the path unit, no cron file; a second run does nothing; uninstall
    disables them first and leaves the host as it was."""
    out = tmp_path / "out"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL)
    (fake / "systemctl").chmod(0o755)
    on_host_copy(rf"""
        no_mta
        mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system
        export PATH={fake}:$PATH SYSTEMCTL_LOG=$OUT/calls SYSTEMCTL_STATE=$OUT/enabled
        listing > $OUT/before
        inst > $OUT/install
        ls /etc/cron.d > $OUT/cron
        : > $OUT/calls
        systemd-analyze verify /etc/systemd/system/dma.service \
            /etc/systemd/system/dma-pickup.service /etc/systemd/system/dma-pickup.path \
            > $OUT/verify 2>&1
        grep -c Documentation=man:dma /etc/systemd/system/dma.service > $OUT/documented || true
        inst > $OUT/second
        inst --uninstall > $OUT/uninstall
        listing > $OUT/after
    """, out)
    install = read(out, "install")
    assert install.index("  systemctl daemon-reload") < install.index(
        "  systemctl enable --now dma.service") < install.index(
        "  systemctl enable --now dma-pickup.path")
    assert "start the queue runner" not in install
    assert "dma" not in read(out, "cron").split()
    assert read(out, "verify") == ""
    documented = "dma(8) is not installed" not in install
    assert read(out, "documented").strip() == ("1" if documented else "0")
    assert read(out, "second").startswith("dma install-system: nothing to do")
    calls = read(out, "calls").splitlines()
    assert [c for c in calls if not c.startswith("is-")] == [
        "disable --now dma-pickup.path", "disable --now dma.service", "daemon-reload"]
    assert read(out, "after") == read(out, "before")


def test_an_install_that_fails_midway_is_undone(tmp_path: Path) -> None:
    """A step that fails (here the link /usr/lib/sendmail: a directory squats its
    temporary name) stops install with exit 73 naming the step and the way back; what
    was done before it is in the manifest, and --uninstall undoes it all."""
    out = tmp_path / "out"
    on_host_copy(r"""
        no_mta
        listing > $OUT/before
        mkdir /usr/lib/sendmail.dma-new
        status=0; inst > $OUT/install 2> $OUT/failed || status=$?
        echo $status > $OUT/status
        readlink /usr/sbin/sendmail > $OUT/first-link
        inst --uninstall > $OUT/uninstall
        rmdir /usr/lib/sendmail.dma-new
        listing > $OUT/after
    """, out)
    assert read(out, "status").strip() == "73"
    assert read(out, "failed").startswith(
        f"dma install-system: failed: link /usr/lib/sendmail -> {BIN / 'sendmail'}: Is a"
        " directory: /usr/lib/sendmail.dma-new (what was done is recorded in"
        " /var/lib/dma/install.json")
    assert read(out, "first-link").strip() == str(BIN / "sendmail")
    assert "  remove /usr/sbin/sendmail\n" in read(out, "uninstall")
    assert read(out, "after") == read(out, "before")
