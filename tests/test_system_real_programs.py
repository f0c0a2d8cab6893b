"""Real Debian programs send mail in system mode (issue 9: "a real program that runs as
its own system user ... sends through /usr/sbin/sendmail and the mail arrives").

Each test runs as root on a throwaway copy of the host (tests/host_namespace.py):
``dma install-system --force`` (this host's exim set aside, as an administrator
would) starts the queue runner, a Debian program mails as its own user through
/usr/sbin/sendmail, and the runner delivers what it finds in the maildrop.  A tmpfs
over /run keeps the programs' lock and pid files off the host and makes
install-system take the branch for hosts without systemd (a detached runner).
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from host_namespace import run_on_host_copy

from dma.core.system_layout import MAIL_GROUP, MAILBOX_MODE

BIN = Path(sys.executable).parent

# /root is not among host_namespace's overlaid trees yet, and the venv's Python lives
# under it (0700): an overlay of our own lets the programs' users reach it.  The
# install, then `finish` (on any exit) stops what the scenario started and undoes the
# install, so the namespace can end; $T/undone tells the test it went well.
SETUP = r"""
T={tmp}
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -m 1777 /run/lock
mkdir -p $T/rootlayer/upper $T/rootlayer/work
mount -t overlay overlay \
    -o lowerdir=/root,upperdir=$T/rootlayer/upper,workdir=$T/rootlayer/work /root
chmod 711 /root
started=
finish() {{
    [ -z "$started" ] || kill $started || true
    "$BIN/dma" install-system --uninstall > $T/uninstall 2>&1 && touch $T/undone
}}
trap finish EXIT
"$BIN/dma" install-system --force > $T/install
readlink /usr/sbin/sendmail > $T/sendmail
await() {{  # await FILE TEXT SECONDS: until FILE holds TEXT, or the time is up
    deadline=$(( $(date +%s) + $3 ))
    until grep -qsF "$2" "$1"; do
        [ $(date +%s) -lt $deadline ] || {{ echo "timeout waiting for $2 in $1"; exit 1; }}
        sleep 0.05
    done
}}
"""


def require(*programs: str) -> None:
    """Skip unless Debian's ``programs`` are installed (scripts/setup installs them)."""
    for program in programs:
        if shutil.which(program, path="/usr/sbin:/usr/bin") is None:
            pytest.skip(f"needs {program} from Debian's packages (scripts/setup installs it)")


def scenario(tmp_path: Path, script: str) -> str:
    """Run SETUP and ``script`` on a host copy; the output directory's path comes back
    once the scenario succeeded and the install was undone."""
    done = run_on_host_copy(SETUP.format(tmp=tmp_path) + script)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert (tmp_path / "undone").exists(), (tmp_path / "uninstall").read_text()
    assert (tmp_path / "sendmail").read_text().strip() == str(BIN / "sendmail")
    return str(tmp_path)


def messages(mbox: str) -> list[str]:
    """The messages of an mbox file, each without its From_ line."""
    return [part.split("\n", 1)[1] for part in re.split(r"(?m)^(?=From )", mbox) if part]


def field(message: str, name: str) -> str:
    """The first ``name`` field of a message's header, unfolded."""
    header = message.split("\n\n", 1)[0]
    match = re.search(rf"(?ms)^{name}: (.*?)\n(?=\S|\Z)", header + "\n")
    assert match is not None, (name, message)
    return " ".join(match.group(1).split())


def mailbox_mode(tmp_path: Path) -> str:
    """The owner, group and mode the scenario wrote to $T/mode (``stat -c %U:%G:%a``)."""
    return (tmp_path / "mode").read_text().strip()


def test_logcheck_mails_its_report_through_sendmail(tmp_path: Path) -> None:
    """logcheck, run as user logcheck by the command its /etc/cron.d file holds, mails
    its report of an unknown log line through /usr/sbin/sendmail (mime-construct) to
    "logcheck", which the alias its package adds sends to root: the runner delivers it
    at once into a new root mailbox (root:mail 0660), with a Received line naming
    logcheck's uid."""
    require("logcheck", "mime-construct", "logtail2")
    line = "Jan  1 00:00:00 testhost pydma-test[42]: sprocket 4711 turned widdershins"
    scenario(tmp_path, rf"""
        # the alias logcheck's postinst adds; a new root mailbox; one log file to read
        sed -i '/^logcheck[[:space:]]*:/Id' /etc/aliases
        echo 'logcheck: root' >> /etc/aliases
        rm -f /var/mail/root /var/mail/logcheck
        echo '{line}' > /var/log/pydma-test.log
        chown root:adm /var/log/pydma-test.log
        chmod 640 /var/log/pydma-test.log
        rm -f /etc/logcheck/logcheck.logfiles.d/*.logfiles
        echo /var/log/pydma-test.log > /etc/logcheck/logcheck.logfiles
        # the hourly job of /etc/cron.d/logcheck, with its PATH, as cron would run it
        job=$(awk '$1 == "2" && $6 == "logcheck" {{ $1=$2=$3=$4=$5=$6=""; print }}' \
            /etc/cron.d/logcheck)
        [ -n "$job" ] || {{ echo "no hourly job in /etc/cron.d/logcheck"; exit 1; }}
        path=$(sed -n 's/^PATH=//p' /etc/cron.d/logcheck)
        runuser -u logcheck -- env -i PATH="$path" HOME=/var/lib/logcheck \
            LOGNAME=logcheck SHELL=/bin/sh /bin/sh -c "$job" > $T/logcheck_out 2>&1
        await /var/mail/root widdershins 10
        cp /var/mail/root $T/root.mbox
        stat -c %U:%G:%a /var/mail/root > $T/mode
        id -u logcheck > $T/uid
        ls /var/mail > $T/mailboxes
        ls -A /var/spool/dma/maildrop > $T/maildrop
    """)
    assert (tmp_path / "logcheck_out").read_text() == ""
    assert (tmp_path / "maildrop").read_text() == ""
    assert (tmp_path / "mailboxes").read_text().split() == ["root"]
    assert mailbox_mode(tmp_path) == f"root:{MAIL_GROUP}:{MAILBOX_MODE:o}"
    [report] = messages((tmp_path / "root.mbox").read_text())
    uid = (tmp_path / "uid").read_text().strip()
    assert field(report, "Received").startswith(f"from logcheck (uid {uid}) ")
    assert field(report, "To") == "logcheck"
    assert field(report, "Subject").endswith("System Events")
    assert field(report, "Auto-Submitted") == "auto-generated"
    assert line in report.split("\n\n", 1)[1]


def test_cron_mails_a_users_job_output_through_sendmail(tmp_path: Path) -> None:
    """Debian's cron daemon runs carol's crontab job and mails its output to her through
    /usr/sbin/sendmail as carol: it arrives in her new mailbox (carol:mail 0660) with a
    Received line naming her uid and a Date of the real time."""
    require("cron", "crontab")
    # cron runs jobs on minute boundaries; faketime, where present, moves cron's clock
    # alone (FAKETIME_ONLY_CMDS) to 3 s before the next one, so this takes seconds,
    # not up to a minute; the programs it starts keep the real time.
    shifted = shutil.which("faketime") is not None
    started = time.monotonic()
    scenario(tmp_path, r"""
        useradd -M -d /nonexistent carol
        id -u carol > $T/uid
        rm -f /var/mail/carol
        # cron's own jobs and those of other packages stay out of this run; no @reboot
        find /etc/cron.d -type f ! -name dma -delete
        sed -i '/^[0-9*@]/d' /etc/crontab
        touch /run/crond.reboot
        echo '* * * * * echo "output of carol'"'"'s job, uid $(id -u)"' | crontab -u carol -
        if command -v faketime > /dev/null; then
            now=$(date +%s)
            FAKETIME_ONLY_CMDS=cron FAKETIME_DONT_FAKE_MONOTONIC=1 \
                faketime -f "+$(( (57 - now % 60 + 60) % 60 ))s" cron -f > $T/cron_out 2>&1 &
        else
            cron -f > $T/cron_out 2>&1 &
        fi
        started=$!
        await /var/mail/carol "carol's job" 75
        date -u +%s > $T/delivered
        cp /var/mail/carol $T/carol.mbox
        stat -c %U:%G:%a /var/mail/carol > $T/mode
    """)
    print(f"cron scenario: {time.monotonic() - started:.1f} s (faketime: {shifted})")
    assert mailbox_mode(tmp_path) == f"carol:{MAIL_GROUP}:{MAILBOX_MODE:o}"
    [mail] = messages((tmp_path / "carol.mbox").read_text())
    uid = (tmp_path / "uid").read_text().strip()
    assert field(mail, "Received").startswith(f"from carol (uid {uid}) ")
    assert field(mail, "To") == "carol"
    assert field(mail, "Subject").startswith("Cron <carol@")
    assert mail.split("\n\n", 1)[1].strip() == f"output of carol's job, uid {uid}"
    dated = parsedate_to_datetime(field(mail, "Date")).timestamp()
    assert abs(dated - int((tmp_path / "delivered").read_text())) < 10
