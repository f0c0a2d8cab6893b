"""RFC 3464 bounces: status codes, expiry, and the multipart/report layout (SPEC 5.7)."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections.abc import Iterator, Sequence
from email.message import EmailMessage, Message

import pytest

from dma.core.bounce import (
    BounceContext,
    BoundaryClash,
    Failure,
    boundary_is_safe,
    build_bounce,
    expiry_failure,
    status_from_reply,
)
from dma.core.errors import SoftwareError

CONTEXT = BounceContext(
    mailname="mail.example.org",
    queue_id="1a2b3c.0",
    arrival_date="Tue, 25 Nov 2025 04:00:00 +0000",
    date="Tue, 25 Nov 2025 05:00:00 +0000",
    message_id="<1a2b3c.bounce@mail.example.org>",
    boundary="=_dma_7f3a9c",
    original_sender="alice@example.org",
    full=False,
)
ORIGINAL = (
    b"Received: from alice (uid 1000)\n"
    b"\t(envelope-from alice@example.org)\n"
    b"\tid 1a2b3c by mail.example.org (pydma 0.1.0)\n"
    b"From: Alice <alice@example.org>\n"
    b"To: bob@example.com, carol@example.net\n"
    b"Subject: lunch\n"
    b"\n"
    b"Shall we meet at noon?\n"
    b"\n"
    b"-- Alice\n"
)
REJECTED = Failure(
    recipient="bob@example.com",
    status="5.1.1",
    diagnostic="smtp; 550 5.1.1 <bob@example.com>: user unknown",
    remote_mta="mx.example.com",
    reason="The mail server refused the recipient.",
)
LOCAL = Failure(
    recipient="carol@example.net",
    status="5.0.0",
    diagnostic=None,
    remote_mta=None,
    reason="The local mailbox could not be written.",
)


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _bounce(
    failures: Sequence[Failure] = (REJECTED,), *, original: bytes = ORIGINAL, **changes: object
) -> bytes:
    context = dataclasses.replace(CONTEXT, **changes)  # type: ignore[arg-type]
    return b"".join(build_bounce(_lines(original), failures, context))


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def _report_blocks(message: EmailMessage) -> list[Message]:
    parts = message.get_payload()
    assert isinstance(parts, list)
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def test_top_level_headers() -> None:
    """The bounce is a multipart/report from MAILER-DAEMON at the mail name to the sender."""
    data = _bounce()
    assert b"\nTo: <alice@example.org>\n" in data
    message = _parse(data)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mail.example.org>"
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["Date"] == CONTEXT.date
    assert message["Message-Id"] == CONTEXT.message_id
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["MIME-Version"] == "1.0"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message.get_boundary() == CONTEXT.boundary
    assert not message.defects


def test_three_parts_in_rfc_3464_order() -> None:
    """The report holds a text/plain explanation, a delivery-status and the original's headers."""
    parts = _parse(_bounce()).get_payload()
    assert isinstance(parts, list)
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]


def test_explanation_names_each_recipient_and_why() -> None:
    """The readable part names every failed recipient with its reason and the server's reply."""
    parts = _parse(_bounce((REJECTED, LOCAL))).get_payload()
    assert isinstance(parts, list)
    text = parts[0].get_content()
    assert "<bob@example.com>" in text
    assert "The mail server refused the recipient." in text
    assert "mx.example.com said: 550 5.1.1 <bob@example.com>: user unknown" in text
    assert "<carol@example.net>" in text
    assert "The local mailbox could not be written." in text
    assert "1a2b3c.0" in text


def test_delivery_status_fields_per_message_and_recipient() -> None:
    """The report has the per-message block and one block per failed recipient with its fields."""
    blocks = _report_blocks(_parse(_bounce((REJECTED, LOCAL))))
    assert len(blocks) == 3
    head, bob, carol = blocks
    assert head["Reporting-MTA"] == "dns; mail.example.org"
    assert head["X-Queue-ID"] == "1a2b3c.0"
    assert head["Arrival-Date"] == CONTEXT.arrival_date
    assert bob["Final-Recipient"] == "rfc822; bob@example.com"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Remote-MTA"] == "dns; mx.example.com"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@example.com>: user unknown"
    assert carol["Final-Recipient"] == "rfc822; carol@example.net"
    assert carol["Status"] == "5.0.0"
    assert "Remote-MTA" not in carol
    assert "Diagnostic-Code" not in carol


def test_headers_only_by_default() -> None:
    """Without FULLBOUNCE part 3 is the original's header block and nothing of its body."""
    data = _bounce()
    parts = _parse(data).get_payload()
    assert isinstance(parts, list)
    headers = parts[2].get_content()
    assert "Subject: lunch" in headers
    assert "\tid 1a2b3c by mail.example.org (pydma 0.1.0)" in headers
    assert b"Shall we meet" not in data
    assert b"-- Alice" not in data


def test_fullbounce_attaches_the_whole_message() -> None:
    """With FULLBOUNCE part 3 is message/rfc822 holding the original's headers and exact body."""
    parts = _parse(_bounce(full=True)).get_payload()
    assert isinstance(parts, list)
    assert parts[2].get_content_type() == "message/rfc822"
    inner = parts[2].get_payload()[0]
    assert inner["Subject"] == "lunch"
    assert inner.get_payload() == "Shall we meet at noon?\n\n-- Alice\n"


def test_headers_only_stops_reading_at_the_header_end() -> None:
    """Without FULLBOUNCE the original is not read past its first empty line."""

    def original() -> Iterator[bytes]:
        yield b"Subject: x\n"
        yield b"\n"
        raise AssertionError("read past the headers")

    out = b"".join(build_bounce(original(), (REJECTED,), CONTEXT))
    assert b"Subject: x\n" in out


def test_original_is_not_read_before_iterating() -> None:
    """build_bounce reads nothing of the original until its output is consumed."""
    consumed: list[bytes] = []

    def original() -> Iterator[bytes]:
        consumed.append(b"x")
        yield b"Subject: x\n"

    lines = build_bounce(original(), (REJECTED,), CONTEXT)
    assert consumed == []
    b"".join(lines)
    assert consumed == [b"x"]


def test_chunks_need_not_be_lines_and_crlf_becomes_lf() -> None:
    """The original may come in arbitrary chunks with CRLF ends; part 3 gets its LF lines."""
    chunks = [b"Subject: spl", b"it\r\nX-A: 1\r", b"\n\r\nbody\r\n"]
    out = b"".join(build_bounce(chunks, (REJECTED,), CONTEXT))
    assert b"Subject: split\nX-A: 1\n\n--" in out
    assert b"\r" not in out


@pytest.mark.parametrize(
    ("code", "enhanced", "expected"),
    [
        (550, None, "5.0.0"),
        (550, "5.1.1", "5.1.1"),
        (552, None, "5.2.2"),
        (552, "5.3.4", "5.3.4"),
        (554, None, "5.0.0"),
        (554, "5.7.1", "5.7.1"),
        (553, None, "5.1.3"),
        (550, " 5.1.10 ", "5.1.10"),
        (550, "5.1", "5.0.0"),
        (550, "user unknown", "5.0.0"),
        (550, "6.1.1", "5.0.0"),
        (599, None, "5.0.0"),
    ],
)
def test_permanent_status_from_reply(code: int, enhanced: str | None, expected: str) -> None:
    """A permanent failure takes the server's enhanced code when well formed, else maps the code."""
    assert status_from_reply(code, enhanced, permanent=True) == expected


def test_status_class_follows_what_we_did() -> None:
    """The class digit says permanent (5) or temporary (4), whatever the server's digit was."""
    assert status_from_reply(452, None, permanent=False) == "4.3.1"
    assert status_from_reply(452, "4.2.2", permanent=True) == "5.2.2"
    assert status_from_reply(550, "5.1.1", permanent=False) == "4.1.1"
    assert status_from_reply(421, None, permanent=False) == "4.3.2"


def test_expiry_failure_reports_4_4_7_with_action_failed() -> None:
    """An expired recipient bounces with Status 4.4.7, Action failed and the last SMTP error."""
    failure = expiry_failure("bob@example.com", "451 4.3.0 try again later", 432000)
    assert failure.status == "4.4.7"
    assert failure.diagnostic == "smtp; 451 4.3.0 try again later"
    assert "5d" in failure.reason
    (_, block) = _report_blocks(_parse(_bounce((failure,))))
    assert block["Action"] == "failed"
    assert block["Status"] == "4.4.7"
    assert block["Diagnostic-Code"] == "smtp; 451 4.3.0 try again later"


@pytest.mark.parametrize(
    ("last_error", "diagnostic"),
    [
        (None, None),
        ("", None),
        ("  \n ", None),
        ("DNS lookup failure: host x not found", "X-Dma; DNS lookup failure: host x not found"),
        ("smtp; 450 busy", "smtp; 450 busy"),
        ("421\nclosing", "smtp; 421 closing"),
    ],
)
def test_expiry_diagnostic_is_typed_by_the_last_error(
    last_error: str | None, diagnostic: str | None
) -> None:
    """The last error becomes an smtp or X-Dma Diagnostic-Code on one line, or none at all."""
    assert expiry_failure("r@x", last_error, 3600).diagnostic == diagnostic


def test_recipient_with_line_breaks_cannot_inject_fields() -> None:
    """CR/LF in a recipient, reason or diagnostic stays inside its own field as spaces."""
    evil = Failure(
        recipient="bob@example.com\r\nAction: delivered\n\nFinal-Recipient: rfc822; x@y",
        status="5.1.1",
        diagnostic="smtp; 550 no\r\nX-Injected: yes",
        remote_mta="mx\nX-Host: evil",
        reason="bad\n\n--=_dma_7f3 and more",
    )
    data = _bounce((evil,), original_sender="alice@example.org\nBcc: eve@x")
    assert b"\nTo: <alice@example.org Bcc: eve@x>\n" in data
    message = _parse(data)
    assert "Bcc" not in message
    blocks = _report_blocks(message)
    assert len(blocks) == 2
    assert sorted(blocks[1].keys()) == sorted(
        ["Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code"]
    )
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Diagnostic-Code"] == "smtp; 550 no X-Injected: yes"


def test_non_ascii_recipient_is_escaped_in_the_report_only() -> None:
    """A UTF-8 recipient is RFC 6533 xtext in the report and readable in the explanation."""
    failure = dataclasses.replace(REJECTED, recipient="jörg+x@exämple.com")
    message = _parse(_bounce((failure,)))
    (_, block) = _report_blocks(message)
    assert block["Final-Recipient"] == "utf-8; j\\x{F6}rg\\x{2B}x@ex\\x{E4}mple.com"
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert "<jörg+x@exämple.com>" in parts[0].get_content()


def test_long_original_lines_are_split_and_diagnostics_folded() -> None:
    """No output line exceeds 998 octets even for an over-long original line or reply."""
    long_header = b"X-Long: " + b"a" * 2500 + b"\n"
    failure = dataclasses.replace(REJECTED, diagnostic="smtp; 550 " + "word " * 400)
    original = long_header + b"Subject: s\n\n" + b"b" * 3000 + b"\n"
    data = _bounce((failure,), original=original, full=True)
    assert max(len(line.rstrip(b"\n")) for line in _lines(data)) <= 998
    parts = _parse(data).get_payload()
    assert isinstance(parts, list)
    inner = parts[2].get_payload()[0]
    assert inner["Subject"] == "s"
    assert inner.get_payload().replace("\n", "") == "b" * 3000


def test_boundary_in_the_original_is_detected() -> None:
    """An original containing the boundary makes boundary_is_safe False and the build raise."""
    original = b"Subject: x\n\n--" + CONTEXT.boundary.encode() + b"--\n"
    lines = _lines(original)
    full = dataclasses.replace(CONTEXT, full=True)
    assert not boundary_is_safe(lines, (REJECTED,), full)
    with pytest.raises(BoundaryClash):
        b"".join(build_bounce(lines, (REJECTED,), full))
    # Headers only: the body is never part of the bounce, so the boundary is fine.
    assert boundary_is_safe(lines, (REJECTED,), CONTEXT)
    fresh = dataclasses.replace(full, boundary="=_dma_other")
    assert boundary_is_safe(lines, (REJECTED,), fresh)


def test_boundary_in_a_failure_text_raises_at_once() -> None:
    """A server reply that contains the boundary is refused before any line is produced."""
    failure = dataclasses.replace(REJECTED, diagnostic=f"smtp; 550 --{CONTEXT.boundary}")
    with pytest.raises(BoundaryClash):
        build_bounce(_lines(ORIGINAL), (failure,), CONTEXT)


@pytest.mark.parametrize(
    ("failures", "changes", "match"),
    [
        ((), {}, "at least one"),
        ((REJECTED,), {"original_sender": ""}, "empty sender"),
        ((REJECTED,), {"original_sender": " \n"}, "empty sender"),
        ((REJECTED,), {"mailname": ""}, "mail name"),
        ((dataclasses.replace(REJECTED, status="2.0.0"),), {}, "status"),
        ((dataclasses.replace(REJECTED, status="550"),), {}, "status"),
        ((REJECTED,), {"boundary": ""}, "boundary"),
        ((REJECTED,), {"boundary": "x" * 71}, "boundary"),
        ((REJECTED,), {"boundary": 'a"b'}, "boundary"),
        ((REJECTED,), {"boundary": "ends in space "}, "boundary"),
    ],
)
def test_impossible_bounces_raise_software_error(
    failures: tuple[Failure, ...], changes: dict[str, str], match: str
) -> None:
    """No failures, a bounce of a bounce, a bad status or boundary raise SoftwareError."""
    context = dataclasses.replace(CONTEXT, **changes)  # type: ignore[arg-type]
    with pytest.raises(SoftwareError, match=match):
        build_bounce(_lines(ORIGINAL), failures, context)
