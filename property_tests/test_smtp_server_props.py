"""Properties of the -bs SMTP server machine: any input gives only well-formed replies,
chunking never matters, dot-stuffing round-trips, and every command gets one reply."""

from __future__ import annotations

import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dma.core.smtp_server import (
    TRANSITIONS,
    Closed,
    Input,
    MessageData,
    MessageEnd,
    NeedData,
    RcptTo,
    SmtpServer,
    State,
    Transmit,
)

REPLY_LINE = re.compile(rb"[2-5][0-9]{2}[ -][\x20-\x7e]*\r\n")
VALID_CODES = frozenset({214, 220, 221, 250, 252, 354, 451, 452, 500, 501, 502, 503, 550,
                         553, 554, 555})

COMMANDS = [
    b"EHLO client.example", b"HELO client", b"EHLO", b"MAIL FROM:<a@b.example>",
    b"MAIL FROM:<>", b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME SMTPUTF8",
    b"MAIL FROM:<a@b.example> XYZ=1", b"MAIL FROM:<bad", b"mail from: <c@d.example>",
    b"RCPT TO:<x@y.example>", b"RCPT TO:<root>", b"RCPT TO:<>", b"RCPT TO:<x@@y>",
    "RCPT TO:<jörg@exämple.de>".encode(), b"DATA", b"DATA x", b"RSET", b"NOOP", b"VRFY x",
    b"HELP", b"EXPN x", b"QUIT", b"FOO", b"", b".", b"..", b"Subject: x", b"\xff\xfe",
    b"X" * 600,
]
line_strategy = st.one_of(st.sampled_from(COMMANDS), st.binary(max_size=40))


def drive(chunks: list[bytes], verdicts: list[bool]) -> tuple[bytes, list[object]]:
    """Run the machine over ``chunks`` with a driver answering from ``verdicts`` (cycled);
    return the reply bytes and the other events."""
    server = SmtpServer("mail.example")
    feed = list(chunks)
    output: list[bytes] = []
    events: list[object] = []
    answers = iter(verdicts * 1000) if verdicts else iter(())
    for _ in range(100_000):
        event = server.next_event()
        if isinstance(event, Transmit):
            output.append(event.data)
            continue
        if isinstance(event, NeedData):
            server.receive_data(feed.pop(0) if feed else b"")
            continue
        events.append(event)
        good = next(answers, True)
        if isinstance(event, RcptTo):
            if good:
                server.accept_recipient()
            else:
                server.refuse_recipient(550, "5.1.1 no")
        elif isinstance(event, MessageEnd):
            if good:
                server.accept_message("Q")
            else:
                server.refuse_message(451, "4.3.0 later")
        elif isinstance(event, Closed):
            return b"".join(output), events
    raise AssertionError("the session did not end")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at the given positions (taken modulo its length)."""
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(line_strategy, max_size=25),
    st.sampled_from([b"\r\n", b"\n"]),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.lists(st.booleans(), max_size=6),
)
def test_any_input_gives_only_valid_replies(
    lines: list[bytes], ending: bytes, cuts: list[int], verdicts: list[bool]
) -> None:
    """Any lines in any order and chunking give well-formed replies with known codes only."""
    data = b"".join(line + ending for line in lines)
    output, events = drive(split(data, cuts), verdicts)
    assert isinstance(events[-1], Closed)
    replies = output.splitlines(keepends=True)
    assert replies[0] == b"220 mail.example ESMTP pydma\r\n"
    for reply in replies:
        assert REPLY_LINE.fullmatch(reply), reply
        assert len(reply) <= 512
        assert int(reply[:3]) in VALID_CODES


@settings(max_examples=150, deadline=None)
@given(
    st.lists(line_strategy, max_size=25),
    st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=10),
    st.lists(st.booleans(), max_size=6),
)
def test_chunking_never_changes_the_session(
    lines: list[bytes], cuts: list[int], verdicts: list[bool]
) -> None:
    """The same input in one read or in many gives the same replies and message data."""
    data = b"".join(line + b"\r\n" for line in lines)
    whole = drive([data], verdicts)
    pieces = drive(split(data, cuts), verdicts)
    assert pieces[0] == whole[0]

    def message(events: list[object]) -> bytes:
        return b"".join(e.data for e in events if isinstance(e, MessageData))

    assert message(pieces[1]) == message(whole[1])

    def others(events: list[object]) -> list[object]:
        return [e for e in events if not isinstance(e, MessageData)]

    assert others(pieces[1]) == others(whole[1])


message_line = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(message_line, max_size=20),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=6),
)
def test_dot_stuffing_round_trips(body: list[bytes], cuts: list[int]) -> None:
    """Lines dot-stuffed by a client come out exactly as they went in, whatever they hold."""
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in body)
    head = b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    data = head + stuffed + b".\r\nQUIT\r\n"
    output, events = drive(split(data, cuts), [True])
    assert [e for e in events if isinstance(e, MessageEnd)] == [MessageEnd(bare_lf_dots=0)]
    received = b"".join(e.data for e in events if isinstance(e, MessageData))
    assert received == b"".join(line + b"\r\n" for line in body)
    assert output.endswith(b"250 2.0.0 Ok: queued as Q\r\n221 2.0.0 Bye\r\n")


NO_DATA_COMMANDS = [c for c in COMMANDS if c not in (b"DATA", b"QUIT")]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(NO_DATA_COMMANDS), max_size=30), st.lists(st.booleans()))
def test_every_command_gets_exactly_one_reply_in_order(
    lines: list[bytes], verdicts: list[bool]
) -> None:
    """Pipelined commands (no DATA) get one complete reply each, plus the greeting."""
    output, _ = drive([b"".join(line + b"\r\n" for line in lines)], verdicts)
    finished = [r for r in output.splitlines(keepends=True) if r[3:4] == b" "]
    assert len(finished) == len(lines) + 1


PREFIXES = {
    State.IDLE: b"",
    State.MAIL: b"MAIL FROM:<a@b.example>\r\n",
    State.RCPT: b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
}


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(PREFIXES, key=lambda s: s.name)), st.sampled_from(COMMANDS))
def test_each_command_in_each_state_moves_as_the_table_allows(
    state: State, command: bytes
) -> None:
    """In every command state every command either follows the table or leaves the state
    unchanged with an error reply; nothing else happens."""
    server = SmtpServer("mail.example")
    if PREFIXES[state]:
        server.receive_data(PREFIXES[state])
    while not isinstance(event := server.next_event(), NeedData | Closed):
        if isinstance(event, RcptTo):
            server.accept_recipient()
    assert server.state is state
    server.receive_data(command + b"\r\n")
    replies: list[bytes] = []
    while not isinstance(event := server.next_event(), NeedData | Closed):
        if isinstance(event, Transmit):
            replies.append(event.data)
        elif isinstance(event, RcptTo):
            server.accept_recipient()
    assert len(replies) == 1
    verb = command.split(b" ")[0].upper().decode("ascii", "replace")
    kind = {i.value: i for i in Input}.get(verb)
    allowed = {state}
    if kind is not None and (state, kind) in TRANSITIONS:
        allowed |= TRANSITIONS[(state, kind)].targets
    if kind is Input.RCPT:
        allowed |= TRANSITIONS[(State.RCPT_CHECK, Input.ACCEPT)].targets
    assert server.state in allowed - {State.RCPT_CHECK}


# --- SMTP smuggling: only <CRLF>.<CRLF> ends the data ------------------------------------

DATA_HEAD = b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
TRICKY = [
    b"\n", b"\r", b"\r\n", b".", b"..", b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\n.\r", b"\r.\r",
    b"x", b" ", b"MAIL FROM:<boss@example.com>", b"RCPT TO:<victim@example.net>", b"DATA",
    b"QUIT", b"RSET",
]
tricky_bytes = st.lists(
    st.one_of(st.sampled_from(TRICKY), st.binary(max_size=4)), max_size=40
).map(b"".join)
cuts_strategy = st.lists(st.integers(min_value=0, max_value=10_000), max_size=8)


def conforming_client(body: bytes) -> bytes:
    """What a conforming client sends after DATA for ``body``: lines are what CRLF ends,
    each starting with a dot gets another, the text ends in CRLF, then ``.`` CRLF."""
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    lines = body.split(b"\r\n")[:-1] if body else []
    return b"".join((b"." + line if line[:1] == b"." else line) + b"\r\n" for line in lines) + (
        b".\r\n"
    )


def session_events(data: bytes, cuts: list[int]) -> tuple[bytes, list[object]]:
    """Drive DATA_HEAD + ``data`` + QUIT, cut at ``cuts``, accepting everything."""
    return drive(split(DATA_HEAD + data + b"QUIT\r\n", cuts), [True])


def one_message(output: bytes, events: list[object]) -> tuple[bytes, MessageEnd]:
    """Check the session held exactly one transaction and return its data and end."""
    assert [type(e).__name__ for e in events if not isinstance(e, MessageData)] == [
        "Hello", "MailFrom", "RcptTo", "MessageStart", "MessageEnd", "Closed"
    ]
    assert output.endswith(b"354 End data with <CR><LF>.<CR><LF>\r\n"
                           b"250 2.0.0 Ok: queued as Q\r\n221 2.0.0 Bye\r\n")
    (end,) = [e for e in events if isinstance(e, MessageEnd)]
    return b"".join(e.data for e in events if isinstance(e, MessageData)), end


@settings(max_examples=400, deadline=None)
@given(tricky_bytes, cuts_strategy)
def test_any_body_from_a_conforming_client_round_trips_as_one_message(
    body: bytes, cuts: list[int]
) -> None:
    """Any body, bare CRs, LFs and dots included, sent dot-stuffed with CRLF by a conforming
    client, arrives as exactly one message holding that body (with a final CRLF added)."""
    output, events = session_events(conforming_client(body), cuts)
    received, _ = one_message(output, events)
    expected = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
    assert received == expected


def reference_count(text: bytes) -> int:
    """Lone dots next to a bare LF in ``text`` (which starts after a CRLF or DATA)."""
    framed = b"\r\n" + text
    return len(re.findall(rb"(?<=\n)\.(?=\n)", framed)) + len(
        re.findall(rb"(?<=[^\r]\n)\.(?=\r\n)", framed)
    )


@settings(max_examples=400, deadline=None)
@given(
    tricky_bytes.filter(lambda raw: (b"\r\n" + raw + b"\r\n.\r\n").find(b"\r\n.\r\n")
                        == len(raw) + 2),
    cuts_strategy,
)
def test_bare_lf_dot_variants_never_start_a_second_transaction(
    raw: bytes, cuts: list[int]
) -> None:
    """Bytes sent as they are (not dot-stuffed) that hold LF.LF, LF.CRLF, CRLF.LF and commands
    but no CRLF.CRLF are one message up to the real end: leading dots of CRLF lines removed,
    everything else kept, and every lone dot next to a bare LF counted."""
    output, events = session_events(raw + b"\r\n.\r\n", cuts)
    received, end = one_message(output, events)
    lines = raw.split(b"\r\n")
    assert received == b"".join((line[1:] if line[:1] == b"." else line) + b"\r\n"
                                for line in lines)
    assert end == MessageEnd(bare_lf_dots=reference_count(raw + b"\r\n"))
