"""Submission end to end through the real console scripts: what lands in the spool and
what the queue tools show.

The first half holds golden cases where we keep the C dma's behaviour
(reference/dma-behaviour.md sections 3, 4.2, 4.6); the second half has one test per
difference that SPEC makes on purpose.
"""

from __future__ import annotations

import json
import os
import quopri
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DmaSite, command, login_name

from dma.core.version import PRODUCT, VERSION

DATE = r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}"
MAILNAME = "mail.example"


def system_host() -> str:
    """gethostname() cut at the first character dma does not keep (C dma rule)."""
    return re.match(r"[A-Za-z0-9_.-]*", socket.gethostname()).group(0) or "unknown-hostname"


def headers_and_body(message: bytes) -> tuple[list[bytes], bytes]:
    """Split a spooled message at its first empty line into header lines and body."""
    head, _, body = message.partition(b"\n\n")
    return head.split(b"\n"), body


def only_item(site: DmaSite) -> dict[str, object]:
    """The one queued item; fails when there is not exactly one."""
    items = site.queue()
    assert len(items) == 1, items
    return items[0]


# --- golden cases: the C dma's behaviour, kept ------------------------------------------


def test_received_header_has_the_c_dma_form(site: DmaSite) -> None:
    """The M file starts with the C dma's five-line Received header naming user, uid, sender,
    id, mail name, our product and the system host name."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    (item_id,) = site.send(["-f", "alice@example.org", "bob@example.org"], b"Subject: x\n\nhi\n")
    message_id = item_id.rsplit(".", 1)[0]
    text = site.message(item_id).decode()
    pattern = (
        rf"Received: from {re.escape(login_name())} \(uid {os.getuid()}\)\n"
        r"\t\(envelope-from alice@example\.org\)\n"
        rf"\tid {message_id}\n"
        rf"\tby {re.escape(MAILNAME)} \({PRODUCT} {re.escape(VERSION)} on "
        rf"{re.escape(system_host())}\);\n"
        rf"\t{DATE}\n"
        r"Subject: x\n"
    )
    assert re.match(pattern, text), text


def test_date_message_id_and_from_are_added_before_the_blank_line(site: DmaSite) -> None:
    """Missing Date, Message-Id and From are added in that order at the end of the headers."""
    site.write_config(f"MAILNAME {MAILNAME}\n")
    (item_id,) = site.send(["-f", "a@example.org", "b@example.org"], b"Subject: s\n\nbody\n")
    lines, body = headers_and_body(site.message(item_id))
    message_id = item_id.rsplit(".", 1)[0]
    assert lines[5] == b"Subject: s"
    assert re.fullmatch(rf"Date: {DATE}", lines[6].decode())
    assert re.fullmatch(
        rf"Message-Id: <[0-9a-f]+\.{message_id}\.[0-9a-f]+@{re.escape(MAILNAME)}>",
        lines[7].decode(),
    )
    assert lines[8] == b"From: <a@example.org>"
    assert len(lines) == 9
    assert body == b"body\n"


def test_present_date_message_id_and_from_are_kept_and_not_doubled(site: DmaSite) -> None:
    """A message that has Date, Message-Id and From keeps them and gets no second copy."""
    given = (
        b"from: Someone <s@example.org>\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\n"
        b"Message-ID: <given@example.org>\n\nbody\n"
    )
    (item_id,) = site.send(["b@example.org"], given)
    lines, _ = headers_and_body(site.message(item_id))
    assert lines[5:] == given.split(b"\n\n")[0].split(b"\n")


def test_bcc_and_its_continuations_are_removed_without_t(site: DmaSite) -> None:
    """Bcc: lines and their folded continuations never reach the spool, even without -t."""
    message = (
        b"To: a@example.org\nBcc: hidden@example.org,\n\tmore@example.org,\n  last@example.org\n"
        b"Subject: s\n\nBcc: body lines stay\n"
    )
    ids = site.send(["a@example.org"], message)
    assert len(ids) == 1
    text = site.message(ids[0])
    assert b"hidden" not in text and b"more@" not in text and b"last@" not in text
    assert b"To: a@example.org\nSubject: s\n" in text
    assert text.endswith(b"\n\nBcc: body lines stay\n")


def test_bcc_is_removed_with_t_and_its_addresses_are_recipients(site: DmaSite) -> None:
    """With -t, Bcc addresses (continuations included) become recipients and the header goes."""
    message = b"To: a@example.org\nBCC: h1@example.org,\n h2@example.org\nSubject: s\n\nx\n"
    ids = site.send(["-t"], message)
    assert sorted(i["recipient"] for i in site.queue()) == [
        "a@example.org", "h1@example.org", "h2@example.org",
    ]
    for item_id in ids:
        assert b"h1@" not in site.message(item_id) and b"h2@" not in site.message(item_id)


def test_t_adds_header_recipients_to_the_command_line_ones(site: DmaSite) -> None:
    """-t keeps the argv recipients and adds To, Cc and Bcc ones, each address once."""
    message = (
        b'To: A <a@example.org>, "Doe, J" <j@example.org>\nCc: (note) c@example.org\n'
        b"Bcc: argv@example.org\n\nx\n"
    )
    site.send(["-t", "argv@example.org"], message)
    assert [i["recipient"] for i in site.queue()] == [
        "argv@example.org", "a@example.org", "j@example.org", "c@example.org",
    ]


def test_lone_dot_ends_the_input(site: DmaSite) -> None:
    """A line with only a dot ends the message; a dot at the very end without LF does not;
    dots are not unstuffed."""
    (first,) = site.send(["b@example.org"], b"Subject: s\n\n..x\n.\nnot this\n")
    assert site.message(first).endswith(b"\n\n..x\n")
    (second,) = site.send(["b@example.org"], b"Subject: s\n\nlast\n.")
    assert site.message(second).endswith(b"\n\nlast\n.\n")


def test_i_and_oi_keep_reading_after_a_lone_dot(site: DmaSite) -> None:
    """-i and -oi make a lone dot an ordinary line."""
    for flag in ("-i", "-oi"):
        (item_id,) = site.send([flag, "b@example.org"], b"Subject: s\n\n.\nmore\n")
        assert site.message(item_id).endswith(b"\n\n.\nmore\n"), flag


def test_final_line_without_newline_gets_one(site: DmaSite) -> None:
    """A message whose last line has no LF is stored with one."""
    (item_id,) = site.send(["b@example.org"], b"Subject: s\n\nno newline")
    assert site.message(item_id).endswith(b"\n\nno newline\n")


def test_leading_from_lines_are_dropped(site: DmaSite) -> None:
    """Leading mbox separators (From_ and >From_) are dropped; a From_ line in the body stays."""
    message = b"From bob Mon Jan  1 00:00:00 2024\n>From x\nSubject: s\n\nFrom here on\n"
    (item_id,) = site.send(["b@example.org"], message)
    lines, body = headers_and_body(site.message(item_id))
    assert lines[5] == b"Subject: s"
    assert not any(line.startswith((b"From ", b">From ")) for line in lines)
    assert body == b"From here on\n"


def test_queue_file_has_the_c_dma_three_lines(site: DmaSite) -> None:
    """A new Q file is exactly ID, Sender and Recipient, one M hard link per recipient."""
    ids = site.send(["-f", "s@example.org", "a@example.org", "b@example.org"], b"x\n")
    assert len(ids) == 2
    for item_id, recipient in zip(sorted(ids), ("a@example.org", "b@example.org"), strict=True):
        assert site.queue_file(item_id) == (
            f"ID: {item_id}\nSender: s@example.org\nRecipient: {recipient}\n".encode()
        )
    first, second = (os.stat(site.spool / f"M{i}") for i in ids)
    assert (first.st_ino, first.st_nlink) == (second.st_ino, 2)
    assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]+", ids[0])


def test_mailq_text_keeps_the_c_dma_blocks(site: DmaSite) -> None:
    """mailq and -bp print ID/From/To blocks with tab-colon labels separated by --."""
    ids = site.send(["-f", "s@example.org", "a@example.org", "b@example.org"], b"x\n")
    for program, args in (("dma", ["-bp"]), ("mailq", []), ("sendmail", ["-bp"])):
        done = site.run(args, program=program)
        assert done.returncode == 0
        blocks = re.split(r"^--\n", done.stdout.decode(), flags=re.M)
        assert len(blocks) == 2, done.stdout
        total = 2 * os.stat(site.spool / f"M{ids[0]}").st_size
        assert re.search(rf"\n-- 2 items, {total} octets, oldest \d+s\n\Z", blocks[1])
        for block, item_id, recipient in zip(
            blocks, sorted(ids), ("a@example.org", "b@example.org"), strict=True
        ):
            assert block.startswith(
                f"ID\t: {item_id}\nFrom\t: s@example.org\nTo\t: {recipient}\n"
            ), block


def test_empty_queue_says_so(site: DmaSite) -> None:
    """An empty (or not yet created) spool prints the C dma's one line."""
    for program, args in (("dma", ["-bp"]), ("mailq", [])):
        done = site.run(args, program=program)
        assert (done.returncode, done.stdout) == (0, b"Mail queue is empty\n")
    site.spool.mkdir()
    assert site.run(["-bp"]).stdout == b"Mail queue is empty\n"


def test_sendmail_name_and_bq_queue_like_dma(site: DmaSite) -> None:
    """sendmail is the same submission program, and -bq queues."""
    done = site.run(["-bq", "b@example.org"], b"Subject: via sendmail\n\nx\n", program="sendmail")
    assert done.returncode == 0, done.stderr
    (item,) = site.queue()
    assert b"Subject: via sendmail\n" in site.message(str(item["id"]))


# --- differences that SPEC makes on purpose -----------------------------------------------


def test_crlf_input_ends_headers_and_is_stored_with_lf(site: DmaSite) -> None:
    """CRLF lines end the headers at an empty CRLF line, get Date/From added, are stored as
    LF, and a CRLF dot ends the input; a Bcc: in the body is not a header."""
    message = b"Subject: crlf\r\nBcc: h@example.org\r\n\r\nline\r\nBcc: body\r\n.\r\nafter\r\n"
    (item_id,) = site.send(["b@example.org"], message)
    text = site.message(item_id)
    assert b"\r" not in text
    lines, body = headers_and_body(text)
    assert lines[5] == b"Subject: crlf"
    assert any(line.startswith(b"Date: ") for line in lines)
    assert any(line.startswith(b"From: ") for line in lines)
    assert b"h@example.org" not in text
    assert body == b"line\nBcc: body\n"


def test_bcc_after_a_malformed_header_line_is_removed(site: DmaSite) -> None:
    """A line that is no header ends the header block for readers (our fields and a blank
    line go before it), but a Bcc after it, before the first empty line, is still
    removed, and the malformed line is kept as it is."""
    message = b"Subject: a\nbogus line\nBcc: secret@example.org,\n more@example.org\n\nbody\n"
    (item_id,) = site.send(["b@example.org"], message)
    text = site.message(item_id)
    assert b"secret@" not in text and b"more@" not in text
    lines, body = headers_and_body(text)
    assert lines[5] == b"Subject: a"
    assert [line.split(b":")[0] for line in lines[6:]] == [b"Date", b"Message-Id", b"From"]
    assert body == b"bogus line\n\nbody\n"


def test_long_line_after_a_malformed_header_line_is_reencoded_as_body(site: DmaSite) -> None:
    """A long line after a malformed one is body: quoted-printable that decodes back
    exactly, not folded like a header."""
    import email
    import email.policy

    long_line = b"a" * 3000
    (item_id,) = site.send(["b@example.org"], b"Subject: x\nplain text\n" + long_line + b"\nend\n")
    text = site.message(item_id)
    assert all(len(line) <= 998 for line in text.split(b"\n"))
    parsed = email.message_from_bytes(text, policy=email.policy.default)
    assert parsed.get_payload(decode=True) == b"plain text\n" + long_line + b"\nend\n"


def test_t_reads_to_after_a_malformed_header_line(site: DmaSite) -> None:
    """-t takes To:, Cc: and Bcc: from anywhere before the first empty line."""
    message = (
        b"Subject: a\nbogus line\nTo: a@example.org\nBcc: h@example.org\n\nTo: no@example.org\n"
    )
    site.send(["-t"], message)
    assert [i["recipient"] for i in site.queue()] == ["a@example.org", "h@example.org"]


def test_plain_text_without_headers_gets_headers_and_a_blank_line(site: DmaSite) -> None:
    """Input whose first line is no header (cron output) gets our headers, then a blank line,
    then the text unchanged, even when a later line looks like a header."""
    (item_id,) = site.send(["b@example.org"], b"hello\nBcc: stays@example.org\n\nend\n")
    lines, body = headers_and_body(site.message(item_id))
    assert [line.split(b":")[0] for line in lines[5:]] == [b"Date", b"Message-Id", b"From"]
    assert body == b"hello\nBcc: stays@example.org\n\nend\n"


def test_header_block_of_several_mib_without_a_blank_line_is_accepted(site: DmaSite) -> None:
    """Three MiB of key: value lines and no blank line (cron output) are queued whole, with
    Date, Message-Id and From added after them; a Bcc at the very end is still removed."""
    lines = b"".join(b"key%06d: value %d\n" % (n, n) for n in range(150_000))
    assert len(lines) > 3 << 20
    (item_id,) = site.send(["b@example.org"], lines + b"Bcc: late@example.org\n")
    text = site.message(item_id)
    assert b"late@" not in text
    head, _, body = text.partition(b"\n\n")
    assert body == b""
    assert lines in text
    added = head.split(b"\n")[-3:]
    assert [line.split(b":")[0] for line in added] == [b"Date", b"Message-Id", b"From"]


def test_header_field_over_a_mib_is_refused_naming_its_line(site: DmaSite) -> None:
    """A single header line over the per-field bound exits 65 naming its line."""
    message = b"Subject: s\nX-Huge: " + b"word " * 300_000 + b"\n\nbody\n"
    done = site.run(["b@example.org"], message)
    assert done.returncode == 65, done.stderr
    assert b"message line 2" in done.stderr
    assert site.queue() == []


def test_bare_cr_ends_a_line(site: DmaSite) -> None:
    """A bare CR is a line end too, stored as LF."""
    (item_id,) = site.send(["b@example.org"], b"Subject: cr\r\rone\rtwo\r")
    _, body = headers_and_body(site.message(item_id))
    assert body == b"one\ntwo\n"


def test_long_body_line_is_reencoded_without_loss(site: DmaSite) -> None:
    """A 5000-octet body line is accepted, quoted-printable encoded, and decodes back."""
    long_line = bytes(range(33, 127)) * 53  # 4982 printable octets, '=' among them
    long_line = long_line[:5000] + b"x" * (5000 - len(long_line))
    (item_id,) = site.send(["b@example.org"], b"Subject: long\n\nshort\n" + long_line + b"\nend\n")
    text = site.message(item_id)
    assert max(len(line) for line in text.split(b"\n")) <= 998
    lines, body = headers_and_body(text)
    assert b"Content-Transfer-Encoding: quoted-printable" in lines
    assert quopri.decodestring(body) == b"short\n" + long_line + b"\nend\n"


@pytest.mark.parametrize(("octets", "reencoded"), [(998, False), (999, True)])
def test_a_long_line_deep_in_a_big_body_is_found(
    site: DmaSite, octets: int, reencoded: bool
) -> None:
    """A body line over 998 octets among 300 KiB of short lines, past the first 64 KiB read,
    is re-encoded; one of exactly 998 octets is stored as it came."""
    short = b"The quick brown fox jumps over the lazy dog.\n" * 7000
    body = short[:200_001] + b"\n" + b"y" * octets + b"\n" + short[:100_000] + b"\n"
    (item_id,) = site.send(["b@example.org"], b"Subject: big\n\n" + body)
    lines, stored = headers_and_body(site.message(item_id))
    assert (b"Content-Transfer-Encoding: quoted-printable" in lines) is reencoded
    assert (quopri.decodestring(stored) if reencoded else stored) == body


# Runs argv with our stdin and prints the peak RSS (KiB) of that child alone.  The child is
# started from this small process, not from pytest: a child started by vfork counts its
# parent's memory until it execs.
_PEAK_RSS = (
    "import resource, subprocess, sys; "
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(done.returncode)"
)


def test_a_20_mb_single_line_body_streams_in_bounded_memory(site: DmaSite, tmp_path: Path) -> None:
    """A 20 MB body on one line is queued by a dma process whose peak RSS stays under 60 MB,
    and the quoted-printable body in the spool decodes back to the same octets."""
    unit = bytes(range(256)).replace(b"\n", b"").replace(b"\r", b"").replace(b"\0", b"") * 256
    line = unit * (20_000_000 // len(unit))
    source = tmp_path / "big-message"
    source.write_bytes(b"Subject: one long line\n\n" + line + b"\n")
    with source.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, *command("dma"), "-C", str(site.config),
             "b@example.org"],
            stdin=stdin, capture_output=True, env=site.environ, cwd=site.root, timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    peak_mb = int(done.stdout) / 1024  # ru_maxrss is in KiB on Linux
    assert peak_mb < 60, f"peak RSS {peak_mb:.1f} MB"
    (item,) = site.queue()
    text = site.message(str(item["id"]))
    assert max(len(piece) for piece in text.split(b"\n")) <= 76
    lines, body = headers_and_body(text)
    assert b"Content-Transfer-Encoding: quoted-printable" in lines
    assert quopri.decodestring(body) == line + b"\n"


def test_long_header_line_is_folded_without_loss(site: DmaSite) -> None:
    """A Subject longer than 998 octets is folded at blanks; unfolding gives it back."""
    subject = " ".join(f"word{n}" for n in range(900))
    (item_id,) = site.send(["b@example.org"], f"Subject: {subject}\n\nx\n".encode())
    text = site.message(item_id).decode()
    assert max(len(line) for line in text.split("\n")) <= 998
    folded = re.search(r"^Subject: .*?(?=\n\S)", text, re.M | re.S)
    assert folded is not None
    assert re.sub(r"\n[ \t]", " ", folded.group(0)).split() == ["Subject:", *subject.split()]


def test_f_with_angle_brackets_is_unwrapped(site: DmaSite) -> None:
    """-f '<a@b>' gives the envelope sender a@b, not <a@b>."""
    for flag in ("-f", "-r"):
        site.send([flag, "<a@example.org>", "b@example.org"], b"x\n")
    for item in site.queue():
        assert item["sender"] == "a@example.org"
        assert b"\nFrom: <a@example.org>\n" in site.message(str(item["id"]))


def test_empty_f_gives_the_null_sender(site: DmaSite) -> None:
    """-f '' and -f '<>' queue with an empty Sender, listed as <> by mailq."""
    for value in ("", "<>"):
        (item_id,) = site.send(["-f", value, "b@example.org"], b"x\n")
        assert b"\nSender: \n" in site.queue_file(item_id)
        assert b"(envelope-from <>)" in site.message(item_id)
    assert {i["sender"] for i in site.queue()} == {""}
    assert site.run(["-bp"]).stdout.decode().count("From\t: <>\n") == 2


def test_F_sets_the_from_display_name(site: DmaSite) -> None:
    """-F puts the full name in the From header that dma adds, quoted when needed."""
    site.send(["-F", "Jane Doe", "-f", "j@example.org", "b@example.org"], b"x\n")
    site.send(["-FDoe, Jane", "-f", "j@example.org", "b@example.org"], b"x\n")
    first, second = (site.message(str(i["id"])) for i in site.queue())
    assert b"\nFrom: Jane Doe <j@example.org>\n" in first
    assert b'\nFrom: "Doe, Jane" <j@example.org>\n' in second


def test_comma_separated_and_bracketed_recipients_queue_one_item_each(site: DmaSite) -> None:
    """Each argument is an address list, as for sendmail: 'a,b' and '<c>' queue one item per
    recipient (the C dma queued 'a,b' as one), a repeated address once."""
    args = ["a@example.org,b@example.org", "<c@example.org>", "Dee <d@example.org>, a@example.org"]
    ids = site.send(args, b"x\n")
    assert [i["recipient"] for i in site.queue()] == [
        "a@example.org", "b@example.org", "c@example.org", "d@example.org",
    ]
    for item_id in ids:
        assert site.queue_file(item_id).count(b"Recipient: ") == 1
        assert b"," not in site.queue_file(item_id)


def test_alias_listing_itself_reaches_its_own_mailbox(site: DmaSite) -> None:
    """`me: me, ops` delivers to me's mailbox and to everything ops expands to."""
    me = login_name()
    site.write_aliases(f"{me}: {me}, ops\nops: o1@example.org, o2@example.org\n")
    site.send([me], b"x\n")
    assert sorted(i["recipient"] for i in site.queue()) == sorted(
        [me, "o1@example.org", "o2@example.org"]
    )


def test_aliases_accept_blanks_as_separators(site: DmaSite) -> None:
    """Destinations may be separated by blanks, commas or both, across continuation lines."""
    site.write_aliases(
        "# team\nteam: a@example.org b@example.org,c@example.org\n"
        "\td@example.org\n\nTwo: e@example.org , f@example.org\n"
    )
    site.send(["TEAM", "two"], b"x\n")
    assert [i["recipient"] for i in site.queue()] == [
        f"{c}@example.org" for c in "abcdef"
    ]


def test_secure_key_is_accepted(site: DmaSite) -> None:
    """SECURE, the manual's placeholder, is accepted and the message is queued."""
    site.write_config("SECURE\n")
    assert len(site.send(["b@example.org"], b"x\n")) == 1


def test_unknown_key_names_the_closest_key(site: DmaSite) -> None:
    """A misspelt key is refused (78) with file:line and the key it probably meant."""
    config = site.write_config("SMARTHOTS mx.example.org\n")
    done = site.run(["b@example.org"], b"x\n")
    assert done.returncode == 78
    line = config.read_text().splitlines().index("SMARTHOTS mx.example.org") + 1
    assert f"{config}:{line}:".encode() in done.stderr
    assert b"SMARTHOTS" in done.stderr and b"SMARTHOST" in done.stderr
    assert site.spool_names() == set()


def test_mailq_is_sorted_by_arrival_with_age_size_and_summary(site: DmaSite) -> None:
    """Items are listed oldest first by Q mtime, each with age and size, then a summary."""
    ids = [site.send([f"r{n}@example.org"], b"x" * n + b"\n")[0] for n in range(3)]
    now = time.time()
    ages = {ids[0]: 60, ids[1]: 7200, ids[2]: 3 * 86400}
    for item_id, age in ages.items():
        os.utime(site.spool / f"Q{item_id}", (now - age, now - age))
    done = site.run(["-bp"])
    text = done.stdout.decode()
    listed = re.findall(r"^ID\t: (\S+)$", text, re.M)
    assert listed == [ids[2], ids[1], ids[0]]
    sizes = [os.stat(site.spool / f"M{i}").st_size for i in listed]
    assert re.findall(r"^Size\t: (\d+)$", text, re.M) == [str(s) for s in sizes]
    shown = re.findall(r"^Age\t: (\S+)$", text, re.M)
    for age, expected in zip(shown, ("3d", "2h", "1m"), strict=True):
        assert re.fullmatch(rf"{expected}(\d+s)?", age), shown  # seconds pass while we run
    assert re.search(rf"\n-- 3 items, {sum(sizes)} octets, oldest 3d(\d+s)?\n\Z", text)


def test_bj_prints_one_json_object_per_item(site: DmaSite) -> None:
    """-bj (and mailq -j) print one JSON line per item with id, sender, recipient and size."""
    ids = site.send(["-f", "s@example.org", "a@example.org", "b@example.org"], b"x\n")
    for program, args in (("dma", ["-bj"]), ("mailq", ["-j"])):
        done = site.run(args, program=program)
        records = [json.loads(line) for line in done.stdout.decode().splitlines()]
        assert [r["id"] for r in records] == sorted(ids)
        for record in records:
            assert record["sender"] == "s@example.org"
            assert record["message_id"] == ids[0].rsplit(".", 1)[0]
            assert record["size"] == os.stat(site.spool / f"M{record['id']}").st_size
            assert record["locked"] is False and record["attempts"] == 0
        assert [r["recipient"] for r in records] == ["a@example.org", "b@example.org"]
    site.run(["-Qd", "ALL"])
    assert site.run(["-bj"]).stdout == b""


def test_qd_deletes_one_item_a_message_or_all(site: DmaSite) -> None:
    """-Qd ID removes that item's Q and M, -Qd MESSAGEID all its items, -Qd ALL the rest."""
    first = site.send(["a@example.org", "b@example.org"], b"x\n")
    second = site.send(["c@example.org", "d@example.org"], b"y\n")
    third = site.send(["e@example.org"], b"z\n")
    done = site.run(["-Qd", first[0]])
    assert done.returncode == 0 and f"{first[0]}: deleted".encode() in done.stdout
    assert {f"Q{first[0]}", f"M{first[0]}"}.isdisjoint(site.spool_names())
    assert len(site.queue()) == 4
    site.run(["-Qd", second[0].rsplit(".", 1)[0]])
    assert [i["id"] for i in site.queue()] == [first[1], *third]
    done = site.run(["-Qd", "ALL"])
    assert done.returncode == 0
    assert site.spool_names() == set()


def test_newaliases_reports_the_aliases_file(site: DmaSite) -> None:
    """newaliases (and -bi) parse the aliases file, report its entries and refused
    targets, and exit 65 because mail to the refused alias would fail."""
    site.write_aliases("a: b@example.org\nc: |/bin/true\nd: a\n")
    for program, args in (("newaliases", []), ("dma", ["-bi"])):
        done = site.run(args, program=program)
        assert done.returncode == 65
        assert f"{site.aliases}: 3 aliases, 1 problems".encode() in done.stdout
        assert b"|/bin/true" in done.stderr and b"refused" in done.stderr


def test_newaliases_finds_loops_and_unknown_names(site: DmaSite) -> None:
    """newaliases expands every alias: a loop and a name that is neither alias nor user are
    reported with file:line, and a clean file exits 0."""
    me = login_name()
    site.write_aliases(f"a: b\nb: a\nteam: {me}, ghost-user-xyz\nok: {me}, x@example.org\n")
    done = site.run([], program="newaliases")
    assert done.returncode == 65
    errors = done.stderr.decode()
    assert "alias loop: a -> b -> a" in errors and f"{site.aliases}:2" in errors
    assert "ghost-user-xyz" in errors and f"{site.aliases}:3" in errors
    assert "'ok'" not in errors
    site.write_aliases(f"root: {me}\nok: {me}, x@example.org\n*: {me}\n")
    done = site.run([], program="newaliases")
    assert done.returncode == 0, done.stderr
    assert f"{site.aliases}: 3 aliases, 0 problems".encode() in done.stdout


def test_newaliases_without_a_file_says_so(site: DmaSite) -> None:
    """newaliases with no aliases file says that no aliases are defined."""
    done = site.run([], program="newaliases")
    assert done.returncode == 0
    assert b"does not exist" in done.stdout


def test_bv_prints_routing_and_queues_nothing(site: DmaSite) -> None:
    """-bv shows each recipient's expansion and route, and spools nothing."""
    me = login_name()
    site.write_aliases(f"team: {me}, x@example.org\n")
    site.write_config("SMARTHOST relay.example.net\nPORT 587\n")
    done = site.run(["-bv", "team", "y@example.com"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines == [
        f"team: {me}: local mailbox {site.maildir / me}",
        "team: x@example.org: remote via smarthost relay.example.net port 587",
        "y@example.com: y@example.com: remote via smarthost relay.example.net port 587",
    ]
    assert site.spool_names() == set()


def test_bv_reads_each_argument_as_an_address_list(site: DmaSite) -> None:
    """-bv splits `a@x,b@y` and unwraps `<a@x>` as a submission would."""
    site.write_config("SMARTHOST relay.example.net\n")
    done = site.run(["-bv", "a@example.org,<b@example.org>", "Carol <c@example.org>"])
    assert done.returncode == 0, done.stderr
    assert [line.split(": ")[0] for line in done.stdout.decode().splitlines()] == [
        "a@example.org", "b@example.org", "c@example.org"]


def test_q_cleans_old_orphans_and_keeps_the_rest(site: DmaSite) -> None:
    """-q removes tmp files, Q without M and M without Q older than an hour, nothing else
    (the item itself meets the dead smarthost and stays queued)."""
    (item_id,) = site.send(["b@example.org"], b"x\n")
    orphans = ["tmp_0123456789abcdef", "Qabc.1", "Mdef.2"]
    young = ["tmp_fedcba9876543210", "Q123.1", "M456.2"]
    for name in orphans + young:
        (site.spool / name).write_bytes(b"ID: abc.1\nSender: \nRecipient: r@x\n")
    old = time.time() - 7200
    for name in [*orphans, f"Q{item_id}", f"M{item_id}"]:
        os.utime(site.spool / name, (old, old))
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    assert site.spool_names() == {f"Q{item_id}", f"M{item_id}", *young}
    assert [i["id"] for i in site.queue()] == [item_id]


def test_one_duplicate_rule_for_arguments_and_headers(site: DmaSite) -> None:
    """Recipients are de-duplicated by one rule whether they come from arguments or from
    -t headers: a remote local part keeps its case (Bob@ and bob@ are two mailboxes,
    RFC 5321), a local name and a domain do not."""
    user = login_name()
    both = site.send(["Bob@example.org", "bob@EXAMPLE.org", user, user.upper()],
                     b"Subject: args\n\nx\n")
    mixed = site.send(["-t", "bob@example.org", user],
                      f"To: Bob@example.org, bob@Example.ORG, {user.upper()}\n"
                      "Subject: -t\n\nx\n".encode())
    assert len(both) == len(mixed) == 3
