"""Properties of maildrop files: what we write reads back, and no input makes the reader
raise anything but DataError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.aliases import parse_aliases
from dma.core.errors import DataError
from dma.core.maildrop import (
    MAGIC,
    REQUEST_MAGIC,
    DeleteRequest,
    MaildropEnvelope,
    check_envelope,
    parse_delete_request,
    parse_head,
    parse_maildrop,
    parse_trailer,
    render_delete_request,
    render_head,
    render_maildrop,
)

_values = st.text(max_size=80).filter(lambda s: not ({"\r", "\n", "\0"} & set(s)))
_maybe = st.none() | _values.filter(bool)
_envelopes = st.builds(
    MaildropEnvelope,
    sender=_values,
    recipients=st.lists(_values.filter(bool), min_size=1, max_size=5).map(tuple),
    dsn_notify=_maybe,
    dsn_ret=_maybe,
    dsn_envid=_maybe,
    queue_only=st.booleans(),
)
# Lines that look like maildrop lines, so the parser gets past its first checks.
_keys = st.sampled_from([b"Sender", b"Message-Octets", b"Recipient", b"End", b"Queue-Only",
                         b"DSN-Ret", b"Uid", b""])
_lines = st.builds(
    lambda key, sep, value, end: key + sep + value + end,
    _keys,
    st.sampled_from([b": ", b":", b" ", b""]),
    st.binary(max_size=24) | st.from_regex(rb"[0-9]{1,22}", fullmatch=True),
    st.sampled_from([b"\n", b"\r\n", b""]),
)
_files = st.builds(
    lambda magic, lines: magic + b"".join(lines),
    st.sampled_from([MAGIC, b"", MAGIC[:-1], b"PYDMA-MAILDROP 2\n"]),
    st.lists(_lines, max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(_envelopes, st.binary(max_size=200))
def test_parse_inverts_render(envelope: MaildropEnvelope, message: bytes) -> None:
    """Rendering a file and parsing it gives the envelope and the message back."""
    parsed = parse_maildrop(render_maildrop(envelope, message), "f")
    assert parsed.envelope == envelope
    assert parsed.message == message


@settings(max_examples=200, deadline=None)
@given(_envelopes, st.integers(min_value=0, max_value=10**19))
def test_the_head_length_never_depends_on_the_size(envelope: MaildropEnvelope,
                                                    octets: int) -> None:
    """The writer can rewrite the head in place: its length is the same for any size."""
    head = render_head(envelope, octets)
    assert len(head) == len(render_head(envelope, 0))
    assert parse_head(head, "f").message_octets == octets


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | _files)
def test_any_bytes_give_a_file_or_a_data_error(data: bytes) -> None:
    """parse_maildrop never raises anything but DataError, whatever the file holds."""
    try:
        parse_maildrop(data, "f")
    except DataError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | st.lists(_lines, max_size=8).map(b"".join))
def test_any_trailer_gives_recipients_or_a_data_error(data: bytes) -> None:
    """parse_trailer never raises anything but DataError."""
    try:
        recipients = parse_trailer(data, "f")
    except DataError:
        return
    assert recipients and all(recipients)


_plausible = st.builds(
    MaildropEnvelope,
    sender=st.sampled_from(["", "a@example.com", "a b@c"]) | _values,
    recipients=st.lists(
        st.sampled_from(["bob", "root", "ops", "postmaster", "x@example.com", "Bob"])
        | _values.filter(bool), min_size=1, max_size=5).map(tuple),
    dsn_notify=st.sampled_from([None, "NEVER", "FAILURE,DELAY", "x"]),
    dsn_ret=st.sampled_from([None, "FULL", "hdrs", "x"]),
    dsn_envid=st.none() | _values.filter(bool),
)


@settings(max_examples=300, deadline=None)
@given(_envelopes | _plausible)
def test_checking_any_envelope_gives_recipients_or_a_data_error(
        envelope: MaildropEnvelope) -> None:
    """check_envelope turns every refusal of submission's checks into a DataError, and
    what it passes are recipients the file named."""
    try:
        recipients = check_envelope(
            envelope, mailname="test.example",
            aliases=parse_aliases("postmaster: root\nroot: root, ops\n", "/etc/aliases"),
            is_user=frozenset({"root", "ops", "bob"}).__contains__, nullclient=False,
        )
    except DataError:
        return
    assert {r.address for r in recipients} <= set(envelope.recipients)


# --- deletion requests ----------------------------------------------------------------------

_item_ids = st.from_regex(r"[0-9A-Za-z][0-9A-Za-z._-]{0,40}", fullmatch=True)
_request_lines = st.builds(
    lambda key, sep, value, end: key + sep + value + end,
    st.sampled_from([b"Item", b"End", b"Recipient", b""]),
    st.sampled_from([b": ", b":", b""]),
    st.binary(max_size=24) | _item_ids.map(str.encode) | st.from_regex(rb"[0-9]{1,22}",
                                                                       fullmatch=True),
    st.sampled_from([b"\n", b"\r\n", b""]),
)
_requests = st.builds(
    lambda magic, lines: magic + b"".join(lines),
    st.sampled_from([REQUEST_MAGIC, b"", MAGIC, b"PYDMA-MAILDROP-DELETE 2\n"]),
    st.lists(_request_lines, max_size=10),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_item_ids, min_size=1, max_size=20, unique=True))
def test_a_request_reads_back(item_ids: list[str]) -> None:
    """Rendering a deletion request and parsing it gives the same ids, in order."""
    request = DeleteRequest(tuple(item_ids))
    assert parse_delete_request(render_delete_request(request), "r") == request


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300) | _requests)
def test_any_bytes_give_a_request_or_a_data_error(data: bytes) -> None:
    """parse_delete_request never raises anything but DataError, and what it passes
    names only ids that stay inside the spool."""
    try:
        request = parse_delete_request(data, "r")
    except DataError:
        return
    assert request.item_ids
    for item_id in request.item_ids:
        assert "/" not in item_id and not item_id.startswith(".")
        assert render_delete_request(DeleteRequest((item_id,)))
