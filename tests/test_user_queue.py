"""Queue listing and -Qd for users in system mode (SPEC 8.2, issue 9 item 4): root and the
delivery group see every item, any other user only their own, through the view root
keeps for them; a user's -Qd is a request the runner carries out for their own items
only.

Each test runs as root on a throwaway copy of the host (tests/host_namespace.py) with
the layout made by hand as core/system_layout.py says, throwaway users, and DEFER in
dma.conf so that queued mail stays queued.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from host_namespace import run_on_host_copy

from dma.core.system_layout import DELIVERY_GROUP, DELIVERY_USER

ENVIRON = {k: v for k, v in os.environ.items()
           if k not in ("DMA_CONF", "EMAIL", "XDG_CONFIG_HOME", "XDG_STATE_HOME")}

SETUP = r"""
T={tmp}
chmod 711 /root  # the venv lives under it; /root is overlaid, the host keeps its 0700
useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}
getent group {group} > /dev/null || groupadd --system {group}
useradd -M -d /nonexistent alice
useradd -M -d /nonexistent bob
useradd -M -d /nonexistent -G {group} carol
mkdir -p /etc/dma /var/mail
printf 'SPOOLDIR /var/spool/dma\nMAILDIR /var/mail\nDEFER\n' > /etc/dma/dma.conf
chmod 644 /etc/dma/dma.conf
rm -rf /var/spool/dma
install -d -m 2751 -o root -g {group} /var/spool/dma
install -d -m 1733 -o root -g {group} /var/spool/dma/maildrop
id -u alice > $T/alice_uid
id -u bob > $T/bob_uid
as() {{ user=$1; shift; runuser -u "$user" -- "$@"; }}
send() {{  # send USER SENDER RECIPIENT SUBJECT
    printf 'Subject: %s\n\nhello\n' "$4" | as "$1" $BIN/sendmail -f "$2" "$3"
}}
lines() {{ as "$1" $BIN/mailq -j 2>/dev/null | wc -l; }}
wait_for() {{  # wait_for USER COUNT: until USER's mailq -j lists COUNT items
    for i in $(seq 200); do [ "$(lines $1)" = "$2" ] && return 0; sleep 0.05; done
    echo "timeout waiting for $1 to list $2 items" >&2; return 1
}}
ids() {{ as "$1" $BIN/mailq -j | sed -n 's/.*"id": "\([^"]*\)".*/\1/p'; }}
"""


def _run(tmp_path: Path, script: str) -> None:
    setup = SETUP.format(tmp=tmp_path, user=DELIVERY_USER, group=DELIVERY_GROUP)
    done = run_on_host_copy(setup + script, env=ENVIRON, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr


def _read(tmp_path: Path, name: str) -> str:
    return (tmp_path / name).read_text()


def test_each_user_sees_and_deletes_only_their_own_items(tmp_path: Path) -> None:
    """With a runner: alice's mailq (text and -j) lists her two items and nothing of
    bob's; root and a member of the delivery group list all three; bob's -Qd of
    alice's id is refused by his own view (exit 66; so is carol's, who may list it)
    and, written into the maildrop by hand, by the runner (nothing deleted, a log
    line); alice's -Qd of her own item deletes it at once and exits 0; her -Qd ALL
    deletes the rest; alice can read neither the spool, nor bob's view (not even
    learn it exists), nor his message."""
    _run(tmp_path, r"""
        # the runner's first pass delivers what is due (DEFER or not): root's note to
        # carol; once it is in her mailbox, the runner waits on the maildrop
        printf 'Subject: first pass

hello
' | $BIN/sendmail carol
        $BIN/dma -v -q5m 2> $T/runner_log &
        runner=$!
        trap 'kill $runner; wait $runner || true' EXIT
        for i in $(seq 200); do [ -s /var/mail/carol ] && break; sleep 0.05; done
        test -s /var/mail/carol
        send alice alice-from@example.org alice-to@example.net 'alice one'
        send alice alice-from@example.org alice-to2@example.net 'alice two'
        send bob bob-from@example.org bob-to@example.net 'bob secret'
        wait_for alice 2
        wait_for bob 1
        as alice $BIN/mailq > $T/alice_mailq 2> $T/alice_mailq_err
        as alice $BIN/mailq -j > $T/alice_json 2> $T/alice_json_err
        as bob $BIN/mailq -j > $T/bob_json 2> /dev/null
        as carol $BIN/mailq -j > $T/carol_json 2> $T/carol_err
        $BIN/mailq -j > $T/root_json
        alice_ids=$(ids alice); bob_id=$(ids bob)
        first=$(echo "$alice_ids" | head -1)
        bob_uid=$(cat $T/bob_uid)
        # alice looks where she must not
        for path in /var/spool/dma/users/$bob_uid/queue /var/spool/dma/Q$bob_id \
                    /var/spool/dma/M$bob_id; do
            as alice cat $path > /dev/null 2>&1 && echo "read $path" >> $T/alice_got
        done
        as alice stat /var/spool/dma/users/$bob_uid/queue > /dev/null 2>&1 \
            && echo "stat bob's view" >> $T/alice_got
        as alice ls /var/spool/dma > /dev/null 2>&1 && echo "listed the spool" >> $T/alice_got
        as alice ls /var/spool/dma/users > /dev/null 2>&1 && echo "listed users" >> $T/alice_got
        touch $T/alice_got
        stat -c '%U:%G %a' /var/spool/dma/users /var/spool/dma/users/$bob_uid \
            /var/spool/dma/users/$bob_uid/queue > $T/modes
        # bob: alice's id through dma -Qd, then written into the maildrop by hand
        code=0; as bob $BIN/dma -Qd $first > $T/bob_qd 2>&1 || code=$?
        echo $code > $T/bob_qd_code
        code=0; as carol $BIN/dma -Qd $first > $T/carol_qd 2>&1 || code=$?
        echo $code > $T/carol_qd_code
        printf 'PYDMA-MAILDROP-DELETE 1\nItem: %s\nEnd: 1\n' "$first" | as bob sh -c \
            'cd /var/spool/dma/maildrop && cat > tmp_by-hand && mv tmp_by-hand by-hand'
        for i in $(seq 100); do [ -e /var/spool/dma/maildrop/by-hand ] || break; sleep 0.05; done
        ls -A /var/spool/dma/maildrop > $T/maildrop_left
        $BIN/mailq -j | wc -l > $T/root_count_after_bob
        # alice deletes her first item, then the rest
        code=0; as alice $BIN/dma -Qd $first > $T/alice_qd 2> $T/alice_qd_err || code=$?
        echo $code > $T/alice_qd_code
        $BIN/mailq -j > $T/root_json_after
        as alice $BIN/dma -Qd ALL > $T/alice_all 2>&1
        as alice $BIN/mailq > $T/alice_empty 2> /dev/null
        $BIN/mailq -j > $T/root_json_end
        echo "$first" > $T/first
        echo "$bob_id" > $T/bob_id
    """)
    alice_text = _read(tmp_path, "alice_mailq")
    alice_json = [json.loads(line) for line in _read(tmp_path, "alice_json").splitlines()]
    bob_id = _read(tmp_path, "bob_id").strip()
    first = _read(tmp_path, "first").strip()
    assert [item["recipient"] for item in alice_json] == ["alice-to@example.net",
                                                           "alice-to2@example.net"]
    assert alice_text.count("ID\t: ") == 2 and "From\t: alice-from@example.org" in alice_text
    seen_by_alice = "".join(_read(tmp_path, name) for name in (
        "alice_mailq", "alice_mailq_err", "alice_json", "alice_json_err", "alice_qd",
        "alice_qd_err", "alice_all", "alice_empty"))
    for secret in ("bob-from", "bob-to", "bob secret", bob_id, bob_id.rsplit(".", 1)[0]):
        assert secret not in seen_by_alice
    assert "only your own queued items" in _read(tmp_path, "alice_mailq_err")
    assert [item["recipient"] for item in map(json.loads, _read(tmp_path, "bob_json")
                                              .splitlines())] == ["bob-to@example.net"]
    for everyone in ("root_json", "carol_json"):
        listed = sorted(json.loads(line)["recipient"] for line in
                        _read(tmp_path, everyone).splitlines())
        assert listed == ["alice-to2@example.net", "alice-to@example.net",
                          "bob-to@example.net"], everyone
    assert "only your own" not in _read(tmp_path, "carol_err")
    assert _read(tmp_path, "alice_got") == ""
    uid = _read(tmp_path, "bob_uid").strip()
    assert _read(tmp_path, "modes").splitlines() == ["root:root 711", "bob:root 500",
                                                     "bob:root 400"], uid
    assert _read(tmp_path, "bob_qd_code").split() == ["66"]
    assert _read(tmp_path, "carol_qd_code").split() == ["66"]  # she sees it, it is not hers
    assert f"no queued item of yours: {first}" in _read(tmp_path, "bob_qd")
    assert _read(tmp_path, "maildrop_left") == ""
    assert _read(tmp_path, "root_count_after_bob").split() == ["3"]
    log = _read(tmp_path, "runner_log")
    assert "quarantine" not in log
    refused = [line for line in log.splitlines() if "deletion by request refused" in line]
    assert len(refused) == 1 and f"{first}: " in refused[0] and "user=bob" in refused[0]
    assert _read(tmp_path, "alice_qd_code").split() == ["0"]
    assert f"{first}: deleted" in _read(tmp_path, "alice_qd")
    after = [json.loads(line)["id"] for line in _read(tmp_path, "root_json_after").splitlines()]
    assert first not in after and bob_id in after and len(after) == 2
    assert [json.loads(line)["id"] for line in
            _read(tmp_path, "root_json_end").splitlines()] == [bob_id]
    assert _read(tmp_path, "alice_empty") == "Mail queue is empty\n"
    assert sum("deleted by request" in line and "user=alice" in line
               for line in log.splitlines()) == 2


def test_without_a_runner_the_request_waits_and_says_so(tmp_path: Path) -> None:
    """No runner: alice's mailq lists nothing yet (her mail is in the maildrop); a root
    pass writes her view; her -Qd exits 0 once the request is durable and says no runner
    took it; the next root pass deletes the item; -Qd of an id she has not got is 66."""
    _run(tmp_path, r"""
        send alice alice-from@example.org alice-to@example.net 'alice one'
        as alice $BIN/mailq > $T/before 2> $T/before_err
        $BIN/dma -qI no-such-item  # a root pass that picks up and delivers nothing
        id=$(ids alice)
        code=0; as alice $BIN/dma -Qd nosuch.0 > $T/unknown 2>&1 || code=$?
        echo $code > $T/unknown_code
        code=0; as alice $BIN/dma -Qd "$id" > $T/qd 2> $T/qd_err || code=$?
        echo $code > $T/qd_code
        $BIN/mailq -j | wc -l > $T/queued_before
        $BIN/dma -qI no-such-item
        $BIN/mailq -j | wc -l > $T/queued_after
        as alice $BIN/mailq > $T/after 2> /dev/null
    """)
    assert _read(tmp_path, "before") == "Mail queue is empty\n"
    assert "once the queue runner has taken it" in _read(tmp_path, "before_err")
    assert _read(tmp_path, "unknown_code").split() == ["66"]
    assert _read(tmp_path, "qd_code").split() == ["0"]
    assert "asked the queue runner to delete 1 item" in _read(tmp_path, "qd")
    assert "no queue runner has taken the request yet" in _read(tmp_path, "qd_err")
    assert _read(tmp_path, "queued_before").split() == ["1"]
    assert _read(tmp_path, "queued_after").split() == ["0"]
    assert _read(tmp_path, "after") == "Mail queue is empty\n"
