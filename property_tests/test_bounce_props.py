"""Bounce properties: always a valid multipart/report, no long lines, no injection (SPEC 5.7)."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.bounce import (
    BounceContext,
    BoundaryClash,
    Failure,
    boundary_is_safe,
    build_bounce,
    expiry_failure,
    status_from_reply,
)

BOUNDARY = "=_dma_prop_4f2e"
TOP_FIELDS = {
    "From",
    "To",
    "Subject",
    "Date",
    "Message-Id",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
}
RECIPIENT_FIELDS = {"Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code"}

# Text that tries to break out of its field: line breaks, blank lines, fake fields.
_breaks = st.sampled_from(["\n", "\r\n", "\r", "\n\n", "\t", "\x0b", "\x1c", "\u2028", "\x85"])
_fakes = st.sampled_from(
    ["Bcc: eve@evil", "Action: delivered", "Final-Recipient: rfc822; eve@evil",
     "--" + BOUNDARY[:-1], "Content-Type: text/html", ""]
)
_evil_text = st.lists(st.one_of(st.text(max_size=30), _breaks, _fakes), max_size=6).map("".join)
# Whitespace-free ASCII tokens without '?' (which could start an RFC 2047 encoded word).
_token = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="?"),
    min_size=1,
    max_size=40,
)


@st.composite
def _recipients(draw: st.DrawFn) -> tuple[str, str]:
    """A recipient, possibly split by line breaks, and the one line it must become."""
    tokens = draw(st.lists(_token, min_size=1, max_size=4))
    gaps = len(tokens) - 1
    glue = draw(st.lists(_breaks | st.just(" "), min_size=gaps, max_size=gaps))
    text = tokens[0] + "".join(g + t for g, t in zip(glue, tokens[1:], strict=True))
    return text, " ".join(tokens)


@st.composite
def _failures(draw: st.DrawFn) -> Failure:
    recipient, _ = draw(_recipients())
    if draw(st.booleans()):
        return expiry_failure(recipient, draw(st.none() | _evil_text), draw(st.integers(1, 10**7)))
    code = draw(st.integers(400, 599))
    enhanced = draw(st.none() | st.from_regex(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True))
    return Failure(
        recipient=recipient,
        status=status_from_reply(code, enhanced, permanent=draw(st.booleans())),
        diagnostic=draw(st.none() | _evil_text | st.text(max_size=3000)),
        remote_mta=draw(st.none() | _evil_text),
        reason=draw(_evil_text),
    )


_header_line = st.builds(
    lambda name, value: name + b": " + value + b"\n",
    st.sampled_from([b"Subject", b"From", b"To", b"X-Thing", b"Received"]),
    st.binary(max_size=1200).map(lambda v: v.replace(b"\n", b" ")),
)
_body_line = st.binary(max_size=1200).map(lambda v: v.replace(b"\n", b"") + b"\n")


@st.composite
def _originals(draw: st.DrawFn) -> list[bytes]:
    """An M file's content in arbitrary chunks, sometimes with no body or a bad last line."""
    headers = draw(st.lists(_header_line, max_size=6))
    body = draw(st.lists(_body_line, max_size=6))
    data = b"".join(headers) + (b"\n" + b"".join(body) if draw(st.booleans()) else b"")
    if draw(st.booleans()):
        data += draw(st.binary(max_size=50))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(edges)]


def _context(full: bool, sender: str = "alice@example.org") -> BounceContext:
    return BounceContext(
        mailname="mail.example.org",
        queue_id="1a.0",
        arrival_date="Tue, 25 Nov 2025 04:00:00 +0000",
        date="Tue, 25 Nov 2025 05:00:00 +0000",
        message_id="<1a.b@mail.example.org>",
        boundary=BOUNDARY,
        original_sender=sender,
        full=full,
    )


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


@settings(max_examples=150, deadline=None)
@given(st.lists(_failures(), min_size=1, max_size=4), _originals(), st.booleans())
def test_every_bounce_is_a_valid_report_holding_every_recipient(
    failures: list[Failure], original: list[bytes], full: bool
) -> None:
    """Every bounce parses as multipart/report with one failed block per recipient, lines <= 998."""
    context = _context(full)
    if not boundary_is_safe(original, failures, context):
        with pytest.raises(BoundaryClash):
            b"".join(build_bounce(original, failures, context))
        return
    data = b"".join(build_bounce(original, failures, context))
    assert all(len(line) <= 998 for line in data.split(b"\n"))
    message = _parse(data)
    assert set(message.keys()) == TOP_FIELDS
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert [part.get_content_type() for part in parts] == [
        "text/plain",
        "message/delivery-status",
        "message/rfc822" if full else "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) == 1 + len(failures)
    for block, failure in zip(blocks[1:], failures, strict=True):
        assert set(block.keys()) <= RECIPIENT_FIELDS
        assert block["Action"] == "failed"
        assert block["Status"] == failure.status
        assert block["Final-Recipient"] == "rfc822; " + " ".join(failure.recipient.split())


@settings(max_examples=150, deadline=None)
@given(_recipients(), _evil_text, _evil_text, _evil_text)
def test_line_breaks_in_any_text_cannot_inject_fields(
    recipient: tuple[str, str], diagnostic: str, remote: str, sender: str
) -> None:
    """CR, LF and other breaks in recipients, replies, hosts or the sender never add a field."""
    text, one_line = recipient
    failure = Failure(text, "5.1.1", diagnostic or None, remote or None, diagnostic)
    context = _context(False, sender=f"alice@example.org{sender}")
    if not boundary_is_safe([b"Subject: x\n"], [failure], context):
        return
    message = _parse(b"".join(build_bounce([b"Subject: x\n"], [failure], context)))
    assert set(message.keys()) == TOP_FIELDS
    parts = message.get_payload()
    assert isinstance(parts, list)
    assert len(parts) == 3
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    assert len(blocks) == 2
    assert set(blocks[0].keys()) == {"Reporting-MTA", "X-Queue-ID", "Arrival-Date"}
    assert set(blocks[1].keys()) <= RECIPIENT_FIELDS
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Final-Recipient"] == "rfc822; " + one_line


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_header_line.filter(lambda line: len(line) <= 999 and b"\r" not in line), max_size=6),
    st.lists(
        _body_line.filter(lambda line: len(line) <= 999 and not line.endswith(b"\r\n")),
        max_size=6,
    ),
    st.booleans(),
)
def test_part_three_is_the_original_byte_for_byte(
    headers: list[bytes], body: list[bytes], full: bool
) -> None:
    """For a well-formed M file, part 3 is its header block, or all of it with FULLBOUNCE."""
    original = b"".join(headers) + b"\n" + b"".join(body)
    failure = Failure("bob@example.com", "5.0.0", None, None, "no")
    context = _context(full)
    lines = original.splitlines(keepends=True)
    if not boundary_is_safe(lines, [failure], context):
        return
    data = b"".join(build_bounce(lines, [failure], context))
    expected = original if full else b"".join(headers)
    assert data.endswith(b"\n\n" + expected + b"\n--" + BOUNDARY.encode() + b"--\n")
