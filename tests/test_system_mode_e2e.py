"""System mode end to end (issue 9, SPEC 8.2): on a throwaway copy of this host
(tests/host_namespace.py), ``dma install-system --force`` sets the host's MTA aside and
starts the queue runner; then two unprivileged users mail through /usr/sbin/sendmail:
alice to bob locally, bob to a STARTTLS + AUTH smarthost on loopback (an aiosmtpd sink
in this test process: the namespace shares the network), delivered by the runner.
Neither can read what is the other's or the system's, and ``--uninstall`` at the end
undoes the install, keeping the mail still queued.
"""

from __future__ import annotations

import email
import re
import sys
from pathlib import Path
from typing import Any

from host_namespace import run_on_host_copy
from smtp_peers import LOGIN, PASSWORD, aiosmtpd_sink_fixture, answer_by_local_part, b64  # noqa: F401
from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.core.system_layout import DELIVERY_GROUP, MAIL_GROUP, MAILBOX_MODE, SECRET_FILE_MODE

BIN = Path(sys.executable).parent

# A tmpfs over /run makes install-system take the branch for hosts without systemd
# (a detached runner) even where systemd runs, so that nothing reaches the host's
# systemd.  /root holds this venv's Python: 0711 on the copy lets the users run it.
# `finish` (on any exit) undoes the install, which also stops the runner.
SCENARIO = r"""
T={out}
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -m 1777 /run/lock
chmod 711 /root
useradd --no-create-home alice
useradd --no-create-home bob
id -u alice > $T/alice.uid
id -u bob > $T/bob.uid
mkdir -p /etc/dma
install -m 0644 {ca} /etc/dma/ca.pem
cat > /etc/dma/dma.conf <<'EOF'
SMARTHOST 127.0.0.1
PORT {port}
AUTHPATH /etc/dma/auth.conf
STARTTLS
SECURETRANSFER
CAFILE /etc/dma/ca.pem
MAILNAME dma.test
EOF
( umask 077 && printf '%s|127.0.0.1:%s\n' '{login}' '{password}' > /etc/dma/auth.conf )
finish() {{
    "$BIN/dma" install-system --uninstall > $T/uninstall 2>&1 && touch $T/undone
}}
trap finish EXIT
"$BIN/dma" install-system --force > $T/install
stat -c '%U:%G %a' /etc/dma/auth.conf > $T/auth.mode
await() {{  # await SECONDS COMMAND...: until COMMAND succeeds, or the time is up
    deadline=$(( $(date +%s) + $1 )); shift
    until "$@" > /dev/null 2>&1; do
        [ $(date +%s) -lt $deadline ] || {{ echo "timeout waiting for: $*"; exit 1; }}
        sleep 0.05
    done
}}

# alice -> bob, local; bob -> a smarthost, one recipient accepted, one deferred (450)
printf 'Subject: for bob\nReceived: from bob (uid 0) forged\n\nhello bob\n' |
    runuser -u alice -- /usr/sbin/sendmail bob 2> $T/alice.err
printf 'Subject: from bob\n\nhello remote\n' |
    runuser -u bob -- /usr/sbin/sendmail friend@remote.example temp@remote.example \
    2> $T/bob.err
await 10 grep -q '^hello bob$' /var/mail/bob
view=/var/spool/dma/users/$(cat $T/bob.uid)/queue
settled() {{  # friend@ delivered, temp@ deferred, and bob's view says so
    set -- /var/spool/dma/Q*
    [ $# = 1 ] && grep -q '^X-Last-Error:' "$1" && grep -q temp@ $view && ! grep -q friend@ $view
}}
await 10 settled
cp /var/mail/bob $T/bob.mbox
stat -c '%U:%G %a' /var/mail/bob > $T/mailbox.mode
queued=$(ls /var/spool/dma/Q*)
cat $queued /var/spool/dma/M* $view > $T/queued

# what alice may not read: each exists (root reads it) and is refused to her
tried() {{
    "$@" > /dev/null
    if runuser -u alice -- "$@" > /dev/null 2>&1; then echo "allowed: $*"
    else echo "refused: $*"; fi
}}
{{
    tried cat /etc/dma/auth.conf
    tried ls /var/spool/dma
    tried cat $queued
    tried cat /var/mail/bob
    tried cat $view
    tried ls /var/spool/dma/users/$(cat $T/bob.uid)
}} > $T/alice.tried
runuser -u alice -- "$BIN/mailq" > $T/alice.mailq 2>&1
"""


def test_two_users_mail_locally_and_through_an_auth_smarthost(
    tmp_path: Path, aiosmtpd_sink: Any, tls_certs: TlsCerts
) -> None:
    """After install-system --force: alice's mail to bob lands in a new bob:mail 0660
    mailbox with a Received line naming alice's uid (not the one she forged); bob's
    reaches the STARTTLS + AUTH smarthost through the runner, his deferred recipient
    stays queued in his view; alice cannot read auth.conf (root:dma 0640), the spool,
    bob's queued item, his mailbox or his view, nor list his mail; the secret is in no
    output; --uninstall succeeds and says it keeps the queued item."""
    sink = aiosmtpd_sink(starttls=tls_certs.server_context(), auth=True,
                         rcpt=answer_by_local_part)
    out = tmp_path / "out"
    out.mkdir()
    done = run_on_host_copy(SCENARIO.format(out=out, ca=tls_certs.ca_file, port=sink.port,
                                            login=LOGIN, password=PASSWORD), timeout=60)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"

    def read(name: str) -> str:
        return (out / name).read_text()

    assert (out / "undone").exists(), read("uninstall")
    alice, bob = read("alice.uid").strip(), read("bob.uid").strip()
    assert read("alice.err") == read("bob.err") == ""
    assert read("auth.mode").split() == [f"root:{DELIVERY_GROUP}", f"{SECRET_FILE_MODE:o}"]

    [message] = [email.message_from_string(m.split("\n", 1)[1])
                 for m in re.split(r"(?m)^From ", read("bob.mbox")) if m]
    received = [" ".join(value.split()) for value in message.get_all("Received", [])]
    assert received[0].startswith(f"from alice (uid {alice}) "), received
    assert received[1:] == ["from bob (uid 0) forged"]
    assert str(message.get_payload()).strip() == "hello bob"
    assert read("mailbox.mode").split() == [f"bob:{MAIL_GROUP}", f"{MAILBOX_MODE:o}"]

    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["friend@remote.example"]
    assert arrival.tls and arrival.login == LOGIN
    remote = email.message_from_bytes(arrival.content)
    assert " ".join(str(remote["Received"]).split()).startswith(f"from bob (uid {bob}) ")
    assert str(remote.get_payload()).strip() == "hello remote"
    assert "temp@remote.example" in read("queued")

    tried = read("alice.tried").splitlines()
    assert len(tried) == 6 and all(line.startswith("refused: ") for line in tried), tried
    assert "temp@" not in read("alice.mailq") and "bob" not in read("alice.mailq")

    assert "kept /var/spool/dma with the mail in it (1 queued item)" in read("uninstall")
    outputs = [done.stdout, done.stderr, *(p.read_text(errors="replace")
                                           for p in out.iterdir())]
    for secret in (PASSWORD, b64(PASSWORD), b64(f"\0{LOGIN}\0{PASSWORD}")):
        assert not any(secret in text for text in outputs), secret

