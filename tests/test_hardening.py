"""Hostile callers and octets (issue 7, SPEC 3.8, 5.1): closed standard streams, octets that
are not UTF-8 in the spool and in configuration files, and errors nobody handled.

Every case runs the installed commands as real processes against a private spool, with
real SMTP sinks on loopback and a real /dev/log listener where the log is what matters.
"""

from __future__ import annotations

import mailbox
import os
import subprocess
import sys
from collections.abc import Callable

from conftest import DmaSite, command, login_name
from smtp_peers import (  # noqa: F401 (fixtures)
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    free_port,
    scripted_sink_fixture,
    wait_until,
    write_remote_config,
)
from test_syslog import SyslogListener, syslog_listener  # noqa: F401 (fixture)

MESSAGE = b"Subject: hardening\n\nbody line\n"
LATIN1_SENDER = b"j\xe9r\xf4me@example.org"  # what the C dma spools for a Latin-1 -f


def _mbox_messages(site: DmaSite, user: str) -> list[bytes]:
    path = site.maildir / user
    if not path.exists():
        return []
    return [bytes(message) for message in mailbox.mbox(str(path))]


def _submit_with_closed(site: DmaSite, shell_redirect: str, args: list[str]) -> int:
    """Run sendmail through sh with ``shell_redirect`` (e.g. ``2>&-``) on its command line."""
    argv = " ".join(f"'{word}'" for word in [*command("sendmail"), "-C", str(site.config), *args])
    done = subprocess.run(
        ["sh", "-c", f"{argv} {shell_redirect}"], input=MESSAGE, env=site.environ,
        cwd=site.root, timeout=60, check=False,
    )
    return done.returncode


def test_closed_stdout_or_stderr_still_queues_and_delivers(site: DmaSite) -> None:
    """A caller that closes stdout or stderr (GNU mailutils closes stderr) gets exit 0 and
    the detached delivery still runs: both messages reach the mailbox."""
    site.write_config(defer=False)
    user = login_name()
    assert _submit_with_closed(site, ">&-", [user]) == 0
    assert _submit_with_closed(site, "2>&-", [user]) == 0
    assert wait_until(lambda: len(_mbox_messages(site, user)) == 2)
    assert wait_until(lambda: not [n for n in site.spool_names() if n.startswith("Q")])


def test_closed_stdin_is_refused_not_read_as_an_empty_message(site: DmaSite) -> None:
    """With fd 0 closed, submission exits 66 and queues nothing, even though the guard
    puts /dev/null on the closed descriptor."""
    assert _submit_with_closed(site, "<&-", [login_name()]) == 66
    assert site.queue() == []


def test_full_stdout_is_an_io_error_not_a_traceback(site: DmaSite) -> None:
    """`mailq > /dev/full` exits 74 with one line on stderr, no traceback."""
    site.send([login_name()], MESSAGE)
    argv = [*command("mailq"), "-C", str(site.config)]
    with open("/dev/full", "wb") as full:
        done = subprocess.run(argv, stdout=full, stderr=subprocess.PIPE, env=site.environ,
                              timeout=60, check=False)
    assert done.returncode == 74
    assert b"Traceback" not in done.stderr
    assert done.stderr.count(b"\n") == 1 and b"No space left on device" in done.stderr


def test_closed_pipe_reader_ends_mailq_quietly(site: DmaSite) -> None:
    """`mailq | head -c1` with many items: mailq stops without a traceback."""
    for _ in range(3):
        site.send([login_name()], MESSAGE)
    argv = " ".join(f"'{word}'" for word in [*command("mailq"), "-C", str(site.config)])
    done = subprocess.run(["sh", "-c", f"{argv} | head -c1 >/dev/null; echo done"],
                          capture_output=True, env=site.environ, timeout=60, check=False)
    assert b"Traceback" not in done.stderr, done.stderr
    assert done.stdout == b"done\n"


def _write_cdma_item(site: DmaSite, item_id: str, sender: bytes, recipient: bytes) -> None:
    """An item as the C dma queues it (its Q format, our M layout), octets as given."""
    site.spool.mkdir(exist_ok=True)
    (site.spool / f"M{item_id}").write_bytes(
        b"Received: from root (uid 0)\n\tid " + item_id.encode() + b"\n" + MESSAGE)
    (site.spool / f"Q{item_id}").write_bytes(
        b"ID: " + item_id.encode() + b"\nSender: " + sender + b"\nRecipient: "
        + recipient + b"\n")


def test_latin1_sender_goes_out_as_its_octets_where_smtputf8_is_offered(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """A C dma Q file with a Latin-1 sender: to a server offering SMTPUTF8 the MAIL
    command carries the very octets of the file, and the good item beside it goes too."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "SMTPUTF8", "PIPELINING")))
    write_remote_config(site, sink.port)
    _write_cdma_item(site, "66aa01.0", LATIN1_SENDER, b"bob@example.org")
    _write_cdma_item(site, "66aa02.0", b"plain@example.org", b"carol@example.org")
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    sink.wait_for(2)
    wire = b"".join(read for log in sink.connections for read in log.reads)
    assert b"MAIL FROM:<" + LATIN1_SENDER + b"> " in wire
    assert site.queue() == []


def test_latin1_sender_without_smtputf8_fails_alone_with_a_reason(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """Without SMTPUTF8 the Latin-1 sender's item fails with a clear reason (its bounce
    cannot be delivered and is dropped); the good item is delivered in the same run."""
    sink = scripted_sink(Script(extensions=("8BITMIME",)))
    write_remote_config(site, sink.port)
    _write_cdma_item(site, "66aa03.0", LATIN1_SENDER, b"bob@example.org")
    _write_cdma_item(site, "66aa04.0", b"plain@example.org", b"carol@example.org")
    done = site.run(["-q", "-v"])
    assert b"Traceback" not in done.stderr, done.stderr
    arrived = sink.wait_for(1)
    assert [a.recipients for a in arrived] == [["carol@example.org"]]
    assert b"non-ASCII sender" in done.stderr
    assert b"j\\xe9r\\xf4me@example.org" in done.stderr  # shown escaped, never raw
    assert "66aa03.0" not in {item["id"] for item in site.queue()}


def test_latin1_recipient_in_the_queue_is_logged_escaped(
    site: DmaSite, syslog_listener: SyslogListener  # noqa: F811
) -> None:
    """A queued item whose recipient holds a Latin-1 octet neither stops the run nor
    breaks syslog: the line shows the octet as \\xe9, and the other item is delivered."""
    site.write_config("LOCALONLY\n", defer=False)
    _write_cdma_item(site, "66aa05.0", b"root@example.org", b"r\xe9mi@example.org")
    _write_cdma_item(site, "66aa06.0", b"root@example.org", login_name().encode())
    done = site.run(["-q"])
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert len(_mbox_messages(site, login_name())) >= 1
    lines = [text for _, _, text in syslog_listener.lines()]
    assert any("r\\xe9mi@example.org" in line for line in lines), lines


def test_latin1_password_is_sent_as_its_octets(
    site: DmaSite, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """An auth.conf password in Latin-1 is sent in AUTH as the octets of the file, as the
    C dma sends it: the server accepts that login and gets the mail."""
    password = "gr\udcfc\udcdfe"  # b"gr\xfc\xdfe" read with surrogateescape
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False, password=password)
    auth = site.root / "auth.conf"
    auth.write_bytes(b"sinkuser|127.0.0.1:gr\xfc\xdfe\n")
    auth.chmod(0o600)
    write_remote_config(site, sink.port, f"AUTHPATH {auth}\nINSECURE\n")
    done = site.run(["-D", "bob@example.org"], MESSAGE)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    (arrival,) = sink.wait_for(1)
    assert arrival.login == "sinkuser"


def test_maildir_path_with_a_latin1_octet_works(site: DmaSite) -> None:
    """MAILDIR naming a directory with a Latin-1 octet in its name: delivery works and
    the log line (on stderr with -v) shows the octet escaped."""
    maildir = os.fsencode(site.root) + b"/post\xe9"
    os.mkdir(maildir)
    site.write_aliases("")
    site.config.write_bytes(
        b"SPOOLDIR " + os.fsencode(site.spool) + b"\nMAILDIR " + maildir
        + b"\nALIASES " + os.fsencode(site.aliases) + b"\n")
    done = site.run(["-D", "-v", login_name()], MESSAGE)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    assert os.path.exists(maildir + b"/" + login_name().encode())


def test_latin1_aliases_file_does_not_fail_a_queued_message(site: DmaSite) -> None:
    """An alias leading to an address with a Latin-1 octet: the message is queued for both
    targets and sendmail exits 0 (the log line naming it must not fail the command)."""
    site.aliases.write_bytes(
        b"r\xe9mi: root\npost: " + login_name().encode() + b", j\xe9r\xf4me@example.org\n")
    done = site.run(["post"], MESSAGE)
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    assert len(site.queue()) == 2


_BREAK_QUEUE_RUN = (
    "import sys; import dma.shell.queue_run as q\n"
    "def broken(self, ids): raise RuntimeError('planted fault')\n"
    "q.QueueRun.run = broken\n"
    "from dma.shell.main import main; sys.exit(main(['sendmail', *sys.argv[1:]]))\n"
)


def test_detached_deliverer_that_dies_says_so_in_syslog(
    site: DmaSite, syslog_listener: SyslogListener  # noqa: F811
) -> None:
    """A fault planted in the detached deliverer (one the run's own guards cannot see)
    leaves a syslog line with its type, message and file:line; the caller still got 0
    and the message stays queued."""
    site.write_config(defer=False)
    done = subprocess.run(
        [sys.executable, "-c", _BREAK_QUEUE_RUN, "-C", str(site.config), login_name()],
        input=MESSAGE, capture_output=True, env=site.environ, timeout=60, check=False)
    assert done.returncode == 0, done.stderr

    def logged() -> list[str]:
        found.extend(text for _, _, text in syslog_listener.lines())
        return [line for line in found if "background delivery failed" in line]

    found: list[str] = []
    assert wait_until(lambda: bool(logged()))
    (line,) = logged()
    assert "RuntimeError: planted fault at " in line and "<string>:2" in line
    assert len(site.queue()) == 1


def test_an_unexpected_error_before_queuing_is_one_line_and_exit_70(
    site: DmaSite, syslog_listener: SyslogListener  # noqa: F811
) -> None:
    """A fault planted before the message is queued: exit 70, one line on stderr, one
    in syslog, no traceback, nothing queued."""
    program = (
        "import sys; import dma.shell.submit as s\n"
        "def broken(*args, **kwargs): raise KeyError('planted')\n"
        "s.submit = broken\n"
        "from dma.shell.main import main; sys.exit(main(['sendmail', *sys.argv[1:]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, "-C", str(site.config), login_name()],
        input=MESSAGE, capture_output=True, env=site.environ, timeout=60, check=False)
    assert done.returncode == 70
    assert b"Traceback" not in done.stderr and done.stderr.count(b"\n") == 1
    assert b"KeyError" in done.stderr
    assert any("internal error: KeyError" in text for _, _, text in syslog_listener.lines())
    assert site.queue() == []


def test_an_error_in_one_item_is_recorded_and_the_run_goes_on(site: DmaSite) -> None:
    """A fault planted in local delivery for one user: that item stays queued with the
    error as its last one (mailq shows it), and the other item is delivered."""
    site.write_config(defer=False)
    site.write_aliases("")
    program = (
        "import sys; import dma.shell.queue_run as q\n"
        "original = q.QueueRun.deliver_local\n"
        "def flaky(self, claim, user):\n"
        "    if b'poison' in open(claim.message_path, 'rb').read():\n"
        "        raise ZeroDivisionError('planted')\n"
        "    return original(self, claim, user)\n"
        "q.QueueRun.deliver_local = flaky\n"
        "from dma.shell.main import main; sys.exit(main(['dma', *sys.argv[1:]]))\n"
    )
    site.write_config()
    poisoned = site.send([login_name()], b"Subject: poison\n\npoison\n")[0]
    site.send([login_name()], MESSAGE)
    site.write_config(defer=False)
    done = subprocess.run([sys.executable, "-c", program, "-C", str(site.config), "-q"],
                          capture_output=True, env=site.environ, timeout=60, check=False)
    assert b"Traceback" not in done.stderr, done.stderr
    assert len(_mbox_messages(site, login_name())) == 1
    (left,) = site.queue()
    assert left["id"] == poisoned
    assert "ZeroDivisionError: planted" in str(left)


def test_mailq_lists_a_latin1_sender_escaped(site: DmaSite) -> None:
    """mailq lists a C dma item with a Latin-1 sender, its octets shown as \\xNN as in
    the log, instead of failing to encode it; -bj lists it too."""
    _write_cdma_item(site, "66aa07.0", LATIN1_SENDER, b"bob@example.org")
    listing = site.run(["-bp"], env={"LC_ALL": "C.UTF-8"})
    assert listing.returncode == 0, listing.stderr
    assert b"From\t: j\\xe9r\\xf4me@example.org\n" in listing.stdout
    (item,) = site.queue()
    assert item["id"] == "66aa07.0"


def test_poison_envelopes_fail_alone_and_nothing_is_sent_twice(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """Items whose envelope our SMTP client refuses (an ENVID of 34 '+', 102 characters
    once xtext-encoded; a C dma Q file with a control character in the sender), queued
    between good items for one pipelining smarthost: over three runs each good message
    arrives once, and each poison item fails alone instead of ending the connection."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING", "DSN")))
    write_remote_config(site, sink.port)
    _write_cdma_item(site, "66bb01.0", b"one@example.org", b"good1@example.org")
    _write_cdma_item(site, "66bb02.0", b"two@example.org", b"poison1@example.org")
    with open(site.spool / "Q66bb02.0", "ab") as q_file:
        q_file.write(b"X-DSN-Envid: " + b"+" * 34 + b"\n")
    _write_cdma_item(site, "66bb03.0", b"three@example.org", b"good2@example.org")
    _write_cdma_item(site, "66bb04.0", b"fo\x01ur@example.org", b"poison2@example.org")
    for _ in range(3):
        done = site.run(["-q"])
        assert b"Traceback" not in done.stderr, done.stderr
    received = [rcpt for arrival in sink.messages for rcpt in arrival.recipients]
    assert sorted(r for r in received if r.startswith("good")) == [
        "good1@example.org", "good2@example.org"]
    assert not any(r.startswith("poison") for r in received)
    left = {item["id"] for item in site.queue()}
    assert "66bb01.0" not in left and "66bb03.0" not in left and "66bb02.0" not in left


def test_a_q_file_that_could_not_be_written_back_is_quarantined(site: DmaSite) -> None:
    """Under LOCALONLY, a Q file whose Sender line is longer than the C dma reads whole
    (found by bench/fuzz.py: the run stopped with exit 70 on every try) is moved to the
    quarantine, and the good item beside it is delivered in the same run."""
    site.write_config("LOCALONLY\n", defer=False)
    _write_cdma_item(site, "66cc01.0", b"a@x.example" * 100, b"r@remote.example")
    _write_cdma_item(site, "66cc02.0", b"root@example.org", login_name().encode())
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    assert len(_mbox_messages(site, login_name())) == 1
    (left,) = site.queue()
    assert left["id"] == "66cc01.0" and left["quarantined"]


def test_smtp_session_with_stdin_closed_is_refused_cleanly(site: DmaSite) -> None:
    """`sendmail -bs <&-` exits 66 with one line, not a traceback or an internal error."""
    argv = " ".join(f"'{w}'" for w in [*command("sendmail"), "-C", str(site.config), "-bs"])
    done = subprocess.run(["sh", "-c", f"{argv} <&-"], capture_output=True, env=site.environ,
                          timeout=60, check=False)
    assert done.returncode == 66
    assert done.stderr.count(b"\n") == 1 and b"it is closed" in done.stderr


def test_latin1_recipient_goes_out_only_where_smtputf8_is_offered(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """A Latin-1 recipient (a C dma Q file, or an alias in Latin-1) is refused for good by
    our client when the server offers no SMTPUTF8 (never sent as 8-bit octets to a
    7-bit server), and sent as its octets with SMTPUTF8 where it is offered."""
    plain = scripted_sink(Script(extensions=("8BITMIME",)))
    write_remote_config(site, plain.port)
    _write_cdma_item(site, "66dd01.0", b"", b"r\xe9mi@example.org")
    done = site.run(["-q", "-v"])
    assert b"Traceback" not in done.stderr, done.stderr
    assert b"5.6.7" in done.stderr
    wire = b"".join(read for log in plain.connections for read in log.reads)
    assert b"r\xe9mi" not in wire
    assert site.queue() == []  # failed for good; the null sender's bounce is dropped
    utf8 = scripted_sink(Script(extensions=("8BITMIME", "SMTPUTF8")))
    write_remote_config(site, utf8.port)
    _write_cdma_item(site, "66dd02.0", b"", b"r\xe9mi@example.org")
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    wire = b"".join(read for log in utf8.connections for read in log.reads)
    assert b"RCPT TO:<r\xe9mi@example.org>" in wire


_BREAK_ONE_HOP = (
    "import sys; import dma.shell.remote as r\n"
    "original = r.RemoteDelivery._deliver_hop\n"
    "def flaky(self, hop, works):\n"
    "    if hop.host == '127.0.0.1':\n"
    "        raise RuntimeError('planted fault on one hop')\n"
    "    return original(self, hop, works)\n"
    "r.RemoteDelivery._deliver_hop = flaky\n"
    "from dma.shell.main import main; sys.exit(main(['dma', *sys.argv[1:]]))\n"
)


def test_a_fault_on_one_hop_leaves_the_other_hops_outcomes_alone(
    site: DmaSite, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """Two next hops worked in one run (address literals on 127.0.0.1 and 127.0.0.2): a
    fault planted on the first defers its item with that error, and the other hop's
    item keeps its own outcome (here the server's 451), not the fault (SPEC 5.1)."""
    port = free_port("127.0.0.1", "127.0.0.2")
    scripted_sink(host="127.0.0.1", port=port)
    scripted_sink(Script(rcpt=lambda _address: "451 4.3.0 try again later"),
                  host="127.0.0.2", port=port)
    write_remote_config(site, port, host="", defer=True)
    (faulty,) = site.send(["a@[127.0.0.1]"], MESSAGE)
    (later,) = site.send(["b@[127.0.0.2]"], MESSAGE)
    done = subprocess.run([sys.executable, "-c", _BREAK_ONE_HOP, "-C", str(site.config), "-q"],
                          capture_output=True, env=site.environ, timeout=60, check=False)
    assert b"Traceback" not in done.stderr, done.stderr
    left = {item["id"]: item["last_error"] for item in site.queue()}
    assert "planted fault on one hop" in left[faulty]
    assert "451" in left[later] and "planted" not in left[later]
