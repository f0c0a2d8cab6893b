"""``sendmail -bs`` end to end: real processes speak SMTP on stdin/stdout and the
messages land in the spool (DEFER: nothing is delivered)."""

from __future__ import annotations

import re
import smtplib
import socket
import subprocess
from email.message import EmailMessage

import pytest
from conftest import DmaSite, command, login_name

MAILNAME = "mail.example"
REPLY_LINE = re.compile(rb"[2-5][0-9]{2}[ -][\x20-\x7e]*\r\n")


def session(*lines: bytes) -> bytes:
    """Client lines joined with CRLF."""
    return b"".join(line + b"\r\n" for line in lines)


def reply_codes(stdout: bytes) -> list[int]:
    """The code of each complete reply on stdout; fails on anything that is not a reply."""
    lines = stdout.splitlines(keepends=True)
    for line in lines:
        assert REPLY_LINE.fullmatch(line), line
    return [int(line[:3]) for line in lines if line[3:4] == b" "]


def body_of(message: bytes) -> bytes:
    """The body of a spooled message (after the first empty line)."""
    return message.partition(b"\n\n")[2]


TWO_MESSAGES = session(
    b"EHLO app.example",
    b"MAIL FROM:<alice@example.org>",
    b"RCPT TO:<bob@example.net>",
    b"RCPT TO:<carol@example.com>",
    b"DATA",
    b"Subject: first",
    b"To: bob@example.net",
    b"Bcc: secret@example.com,",
    b"  other-secret@example.com",
    b"",
    b"..starts with a dot",
    b"...two dots",
    b"last line",
    b".",
    b"MAIL FROM:<>",
    b"RCPT TO:<dave@example.net>",
    b"DATA",
    b"Subject: second",
    b"",
    b"second body",
    b".",
    b"QUIT",
)


def test_two_messages_in_one_session_are_queued(site: DmaSite) -> None:
    """A pipelined session with two transactions queues both with their own envelopes."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    done = site.run(["-bs"], TWO_MESSAGES, program="sendmail")
    assert done.returncode == 0, done.stderr
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    items = site.queue()
    envelopes = sorted((item["sender"], item["recipient"]) for item in items)
    assert envelopes == [
        ("", "dave@example.net"),
        ("alice@example.org", "bob@example.net"),
        ("alice@example.org", "carol@example.com"),
    ]
    queued_ids = re.findall(rb"250 2\.0\.0 Ok: queued as (\S+)\r\n", done.stdout)
    assert sorted(queued_ids) == sorted({item["message_id"].encode() for item in items})


def test_message_text_is_unstuffed_and_bcc_is_stripped(site: DmaSite) -> None:
    """The spooled text has leading dots unstuffed, LF line ends and no Bcc: lines."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    site.run(["-bs"], TWO_MESSAGES, program="sendmail")
    by_recipient = {item["recipient"]: item["id"] for item in site.queue()}
    first = site.message(by_recipient["bob@example.net"])
    assert first == site.message(by_recipient["carol@example.com"])
    assert body_of(first) == b".starts with a dot\n..two dots\nlast line\n"
    assert b"Bcc" not in first and b"secret" not in first
    assert b"\r" not in first
    assert b"Subject: first\n" in first
    second = site.message(by_recipient["dave@example.net"])
    assert body_of(second) == b"second body\n"


def test_unknown_local_recipient_is_refused_at_rcpt(site: DmaSite) -> None:
    """An unknown local name gets 550 5.1.1 at RCPT; the message goes to the others."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    site.write_aliases("staff: bob@example.net\n")
    user = login_name().encode()
    done = site.run(
        ["-bs"],
        session(
            b"EHLO app", b"MAIL FROM:<a@example.org>", b"RCPT TO:<nosuchuser-xyz>",
            b"RCPT TO:<staff@" + MAILNAME.encode() + b">", b"RCPT TO:<" + user + b">",
            b"DATA", b"Subject: x", b"", b"hi", b".", b"QUIT",
        ),
        program="sendmail",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith(b"550 5.1.1 ") and b"nosuchuser-xyz" in line for line in lines)
    assert reply_codes(done.stdout)[-2:] == [250, 221]
    assert sorted(item["recipient"] for item in site.queue()) == sorted(
        ["bob@example.net", login_name()]
    )


def test_refused_message_leaves_the_session_open(site: DmaSite) -> None:
    """A message with a NUL byte gets 554 5.6.0 and nothing is queued for it; the next
    message of the same session is queued."""
    done = site.run(
        ["-bs"],
        session(
            b"HELO app", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA",
            b"Subject: bad", b"", b"nul \0 here", b".",
            b"MAIL FROM:<a@example.org>", b"RCPT TO:<c@example.net>", b"DATA",
            b"Subject: good", b"", b"fine", b".", b"QUIT",
        ),
        program="sendmail",
    )
    assert done.returncode == 0, done.stderr
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 354, 554, 250, 250, 354, 250, 221]
    assert b"554 5.6.0 message line 3 contains a NUL byte" in done.stdout
    assert [item["recipient"] for item in site.queue()] == ["c@example.net"]
    assert not [name for name in site.spool_names() if name.startswith("tmp")]


def test_input_ending_inside_a_message_queues_nothing(site: DmaSite) -> None:
    """When stdin ends before the lone dot nothing is queued and the exit status is 75."""
    done = site.run(
        ["-bs"],
        session(b"EHLO app", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA",
                b"Subject: cut", b"", b"half a mess"),
        program="sendmail",
    )
    assert done.returncode == 75
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 354]
    assert site.queue() == []
    assert not [name for name in site.spool_names() if name.startswith(("tmp", "Q", "M"))]


def test_verbose_logs_go_to_stderr_never_stdout(site: DmaSite) -> None:
    """With -v the log lines are on stderr and stdout holds only SMTP replies."""
    done = site.run(["-v", "-bs"], TWO_MESSAGES, program="sendmail")
    assert done.returncode == 0, done.stderr
    reply_codes(done.stdout)
    assert b"queued" in done.stderr


def test_smtplib_can_send_through_sendmail_bs(site: DmaSite) -> None:
    """Python's smtplib, talking over a socket pair to sendmail -bs, queues its messages."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    ours, theirs = socket.socketpair()
    argv = [*command("sendmail"), "-C", str(site.config), "-bs"]
    process = subprocess.Popen(
        argv, stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=site.environ,
        cwd=site.root,
    )
    theirs.close()
    try:
        client = smtplib.SMTP()
        client.sock = ours
        assert client.getreply()[0] == 220
        client.ehlo("app.example")
        assert client.has_extn("pipelining") and client.has_extn("8bitmime")
        message = EmailMessage()
        message["Subject"] = "via smtplib"
        message["To"] = "x@example.net"
        message.set_content(".dot first\nplain\n")
        refused = client.send_message(
            message, from_addr="app@example.org", to_addrs=["x@example.net", "y@example.net"]
        )
        assert refused == {}
        client.quit()
        _, stderr = process.communicate(timeout=30)
    finally:
        ours.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    items = site.queue()
    assert sorted(item["recipient"] for item in items) == ["x@example.net", "y@example.net"]
    assert {item["sender"] for item in items} == {"app@example.org"}
    text = site.message(items[0]["id"])
    assert b"Subject: via smtplib\n" in text
    assert body_of(text).startswith(b".dot first\nplain\n")


def test_without_defer_each_message_starts_a_detached_deliverer(site: DmaSite) -> None:
    """Without DEFER the session still answers at once: the deliverer is detached and does
    not hold stdout open, and the message stays queued (the smarthost is unreachable)."""
    site.write_config(defer=False)
    done = site.run(
        ["-bs"],
        session(b"EHLO app", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA",
                b"Subject: now", b"", b"go", b".", b"QUIT"),
        program="sendmail",
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 354, 250, 221]
    assert [item["recipient"] for item in site.queue()] == ["b@example.net"]


SMUGGLED = session(
    b"MAIL FROM:<boss@example.com>", b"RCPT TO:<victim@example.net>", b"DATA",
    b"Subject: forged", b"", b"wire the money", b".", b"QUIT",
)


@pytest.mark.parametrize(
    ("near_end", "body"),
    [
        (b"\n.\n", b"hi\n.\nMAIL FROM"),
        (b"\n.\r\n", b"hi\n.\nMAIL FROM"),
        (b"\r\n.\n", b"hi\n\nMAIL FROM"),
    ],
)
def test_smtp_smuggling_queues_one_message_holding_the_smuggled_text(
    site: DmaSite, near_end: bytes, body: bytes
) -> None:
    """SMTP smuggling (CVE-2023-51764): a body with LF.LF, LF.CRLF or CRLF.LF before forged
    commands queues one message, from the real sender to the real recipient, whose body holds
    the forged commands as text; the near end is logged."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    wire = session(
        b"EHLO app.example", b"MAIL FROM:<app@example.org>", b"RCPT TO:<user@example.net>",
        b"DATA", b"Subject: hello", b"",
    ) + b"hi" + near_end + SMUGGLED
    done = site.run(["-v", "-bs"], wire, program="sendmail")
    assert done.returncode == 0, done.stderr
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 354, 250, 221]
    items = site.queue()
    assert [(item["sender"], item["recipient"]) for item in items] == [
        ("app@example.org", "user@example.net")
    ]
    assert body_of(site.message(items[0]["id"])) == body + (
        b":<boss@example.com>\nRCPT TO:<victim@example.net>\nDATA\nSubject: forged\n\n"
        b"wire the money\n"
    )
    assert b"bare LF" in done.stderr


def test_an_lf_only_client_is_told_why_its_message_never_ended(site: DmaSite) -> None:
    """A client that ends every line in LF gets its commands answered, but '.' LF does not end
    the data: nothing is queued, the exit status is 75 and the log says why."""
    wire = session(
        b"EHLO app", b"MAIL FROM:<a@example.org>", b"RCPT TO:<b@example.net>", b"DATA",
        b"Subject: lf", b"", b"body", b".", b"QUIT",
    ).replace(b"\r\n", b"\n")
    done = site.run(["-v", "-bs"], wire, program="sendmail")
    assert done.returncode == 75
    assert reply_codes(done.stdout) == [220, 250, 250, 250, 354]
    assert site.queue() == []
    assert b"<CR><LF>.<CR><LF>" in done.stderr
