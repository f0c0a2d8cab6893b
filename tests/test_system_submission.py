"""System mode submission (SPEC 8.2, issue 9 items 1-2): users without privileges hand
mail to the maildrop; the runner, as root, picks it up and delivers it.

Each test runs as root on a throwaway copy of the host (tests/host_namespace.py), with
the layout made by hand as core/system_layout.py says and two throwaway users.
"""

from __future__ import annotations

import re
from pathlib import Path

from host_namespace import run_on_host_copy

from dma.core.system_layout import MAILDROP_MAX_OCTETS

# Python lives under /root (0700 here): an overlay lets the throwaway users run it.
# Then the system layout, by hand: the delivery user and group, dma.conf readable by
# all (with an auth.conf only root and the group may read), the spool and maildrop.
SETUP = r"""
T={tmp}
mkdir -p $T/rootfs/upper $T/rootfs/work
mount -t overlay overlay -o lowerdir=/root,upperdir=$T/rootfs/upper,workdir=$T/rootfs/work /root
chmod 711 /root
useradd --system --no-create-home --shell /usr/sbin/nologin dma
useradd -M -d /nonexistent alice
useradd -M -d /nonexistent bob
mkdir -p /etc/dma /var/mail
printf 'SPOOLDIR /var/spool/dma\nMAILDIR /var/mail\nAUTHPATH /etc/dma/auth.conf\n' \
    > /etc/dma/dma.conf
chmod 644 /etc/dma/dma.conf
printf 'alice|smtp.example.com:secret\n' > /etc/dma/auth.conf
chown root:dma /etc/dma/auth.conf
chmod 640 /etc/dma/auth.conf
rm -rf /var/spool/dma
install -d -m 2751 -o root -g dma /var/spool/dma
install -d -m 1733 -o root -g dma /var/spool/dma/maildrop
rm -f /var/mail/bob
id -u alice > $T/alice_uid
as_alice() {{ runuser -u alice -- "$@"; }}
drop() {{ as_alice sh -c "cat > /var/spool/dma/maildrop/$1"; }}  # a file by alice's hand
"""

HANDMADE_MESSAGE = (
    b"Received: from root (uid 0)\n\tby forged.example;\n\tMon, 1 Jan 2024 00:00:00 +0000\n"
    b"Subject: by hand\n\nwritten into the maildrop by hand\n"
)


def handmade(message: bytes = HANDMADE_MESSAGE, head: bytes = b"") -> bytes:
    """A maildrop file as a user could write it without dma (not core's renderer)."""
    return (b"PYDMA-MAILDROP 1\nSender: root@localhost\n" + head
            + b"Message-Octets: %020d\n\n" % len(message) + message
            + b"Recipient: bob\nEnd: 1\n")


def messages(mbox: str) -> list[str]:
    """The messages of an mbox file, each without its From_ line."""
    return [part.split("\n", 1)[1] for part in re.split(r"(?m)^(?=From )", mbox) if part]


def first_received(message: str) -> str:
    """The first Received field of a message, unfolded."""
    match = re.search(r"(?ms)^Received: (.*?)\n(?=\S)", message)
    assert match is not None, message
    return " ".join(match.group(1).split())


def test_a_user_mails_another_through_the_maildrop(tmp_path: Path) -> None:
    """alice's sendmail (plain, -t, -bs, a 3000-octet line) exits 0 with the message in
    the maildrop, not the spool; dma -q as root delivers each to bob with a Received
    line naming alice's real uid, whatever the message or a hand-written maildrop file
    claims; an unknown local user is still exit 67, and auth.conf, unreadable to alice,
    is no obstacle."""
    (tmp_path / "byhand").write_bytes(handmade())
    (tmp_path / "claims").write_bytes(handmade(head=b"Uid: 0\nUser: root\n"))
    done = run_on_host_copy(SETUP.format(tmp=tmp_path) + r"""
        printf 'Subject: plain\nReceived: from root (uid 0)\n\nplain\n' \
            | as_alice $BIN/sendmail bob
        printf 'To: bob\nBcc: bob@localhost\nSubject: by -t\n\nheaders\n' \
            | as_alice $BIN/sendmail -t
        printf '%s\r\n' 'EHLO x' 'MAIL FROM:<alice@example.org>' 'RCPT TO:<bob>' DATA \
            'Subject: by -bs' '' hello . QUIT | as_alice $BIN/sendmail -bs > $T/bs_replies
        { printf 'Subject: long line\n\n'; head -c 3000 /dev/zero | tr '\0' x; echo; } \
            | as_alice $BIN/sendmail bob
        code=0; echo x | as_alice $BIN/sendmail nosuchuser 2> $T/nouser_err || code=$?
        echo $code > $T/nouser_code
        drop byhand < $T/byhand
        drop claims < $T/claims
        ls -A /var/spool/dma/maildrop | wc -l > $T/dropped
        find /var/spool/dma -maxdepth 1 -name 'Q*' | wc -l > $T/spooled_before
        $BIN/dma -v -q 2> $T/log
        ls -A /var/spool/dma/maildrop | wc -l > $T/left
        cp /var/mail/bob $T/bob.mbox
        $BIN/mailq > $T/mailq
    """)
    assert done.returncode == 0, done.stderr
    uid = (tmp_path / "alice_uid").read_text().strip()
    assert (tmp_path / "nouser_code").read_text().split() == ["67"]
    assert "nosuchuser" in (tmp_path / "nouser_err").read_text()
    assert "250" in (tmp_path / "bs_replies").read_text()
    assert (tmp_path / "dropped").read_text().split() == ["6"]  # 4 submitted, 2 by hand
    assert (tmp_path / "spooled_before").read_text().split() == ["0"]
    assert (tmp_path / "left").read_text().split() == ["0"]
    got = messages((tmp_path / "bob.mbox").read_text())
    subjects = sorted(re.search(r"(?m)^Subject: (.*)$", m).group(1) for m in got)  # type: ignore[union-attr]
    assert subjects == ["by -bs", "by -t", "by hand", "long line", "plain"]
    for message in got:
        assert max(len(line) for line in message.splitlines()) <= 998  # re-encoded
        assert first_received(message).startswith(f"from alice (uid {uid}) ")
        assert "Bcc" not in message
    log = (tmp_path / "log").read_text()
    assert "unknown field 'Uid'" in log and "moved to the quarantine" in log
    listing = (tmp_path / "mailq").read_text()
    assert "ID\t: maildrop-claims" in listing
    assert "unknown field 'Uid'" in listing


def test_hostile_maildrop_files_are_quarantined_and_the_good_one_delivered(
        tmp_path: Path) -> None:
    """A symlink to /etc/shadow, hard links, a FIFO, a sparse file over the limit,
    garbage, a directory and an abandoned temporary file, all dropped by alice, are
    each moved to the quarantine with one log line, never read through (no secret
    reaches a log, a mailbox or the spool) and never blocking; alice's good message
    sent alongside is delivered."""
    (tmp_path / "valid").write_bytes(handmade())
    size = MAILDROP_MAX_OCTETS + 1
    done = run_on_host_copy(SETUP.format(tmp=tmp_path) + rf"""
        M=/var/spool/dma/maildrop
        sha256sum /etc/shadow > $T/shadow_before
        as_alice ln -s /etc/shadow $M/symlink
        code=0; as_alice ln /etc/shadow $M/tried 2>/dev/null || code=$?
        echo $code > $T/alice_link_code
        # alice cannot link /etc/shadow (another file system here, and protected
        # hard links): root makes the same kind of link to a secret of its own
        printf 'root:SECRET-TOKEN-42:0:0\n' > /var/spool/secret
        chmod 600 /var/spool/secret
        ln /var/spool/secret $M/hardlink
        drop twice < $T/valid
        as_alice ln $M/twice $M/twice-again
        as_alice mkfifo $M/fifo
        as_alice truncate -s {size} $M/sparse
        head -c 4096 /dev/urandom | drop garbage
        as_alice mkdir $M/directory
        drop tmp_abandoned < $T/valid
        touch -d '2 hours ago' $M/tmp_abandoned
        drop tmp_in_progress < $T/valid
        printf 'Subject: the good one\n\nhello\n' | as_alice $BIN/sendmail bob
        timeout 60 $BIN/dma -v -q 2> $T/log
        ls -A $M | sort > $T/left
        ls -A /var/spool/dma/quarantine | sort > $T/quarantined
        $BIN/mailq > $T/mailq
        cp /var/mail/bob $T/bob.mbox
        sha256sum /etc/shadow > $T/shadow_after
        stat -c %h /var/spool/secret > $T/secret_links
        grep -r -l SECRET-TOKEN-42 /var/spool/dma --exclude-dir=quarantine > $T/leaks || true
        grep -r -l -F "$(head -c 20 /etc/shadow)" /var/spool/dma /var/mail \
            --exclude-dir=quarantine >> $T/leaks || true
    """)
    assert done.returncode == 0, done.stderr
    refused = ["directory", "fifo", "garbage", "hardlink", "sparse", "symlink",
               "tmp_abandoned", "twice", "twice-again"]
    assert (tmp_path / "alice_link_code").read_text().split() != ["0"]
    assert (tmp_path / "left").read_text().split() == ["tmp_in_progress"]
    assert (tmp_path / "quarantined").read_text().split() == [
        f"maildrop-{name}" for name in refused]
    log = (tmp_path / "log").read_text()
    moved = [line for line in log.splitlines() if "moved to the quarantine" in line]
    assert len(moved) == len(refused), log
    for name, says in [("symlink", "a symbolic link"), ("hardlink", "has 2 links"),
                       ("twice", "has 2 links"), ("fifo", "a FIFO"),
                       ("sparse", f"it is {size} octets"), ("garbage", "not a maildrop file"),
                       ("directory", "a directory"), ("tmp_abandoned", "unfinished")]:
        assert any(f"file={name} " in line and says in line for line in moved), (name, log)
    listing = (tmp_path / "mailq").read_text()
    assert listing.count("Status\t: quarantined") == len(refused)
    assert "SECRET-TOKEN" not in log + listing
    got = messages((tmp_path / "bob.mbox").read_text())
    assert ["the good one" in message for message in got] == [True]
    assert (tmp_path / "leaks").read_text() == ""
    assert (tmp_path / "shadow_before").read_text() == (tmp_path / "shadow_after").read_text()
    assert (tmp_path / "secret_links").read_text().split() == ["2"]  # moved, not deleted


def test_the_runner_notices_a_new_maildrop_file_at_once(tmp_path: Path) -> None:
    """A ``dma -q5m`` runner started as root, without systemd, delivers alice's message
    within a second of her sendmail exiting (inotify on the maildrop); the detached
    delivery after root's own submission picks the maildrop up too."""
    done = run_on_host_copy(SETUP.format(tmp=tmp_path) + r"""
        $BIN/dma -q5m 2> $T/runner_log &
        runner=$!
        sleep 1.5  # its first pass is over; from now on it waits on the maildrop
        for n in 1 2 3 4 5; do
            printf 'Subject: latency %s\n\nhello\n' $n | as_alice $BIN/sendmail bob
            sent=$(date +%s%N)
            deadline=$((sent + 5000000000))
            until grep -q "Subject: latency $n" /var/mail/bob 2>/dev/null; do
                if [ $(date +%s%N) -gt $deadline ]; then echo timeout >> $T/latency; break; fi
                sleep 0.005
            done
            echo $(( ($(date +%s%N) - sent) / 1000000 )) >> $T/latency
        done
        kill $runner
        wait $runner || true
        # root's own submission: its detached delivery picks up alice's file first
        printf 'Subject: from the maildrop\n\nhello\n' | as_alice $BIN/sendmail bob
        printf 'Subject: from root\n\nhello\n' | $BIN/sendmail bob
        for i in $(seq 200); do
            grep -q 'Subject: from the maildrop' /var/mail/bob \
                && grep -q 'Subject: from root' /var/mail/bob && break
            sleep 0.05
        done
        cp /var/mail/bob $T/bob.mbox
    """)
    assert done.returncode == 0, done.stderr
    latencies = (tmp_path / "latency").read_text().split()
    assert "timeout" not in latencies, latencies
    milliseconds = sorted(int(value) for value in latencies)
    print(f"maildrop to mailbox with a -q5m runner: {milliseconds} ms "
          f"(median {milliseconds[len(milliseconds) // 2]} ms)")
    assert milliseconds[len(milliseconds) // 2] < 1000
    mbox = (tmp_path / "bob.mbox").read_text()
    assert "Subject: from the maildrop" in mbox and "Subject: from root" in mbox
