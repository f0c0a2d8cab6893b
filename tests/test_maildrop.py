"""The maildrop file format and its checks (core/maildrop.py; SPEC 8.2)."""

from __future__ import annotations

import pytest

from dma.core.aliases import parse_aliases
from dma.core.envelope import Recipient
from dma.core.errors import DataError, SoftwareError
from dma.core.maildrop import (
    MAGIC,
    MAX_HEAD_OCTETS,
    DeleteRequest,
    MaildropEnvelope,
    check_envelope,
    is_delete_request,
    parse_delete_request,
    parse_head,
    parse_maildrop,
    parse_trailer,
    render_delete_request,
    render_head,
    render_maildrop,
)
from dma.core.queuefile import QueueItem, parse_queue_file, render_queue_file

MAILNAME = "test.example"
USERS = frozenset({"root", "alice", "bob", "ops", "catchall"})
MESSAGE = b"From: alice@test.example\nSubject: hi\n\nbody\n"
ENVELOPE = MaildropEnvelope(
    sender="alice@test.example", recipients=("bob", "carol@example.com"),
    dsn_notify="FAILURE,DELAY", dsn_ret="HDRS", dsn_envid="env-1", queue_only=True,
)
EXPECTED = (
    b"PYDMA-MAILDROP 1\n"
    b"Sender: alice@test.example\n"
    b"DSN-Notify: FAILURE,DELAY\n"
    b"DSN-Ret: HDRS\n"
    b"DSN-Envid: env-1\n"
    b"Queue-Only: yes\n"
    b"Message-Octets: 00000000000000000043\n"
    b"\n"
    + MESSAGE
    + b"Recipient: bob\n"
    b"Recipient: carol@example.com\n"
    b"End: 2\n"
)


def check(envelope: MaildropEnvelope, aliases: str = "", *, nullclient: bool = False
          ) -> tuple[Recipient, ...]:
    return check_envelope(
        envelope, mailname=MAILNAME, aliases=parse_aliases(aliases, "/etc/aliases"),
        is_user=USERS.__contains__, nullclient=nullclient,
    )


def to(*recipients: str, sender: str = "alice@test.example") -> MaildropEnvelope:
    return MaildropEnvelope(sender=sender, recipients=recipients)


def test_a_file_is_rendered_exactly_so() -> None:
    """Magic line, head fields in order with a 20-digit size, empty line, message,
    recipient lines, and the End count."""
    assert len(MESSAGE) == 43
    assert render_maildrop(ENVELOPE, MESSAGE) == EXPECTED


def test_the_minimal_file_has_sender_and_size_only() -> None:
    """Optional fields are left out when unset; the null sender is an empty value."""
    data = render_maildrop(MaildropEnvelope(sender="", recipients=("bob",)), b"")
    assert data == (b"PYDMA-MAILDROP 1\nSender: \nMessage-Octets: 00000000000000000000\n\n"
                    b"Recipient: bob\nEnd: 1\n")


def test_parsing_gives_the_envelope_and_the_message_back() -> None:
    """parse_maildrop inverts render_maildrop."""
    parsed = parse_maildrop(EXPECTED, "f")
    assert parsed.envelope == ENVELOPE
    assert parsed.message == MESSAGE


def test_the_head_keeps_its_length_whatever_the_size() -> None:
    """The writer rewrites the head in place once the message is written: same length."""
    assert len(render_head(ENVELOPE, 0)) == len(render_head(ENVELOPE, 512 * 1024 * 1024))


def test_the_head_says_where_the_message_is() -> None:
    """parse_head reads only the head, even when the message follows it."""
    head = parse_head(EXPECTED, "f")
    assert head.length == EXPECTED.index(MESSAGE)
    assert head.message_octets == 43
    assert (head.sender, head.queue_only) == ("alice@test.example", True)


def test_a_message_that_looks_like_a_trailer_is_still_message() -> None:
    """The size, not the content, says where the message ends."""
    message = b"Subject: x\n\nRecipient: root\nEnd: 1\n"
    parsed = parse_maildrop(render_maildrop(to("bob"), message), "f")
    assert parsed.message == message
    assert parsed.envelope.recipients == ("bob",)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "does not start with 'PYDMA-MAILDROP 1'"),
        (b"PYDMA-MAILDROP 2\n" + EXPECTED[len(MAGIC):], "does not start with"),
        (EXPECTED.replace(b"Queue-Only: yes\n", b"Uid: 0\n"), "unknown field 'Uid'"),
        (EXPECTED.replace(b"Queue-Only: yes\n", b"User: root\n"), "unknown field 'User'"),
        (EXPECTED.replace(b"DSN-Ret: HDRS\n", b"Sender: root@x\n"), "names Sender twice"),
        (EXPECTED.replace(b"Sender: alice@test.example\n", b""), "has no Sender field"),
        (EXPECTED.replace(b"Message-Octets: 00000000000000000043\n", b""),
         "has no Message-Octets field"),
        (EXPECTED.replace(b"00000000000000000043", b"0000000000000000004x"), "is no number"),
        (EXPECTED.replace(b"00000000000000000043", b"00000000000000009999"), "cut short"),
        (EXPECTED.replace(b"Queue-Only: yes", b"Queue-Only: no"), "not 'yes'"),
        (EXPECTED.replace(b"Sender: alice", b"Sender: al\rice"), "carriage return"),
        (EXPECTED.replace(b"DSN-Ret: HDRS", b"DSN-Ret HDRS"), "no 'Key: value' field"),
        (EXPECTED[:-1], "does not end with a complete End line"),
        (EXPECTED.replace(b"End: 2", b"End: 3"), "counts 3 recipients, the file has 2"),
        (EXPECTED + b"Recipient: root\n", "recipient line expected, found 'End: 2'"),
        (EXPECTED + b"End: 2\n", "recipient line expected"),
        (EXPECTED.replace(b"End: 2\n", b"Recipient: root\n"), "does not end with an End line"),
        (EXPECTED.replace(b"Recipient: bob\n", b"Recipient: \n"), "recipient line expected"),
        (EXPECTED.replace(b"Recipient: bob\nRecipient: carol@example.com\nEnd: 2",
                          b"End: 0"), "names no recipients"),
        (MAGIC + b"Sender: " + b"x" * MAX_HEAD_OCTETS + b"\n\n", "has no end within"),
        (MAGIC + b"Sender: " + b"x" * 1000 + b"\nMessage-Octets: 0\n\n", "longer than 998"),
    ],
)
def test_what_is_wrong_is_named(data: bytes, says: str) -> None:
    """Each way a file can be malformed is a DataError that says what."""
    with pytest.raises(DataError) as raised:
        parse_maildrop(data, "/var/spool/dma/maildrop/f")
    assert says in str(raised.value)
    assert str(raised.value).startswith("/var/spool/dma/maildrop/f")


def test_the_trailer_is_bounded() -> None:
    """Recipient lines over the bound are refused before they are split."""
    with pytest.raises(DataError, match="more than 67108864"):
        parse_trailer(b"Recipient: x\n" * (64 * 1024 * 1024 // 13 + 1) + b"End: 1\n", "f")


def test_values_that_would_not_read_back_are_our_bug() -> None:
    """Rendering a value with a line break is refused (callers check values first)."""
    with pytest.raises(SoftwareError):
        render_maildrop(to("bob\nRecipient: root"), b"")
    with pytest.raises(SoftwareError):
        render_maildrop(to("bob", sender="a\r@b"), b"")


# --- the envelope, checked as submission checks it -----------------------------------------


def test_users_and_remote_addresses_pass() -> None:
    """A local user and a remote address are what submission queues; duplicates go."""
    assert check(to("bob", "carol@example.com", "bob")) == (
        Recipient("bob", local=True), Recipient("carol@example.com", local=False))


def test_an_alias_named_in_the_file_is_refused() -> None:
    """Submission expands aliases: a file naming the alias itself bypassed them."""
    with pytest.raises(DataError, match="'postmaster' is not one that submission queues: "
                       "it resolves to root"):
        check(to("postmaster"), "postmaster: root\n")


def test_a_name_that_lists_itself_is_queued() -> None:
    """``root: root, ops`` makes root a final recipient: a file may name it."""
    assert check(to("root", "ops"), "root: root, ops\n") == (
        Recipient("root", local=True), Recipient("ops", local=True))


def test_the_catch_all_rules_as_at_submission() -> None:
    """With ``*``, a user name is caught too, so only the catch-all's target passes."""
    aliases = "*: catchall\n"
    assert check(to("catchall"), aliases) == (Recipient("catchall", local=True),)
    with pytest.raises(DataError, match="resolves to catchall"):
        check(to("bob"), aliases)


def test_a_local_name_that_is_no_user_is_refused() -> None:
    """A name no user has would be exit 67 at submission: refused, as a DataError."""
    with pytest.raises(DataError, match="recipient 'nobody-here' is refused: "):
        check(to("nobody-here"))


@pytest.mark.parametrize("address", ["a b@example.com", "x@", "<root>", "|/bin/sh",
                                     "a\0b@example.com"])
def test_bad_recipients_are_refused(address: str) -> None:
    """Whatever the address checks refuse is refused here too."""
    with pytest.raises(DataError, match="maildrop recipient"):
        check(to(address))


def test_a_nullclient_takes_any_valid_address_as_it_is() -> None:
    """With NULLCLIENT nothing is local: the address goes on as written."""
    assert check(to("postmaster"), "postmaster: root\n", nullclient=True) == (
        Recipient("postmaster", local=False),)


@pytest.mark.parametrize("sender", ["a b@example.com", "root@x\nBcc: y@z", "<x@y>"])
def test_a_bad_sender_is_refused(sender: str) -> None:
    """The sender passes -f's checks or the file is refused."""
    with pytest.raises(DataError, match="maildrop sender"):
        check(to("bob", sender=sender))


def test_the_null_sender_passes() -> None:
    """An empty sender is the null sender, as ``-f ''`` gives."""
    assert check(to("bob", sender="")) == (Recipient("bob", local=True),)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("dsn_notify", "SOMETIMES", "DSN-Notify 'SOMETIMES': NOTIFY must be"),
    ("dsn_ret", "ALL", "DSN-Ret 'ALL': RET must be"),
    ("dsn_envid", "has space", "DSN-Envid 'has space': the envelope id"),
])
def test_dsn_values_pass_the_client_checks(field: str, value: str, says: str) -> None:
    """-N, -R and -V values that the SMTP client would refuse are refused here."""
    import dataclasses

    with pytest.raises(DataError, match=says):
        check(dataclasses.replace(to("bob"), **{field: value}))


def test_queue_files_record_the_submitter_uid() -> None:
    """X-Uid is written when set and read back; the C dma ignores the key."""
    item = QueueItem(id="a.0", sender="s@x", recipient="bob", uid=1001)
    data = render_queue_file(item)
    assert data == b"ID: a.0\nSender: s@x\nRecipient: bob\nX-Uid: 1001\n"
    assert parse_queue_file(data, "Qa.0") == item
    assert b"X-Uid" not in render_queue_file(QueueItem(id="a.0", sender="", recipient="b"))


# --- deletion requests (a user's dma -Qd, issue 9 item 4) ---------------------------------

REQUEST = (b"PYDMA-MAILDROP-DELETE 1\n"
           b"Item: 18c2f0a1b2c3d4e5f6a7b8.0\n"
           b"Item: 18c2f0a1b2c3d4e5f6a7b8.a\n"
           b"End: 2\n")


def test_a_deletion_request_is_rendered_exactly_so() -> None:
    """Its own magic line, one Item line per id, the End count."""
    request = DeleteRequest(("18c2f0a1b2c3d4e5f6a7b8.0", "18c2f0a1b2c3d4e5f6a7b8.a"))
    assert render_delete_request(request) == REQUEST
    assert parse_delete_request(REQUEST, "f") == request
    assert is_delete_request(REQUEST) and not is_delete_request(EXPECTED)


def test_a_request_is_no_message_and_a_message_no_request() -> None:
    """The two kinds cannot be read as one another: each parser refuses the other's magic."""
    with pytest.raises(DataError, match="not a maildrop file"):
        parse_maildrop(REQUEST, "f")
    with pytest.raises(DataError, match="not a deletion request"):
        parse_delete_request(EXPECTED, "f")


def test_an_id_named_twice_counts_once() -> None:
    """Repeated ids are one deletion."""
    data = REQUEST.replace(b".a\n", b".0\n")
    assert parse_delete_request(data, "f").item_ids == ("18c2f0a1b2c3d4e5f6a7b8.0",)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "does not start with 'PYDMA-MAILDROP-DELETE 1'"),
        (REQUEST[:-1], "complete End line"),
        (REQUEST.replace(b"End: 2", b"End: 3"), "counts 3 items, the file has 2"),
        (REQUEST.replace(b"End: 2\n", b""), "does not end with an End line"),
        (REQUEST + b"Item: a.0\n", "no Item field: 'End: 2'"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.0", b"Item: ../../etc/passwd"),
         "'../../etc/passwd' is no queue item id"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.0", b"Item: "), "'' is no queue item"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.0", b"Item: .hidden"), "no queue item"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.0", b"Recipient: bob"),
         "no Item field"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.0", b"Item: " + b"a" * 201),
         "item id of 201 characters"),
        (b"PYDMA-MAILDROP-DELETE 1\nEnd: 0\n", "names 0 items"),
        (b"PYDMA-MAILDROP-DELETE 1\n" + b"Item: a.0\n" * 1001 + b"End: 1001\n",
         "names 1001 items"),
        (b"PYDMA-MAILDROP-DELETE 1\n" + b"Item: a.0\n" * 7000 + b"End: 7000\n",
         "more than 65536"),
        (REQUEST.replace(b"Item: 18c2f0a1b2c3d4e5f6a7b8.a", b"Item: a\0"), "NUL octet"),
    ],
)
def test_what_is_wrong_with_a_request_is_named(data: bytes, says: str) -> None:
    """Each way a request can be malformed is a DataError that says what and where."""
    with pytest.raises(DataError) as raised:
        parse_delete_request(data, "/var/spool/dma/maildrop/r")
    assert says in str(raised.value)
    assert str(raised.value).startswith("/var/spool/dma/maildrop/r")


@pytest.mark.parametrize("ids", [(), ("../x",), ("a.0",) * 1001, ("a\n.0",)])
def test_a_request_we_would_not_read_back_is_our_bug(ids: tuple[str, ...]) -> None:
    """The writer refuses what the reader would refuse: the caller checks words first."""
    with pytest.raises(SoftwareError):
        render_delete_request(DeleteRequest(ids))
