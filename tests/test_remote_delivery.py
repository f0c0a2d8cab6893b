"""Remote delivery end to end: ``sendmail`` and ``dma -q`` against SMTP sinks on loopback.

Each test writes its own dma.conf (SMARTHOST 127.0.0.1, PORT of the sink, TIMEOUT
2s) and looks at what arrived at the sink and what is left in the queue, the Q
files and the sender's mailbox (bounces): exit codes of ``-D``, detached delivery,
per-recipient answers, broken servers, PIPELINING, connection reuse, and SMTP
smuggling (SPEC 3.1, 5.1, 5.3, 5.4, 5.7).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import mailbox
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    answer_by_local_part,
    bounces,
    delivery_status,
    free_port,
    local_login,
    q_fields,
    queued,
    scripted_sink_fixture,
    sender_address,
    wait_until,
    write_remote_config,
)

MESSAGE = b"Subject: remote test\nTo: bob@example.org\n\nfirst line\nsecond line\n"
SinkFactory = Callable[..., AiosmtpdSink]
ScriptedFactory = Callable[..., ScriptedSink]


def _body(content: bytes) -> bytes:
    """The body of a message as it crossed the wire (after the first CRLF CRLF)."""
    _head, separator, body = content.partition(b"\r\n\r\n")
    assert separator, content[:200]
    return body


def test_plain_delivery_to_smarthost_exits_0(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """sendmail -D delivers to the smarthost, exits 0 and leaves nothing in the spool."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    [arrival] = sink.wait_for(1)
    assert arrival.sender == sender_address()
    assert arrival.recipients == ["bob@example.org"]
    assert _body(arrival.content) == b"first line\r\nsecond line\r\n"
    assert b"\r\nSubject: remote test\r\n" in arrival.content
    assert arrival.content.startswith(b"Received: from ")
    assert site.queue() == []
    assert not [name for name in site.spool_names() if name[0] in "QM"]


def test_foreground_deferral_exits_75(site: DmaSite) -> None:
    """-D with nobody listening at the smarthost exits 75; the item stays with its error."""
    write_remote_config(site, free_port())
    before = int(time.time())
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    [item] = site.queue()
    assert item["recipient"] == "bob@example.org"
    assert item["attempts"] == 1
    assert item["next_try"] >= before + 60
    assert "refused" in item["last_error"].lower()
    assert bounces(site) == []


def test_foreground_bounce_exits_69(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """-D exits 69 when the smarthost refuses the only recipient with 550; the bounce is local."""
    sink = aiosmtpd_sink(rcpt=answer_by_local_part)
    write_remote_config(site, sink.port)
    done = site.run(["-D", "perm@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 69, done.stderr.decode()
    assert sink.messages == []
    assert site.queue() == []
    [report] = bounces(site)
    assert delivery_status(report, "perm@example.org")["action"] == "failed"


def test_detached_submission_arrives(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """Without -D sendmail returns at once and a detached process delivers within seconds."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port)
    done = site.run(["bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    [arrival] = sink.wait_for(1, timeout=10)
    assert arrival.recipients == ["bob@example.org"]
    assert wait_until(lambda: site.queue() == [], timeout=10)


def test_per_recipient_answers(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """250, 450 and 550 to three RCPTs: one delivered, one kept for a retry, one bounced."""
    sink = aiosmtpd_sink(rcpt=answer_by_local_part)
    write_remote_config(site, sink.port)
    before = int(time.time())
    done = site.run(
        ["-D", "ok@example.org", "temp@example.org", "perm@example.org"], MESSAGE,
        program="sendmail",
    )
    assert done.returncode == 69, done.stderr.decode()
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["ok@example.org"]
    queue = queued(site)
    assert set(queue) == {"temp@example.org"}
    item = queue["temp@example.org"]
    assert item["attempts"] == 1
    assert item["next_try"] >= before + 60
    assert "450" in item["last_error"]
    fields = q_fields(site, item["id"])
    assert fields["X-Attempts"] == "1"
    assert int(fields["X-Next-Try"]) == item["next_try"]
    assert "450 4.2.1" in fields["X-Last-Error"]
    [report] = bounces(site)
    assert "perm@example.org" in str(report["Subject"]) or report["To"] is not None
    status = delivery_status(report, "perm@example.org")
    assert status["action"] == "failed"
    assert status["status"] == "5.1.1"
    assert status["diagnostic-code"].startswith("smtp; 550")
    assert "no such user here" in status["diagnostic-code"]
    assert "127.0.0.1" in status.get("remote-mta", "")
    assert "dma.test" in status["reporting-mta"]
    assert str(report["To"]).endswith(sender_address())


def test_drop_mid_data_defers_and_keeps_message(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A server that hangs up in the middle of DATA: deferred, the spooled message intact."""
    sink = scripted_sink(Script(drop_in_data=True))
    write_remote_config(site, sink.port, defer=True)
    [item_id] = site.send(["bob@example.org"], MESSAGE)
    spooled = site.message(item_id)
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode()
    assert len(sink.connections) == 1
    assert sink.messages == []
    [item] = site.queue()
    assert item["id"] == item_id
    assert item["attempts"] == 1
    assert "closed" in item["last_error"].lower()
    assert site.message(item_id) == spooled
    assert bounces(site) == []


def test_lost_connection_names_the_server_once(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """X-Last-Error for a connection lost mid-DATA names the server once, not twice."""
    sink = scripted_sink(Script(drop_in_data=True))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    [item] = site.queue()
    assert item["last_error"].count(f"[127.0.0.1]:{sink.port}") == 1, item["last_error"]


def test_stall_after_greeting_defers_quickly(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A server that greets and then says nothing: TIMEOUT 2s defers within a few seconds."""
    sink = scripted_sink(Script(stall=True))
    write_remote_config(site, sink.port, timeout="2s")
    started = time.monotonic()
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail", timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 75, done.stderr.decode()
    assert elapsed < 10
    assert b"".join(sink.connections[0].reads).startswith(b"EHLO dma.test\r\n")
    [item] = site.queue()
    assert "timed out" in item["last_error"]


def test_mail_reply_later_than_timeout_defers(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A MAIL reply that comes after TIMEOUT (2 s here; the sink waits 3 s) defers: the
    doubled wait is for the reply to the final dot only (RFC 5321 4.5.3.2)."""
    sink = scripted_sink(Script(mail_delay=3.0))
    write_remote_config(site, sink.port, timeout="2s")
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail", timeout=30)
    assert done.returncode == 75, done.stderr.decode()
    assert sink.messages == []
    [item] = site.queue()
    assert "timed out" in item["last_error"]


def test_final_dot_reply_may_take_longer_than_timeout(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """The reply to the final dot may take up to twice TIMEOUT (3 s with TIMEOUT 2s) and
    the message is delivered."""
    sink = scripted_sink(Script(data_delay=3.0))
    write_remote_config(site, sink.port, timeout="2s")
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail", timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    assert len(sink.wait_for(1)) == 1


def test_rejected_ehlo_falls_back_to_helo(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A server that refuses EHLO with 502 gets HELO and then the message."""
    sink = scripted_sink(Script(reject_ehlo=True))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["bob@example.org"]
    commands = sink.connections[0].commands
    assert commands[:2] == ["EHLO dma.test", "HELO dma.test"]
    assert site.queue() == []


def test_421_greeting_defers_never_bounces(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """421 at the greeting defers the item (exit 75) and sends no bounce."""
    sink = scripted_sink(Script(greeting="421 4.3.2 too busy, come back later"))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    [item] = site.queue()
    assert "421" in item["last_error"]
    assert bounces(site) == []
    assert sink.messages == []


def test_550_greeting_defers_never_bounces(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A 554 greeting is a host failure: deferred, never bounced (SPEC 5.4)."""
    sink = scripted_sink(Script(greeting="554 5.7.1 no service for you"))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    [item] = site.queue()
    assert "554" in item["last_error"]
    assert bounces(site) == []
    assert sink.connections[0].commands == ["QUIT"]


def test_refused_greeting_reason_survives_hang_up(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A server that refuses at the greeting and hangs up: X-Last-Error keeps the refusal."""
    sink = scripted_sink(Script(greeting="554 5.7.1 no service for you",
                                hang_up_after_refusal=True))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "bob@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    [item] = site.queue()
    assert "554 5.7.1 no service for you" in item["last_error"]
    assert bounces(site) == []


def _reads_for(site: DmaSite, sink: ScriptedSink, recipients: list[str]) -> int:
    """Deliver one message to ``recipients`` through ``sink``; return the sink's recv() count."""
    write_remote_config(site, sink.port)
    done = site.run(["-D", *recipients], MESSAGE, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    sink.wait_for(1)
    [connection] = sink.connections
    assert connection.commands[-1] == "QUIT"
    return len(connection.reads)


def test_pipelining_saves_round_trips(scripted_sink: ScriptedFactory, tmp_path: Path) -> None:
    """With PIPELINING offered, MAIL, RCPTs and DATA come in fewer reads than without it."""
    root = tmp_path
    recipients = [f"r{n}@example.org" for n in range(4)]
    plain_sink = scripted_sink(Script(extensions=("8BITMIME",)))
    (root / "plain").mkdir()
    plain = _reads_for(DmaSite(root / "plain"), plain_sink, recipients)
    piped_sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING")))
    (root / "piped").mkdir()
    piped = _reads_for(DmaSite(root / "piped"), piped_sink, recipients)
    # without PIPELINING each of MAIL, 4 RCPT and DATA needs its own round trip
    assert plain >= piped + 4, (plain, piped)
    batched = [read for read in piped_sink.connections[0].reads if read.startswith(b"MAIL ")]
    assert batched and batched[0].count(b"RCPT TO:") == 4, batched
    assert piped_sink.messages[0].recipients == recipients


def test_one_connection_for_a_queue_run(site: DmaSite, scripted_sink: ScriptedFactory) -> None:
    """Five messages queued with DEFER go out over one connection in one `dma -q`."""
    sink = scripted_sink(Script())
    write_remote_config(site, sink.port, defer=True)
    for n in range(5):
        site.send([f"user{n}@example.org"], MESSAGE)
    assert len(site.queue()) == 5
    assert sink.connections == []
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode()
    arrivals = sink.wait_for(5)
    assert sorted(r for a in arrivals for r in a.recipients) == [
        f"user{n}@example.org" for n in range(5)]
    assert len(sink.connections) == 1
    commands = sink.connections[0].commands
    assert sum(c.startswith("MAIL FROM:") for c in commands) == 5  # one transaction each
    assert commands.count("RSET") == 0  # a finished transaction needs no reset
    assert sum(c.startswith("EHLO") for c in commands) == 1
    assert site.queue() == []


# SPEC 3.1: every line end form becomes one CRLF on the wire; a lone dot is stuffed.
SMUGGLING = (
    b"Subject: smuggling\n\n"
    b"start\n.\r\n"            # LF then a dot line ended by CRLF
    b"MAIL FROM:<evil@example.net>\r\n"
    b"after lf-dot\r.\r"       # a dot line between bare CRs
    b"after cr-dot\r"          # bare CR line end
    b"bare lf\n"
    b"crlf line\r\n"
    b"\r\n.\r\n"               # empty line, then the classic end of data
    b"..two dots\n"
    b".\n"
    b"THE END\n"
)
SMUGGLED_WIRE_BODY = (
    b"start\r\n..\r\n"
    b"MAIL FROM:<evil@example.net>\r\n"
    b"after lf-dot\r\n..\r\n"
    b"after cr-dot\r\n"
    b"bare lf\r\n"
    b"crlf line\r\n"
    b"\r\n..\r\n"
    b"...two dots\r\n"
    b"..\r\n"
    b"THE END\r\n"
)


def test_smuggling_attempts_arrive_as_plain_lines(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Dot lines between bare CR/LF reach the sink stuffed, CRLF only, in one whole message."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING")))
    write_remote_config(site, sink.port)
    done = site.run(["-i", "-D", "bob@example.org"], SMUGGLING, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    [arrival] = sink.wait_for(1)
    time.sleep(0.2)
    assert len(sink.messages) == 1
    wire = arrival.wire
    assert wire.count(b"\r") == wire.count(b"\n") == wire.count(b"\r\n")
    assert _body(wire) == SMUGGLED_WIRE_BODY
    unstuffed = b"".join(
        line[1:] if line.startswith(b".") else line
        for line in SMUGGLED_WIRE_BODY.splitlines(keepends=True)
    )
    assert _body(arrival.content) == unstuffed
    commands = sink.connections[0].commands
    assert commands.count("QUIT") == 1
    [mail] = [c for c in commands if c.upper().startswith("MAIL ")]
    assert mail.startswith(f"MAIL FROM:<{sender_address()}>")


def test_dsn_requests_reach_a_server_that_offers_dsn(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """-N, -R and -V are kept in the queue and sent as NOTIFY, RET and ENVID (RFC 3461)."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "DSN")))
    write_remote_config(site, sink.port, defer=True)
    site.send(["-N", "failure,delay", "-R", "hdrs", "-V", "env+1", "a@example.org"], MESSAGE)
    assert site.run(["-q"]).returncode == 0
    sink.wait_for(1)
    commands = sink.connections[0].commands
    mail = next(c for c in commands if c.startswith("MAIL FROM:"))
    rcpt = next(c for c in commands if c.startswith("RCPT TO:"))
    assert "RET=HDRS" in mail and "ENVID=env+2B1" in mail, mail
    assert rcpt.endswith("NOTIFY=FAILURE,DELAY"), rcpt


def test_dsn_requests_are_not_sent_to_a_server_without_dsn(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Without DSN in the EHLO reply, MAIL and RCPT carry no DSN parameters."""
    sink = scripted_sink(Script(extensions=("8BITMIME",)))
    write_remote_config(site, sink.port, defer=True)
    site.send(["-N", "never", "a@example.org"], MESSAGE)
    assert site.run(["-q"]).returncode == 0
    sink.wait_for(1)
    assert not any("NOTIFY=" in c or "RET=" in c for c in sink.connections[0].commands)


# --- comma lists: one Q file the C dma wrote for `dma 'a@x.org,b@y.org'` (reference 4.2) ----

CDMA_ID = "20ca94.556f80fe16e0"
CDMA_MESSAGE = (
    b"Received: from alice (uid 1000)\n\t(envelope-from alice@dma.test)\n"
    b"\tid 20ca94\n\tby dma.test (DragonFly Mail Agent v0.13);\n"
    b"\tMon, 01 Jan 2024 00:00:00 +0000\n"
    b"Subject: a C dma list\n\nfor several\n"
)


def _cdma_item(site: DmaSite, recipient: str, sender: str | None = None) -> str:
    """Queue one item as the C dma writes it: the M file, and a Q file of exactly three lines."""
    site.spool.mkdir(mode=0o700, exist_ok=True)
    (site.spool / f"M{CDMA_ID}").write_bytes(CDMA_MESSAGE)
    (site.spool / f"Q{CDMA_ID}").write_text(
        f"ID: {CDMA_ID}\nSender: {sender if sender is not None else sender_address()}\n"
        f"Recipient: {recipient}\n")
    return CDMA_ID


def _rcpts(sink: ScriptedSink, connection: int) -> list[str]:
    """The RCPT TO commands of one connection to ``sink``, in order."""
    return [c for c in sink.connections[connection].commands if c.startswith("RCPT TO:")]


def test_comma_list_is_one_rcpt_per_address(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A C dma Recipient list to one next hop goes in one transaction, one RCPT per address."""
    sink = scripted_sink(Script())
    write_remote_config(site, sink.port, defer=True)
    _cdma_item(site, "a@x.org,b@y.org")
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode()
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["a@x.org", "b@y.org"]
    assert _rcpts(sink, 0) == ["RCPT TO:<a@x.org>", "RCPT TO:<b@y.org>"]
    assert _body(arrival.content) == b"for several\r\n"
    assert site.queue() == []
    assert not (site.spool / f"M{CDMA_ID}").exists()


def test_comma_list_keeps_only_the_refused_address(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A 450 for one address of a list: the other is delivered once, the Q file keeps the rest."""
    sink = scripted_sink(Script(rcpt=answer_by_local_part))
    write_remote_config(site, sink.port, defer=True)
    item_id = _cdma_item(site, "ok@x.org,temp@y.org")
    assert site.run(["-q"]).returncode == 0
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["ok@x.org"]
    [item] = site.queue()
    assert item["id"] == item_id and item["attempts"] == 1
    assert "450" in item["last_error"]
    fields = q_fields(site, item_id)
    assert fields["Recipient"] == "temp@y.org"
    assert fields["ID"] == item_id
    assert site.run(["-q"]).returncode == 0  # the next run asks only for what is left
    assert _rcpts(sink, 1) == ["RCPT TO:<temp@y.org>"]
    assert len(sink.messages) == 1
    assert bounces(site) == []


def test_comma_list_with_a_refused_address_bounces_it(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A 550 for one address of a list bounces the item for that address; the other arrives."""
    sink = scripted_sink(Script(rcpt=answer_by_local_part))
    write_remote_config(site, sink.port, defer=True)
    _cdma_item(site, "ok@x.org,perm@y.org")
    assert site.run(["-q"]).returncode == 0
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["ok@x.org"]
    assert site.queue() == []
    [report] = bounces(site)
    status = delivery_status(report, "perm@y.org")
    assert status["action"] == "failed" and status["status"] == "5.1.1"
    assert "ok@x.org" not in status["final-recipient"]


def test_comma_list_bounces_the_refused_address_and_keeps_the_deferred_one(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """550 for one address of a list and 450 for another: the first bounces alone (one
    Final-Recipient of its own), the second stays queued and is delivered later."""
    sink = scripted_sink(Script(rcpt=answer_by_local_part))
    write_remote_config(site, sink.port, defer=True)
    item_id = _cdma_item(site, "perm@x.org,temp@y.org,ok@z.org")
    assert site.run(["-q"]).returncode == 0
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["ok@z.org"]
    [item] = site.queue()
    assert item["id"] == item_id and "450" in item["last_error"]
    assert q_fields(site, item_id)["Recipient"] == "temp@y.org"
    [report] = bounces(site)
    status = delivery_status(report, "perm@x.org")
    assert status["action"] == "failed" and status["status"] == "5.1.1"
    assert status["final-recipient"] == "rfc822; perm@x.org"
    assert report.as_string().count("Final-Recipient:") == 1  # the deferred one waits
    sink.script = Script()  # the server takes it now
    assert site.run(["-q"]).returncode == 0
    assert [m.recipients for m in sink.wait_for(2)] == [["ok@z.org"], ["temp@y.org"]]
    assert site.queue() == []
    assert len(bounces(site)) == 1


def test_comma_list_refused_whole_bounces_each_address_on_its_own(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Every address of a list refused for good: one bounce with a Final-Recipient per
    address (a comma list is no RFC 3464 recipient)."""
    sink = scripted_sink(Script(rcpt=answer_by_local_part))
    write_remote_config(site, sink.port, defer=True)
    _cdma_item(site, "perm@x.org,perm2@y.org")
    assert site.run(["-q"]).returncode == 0
    assert site.queue() == []
    [report] = bounces(site)
    for address in ("perm@x.org", "perm2@y.org"):
        status = delivery_status(report, address)
        assert status["final-recipient"] == f"rfc822; {address}"
        assert status["action"] == "failed"


def test_comma_list_over_two_next_hops(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Each next hop gets its own addresses; one that is down keeps its part, never resending."""
    port = free_port("127.0.0.1", "127.0.0.2")
    first = scripted_sink(Script(), host="127.0.0.1", port=port)
    write_remote_config(site, port, defer=True, host="")
    item_id = _cdma_item(site, "a@[127.0.0.1],b@[127.0.0.2],c@[127.0.0.1]")
    assert site.run(["-q"]).returncode == 0
    [arrival] = first.wait_for(1)
    assert arrival.recipients == ["a@[127.0.0.1]", "c@[127.0.0.1]"]
    [item] = site.queue()
    assert q_fields(site, item_id)["Recipient"] == "b@[127.0.0.2]"
    assert "127.0.0.2" in item["last_error"]
    second = scripted_sink(Script(), host="127.0.0.2", port=port)
    assert site.run(["-q"]).returncode == 0
    [late] = second.wait_for(1)
    assert late.recipients == ["b@[127.0.0.2]"]
    assert len(first.connections) == 1 and len(first.messages) == 1
    assert site.queue() == []


def test_comma_list_with_a_local_name(site: DmaSite, scripted_sink: ScriptedFactory) -> None:
    """A local name in a list is delivered to its mailbox, the remote address to the smarthost."""
    sink = scripted_sink(Script())
    write_remote_config(site, sink.port, defer=True)
    login = local_login()
    _cdma_item(site, f"a@x.org,{login}", sender="alice@example.org")
    assert site.run(["-q"]).returncode == 0
    [arrival] = sink.wait_for(1)
    assert arrival.recipients == ["a@x.org"]
    assert _rcpts(sink, 0) == ["RCPT TO:<a@x.org>"]
    mbox = (site.maildir / login).read_bytes()
    assert mbox.startswith(b"From alice@example.org ") and b"\nfor several\n" in mbox
    assert site.queue() == []


@pytest.mark.parametrize("extensions", [("8BITMIME",), ("8BITMIME", "PIPELINING")],
                         ids=["plain", "pipelining"])
def test_too_many_recipients_go_in_further_transactions_at_once(
    site: DmaSite, scripted_sink: ScriptedFactory, extensions: tuple[str, ...]
) -> None:
    """452 4.5.3 beyond two RCPTs: the rest follow in more transactions on the same connection."""
    sink = scripted_sink(Script(extensions=extensions, max_recipients=2))
    write_remote_config(site, sink.port)
    recipients = [f"r{n}@example.org" for n in range(5)]
    done = site.run(["-D", *recipients], MESSAGE, program="sendmail")
    assert done.returncode == 0, done.stderr.decode()
    arrivals = sink.wait_for(3)
    assert [a.recipients for a in arrivals] == [recipients[:2], recipients[2:4], recipients[4:]]
    assert len(sink.connections) == 1
    assert site.queue() == []


def test_452_without_progress_defers(site: DmaSite, scripted_sink: ScriptedFactory) -> None:
    """452 to every RCPT of a transaction is not retried on the connection: deferred."""
    sink = scripted_sink(Script(max_recipients=0))
    write_remote_config(site, sink.port)
    done = site.run(["-D", "a@example.org", "b@example.org"], MESSAGE, program="sendmail")
    assert done.returncode == 75, done.stderr.decode()
    assert [c for c in sink.connections[0].commands if c.startswith("MAIL")] != []
    assert len([c for c in sink.connections[0].commands if c.startswith("MAIL")]) == 1
    assert all("452" in item["last_error"] for item in site.queue())


@pytest.mark.parametrize("lines", [3, 20_000], ids=["small", "over-64k"])
def test_size_parameter_counts_the_octets_on_the_wire(
    site: DmaSite, scripted_sink: ScriptedFactory, lines: int
) -> None:
    """SIZE= in MAIL FROM is the message as sent, CRLF line ends included (RFC 1870),
    for a message read whole and for one streamed from the spool."""
    sink = scripted_sink(Script(extensions=("SIZE 10000000", "8BITMIME")))
    write_remote_config(site, sink.port)
    body = b"".join(b".line %d of the body\n" % n for n in range(lines))
    done = site.run(["-D", "bob@example.org"], b"Subject: size\n\n" + body)
    assert done.returncode == 0, done.stderr
    (arrival,) = sink.wait_for(1)
    (mail,) = [c for c in sink.connections[0].commands if c.startswith("MAIL FROM:")]
    declared = int(mail.split("SIZE=")[1].split()[0])
    assert declared == len(arrival.content)


def test_bounce_for_a_vanished_local_sender_goes_to_the_postmaster(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A refused message whose sender is a local name that is no user (deleted since)
    bounces to the postmaster (an alias here) instead of waiting in the queue for ever."""
    sink = scripted_sink(Script(rcpt=answer_by_local_part))
    write_remote_config(site, sink.port)
    site.write_aliases(f"postmaster: {local_login()}\n")
    done = site.run(["-D", "-f", "ghost-sender-xyz", "perm@example.org"], MESSAGE)
    assert done.returncode == 69, done.stderr.decode()
    assert b"bounce goes to the postmaster" in done.stderr
    assert site.queue() == []
    box = mailbox.mbox(str(site.maildir / local_login()), create=False)
    try:
        [raw] = [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()
    report = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert delivery_status(report, "perm@example.org")["action"] == "failed"
    assert b"ghost-sender-xyz@" in raw
