"""The -bs SMTP server machine: exact reply bytes, events, sequencing errors, dot handling."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest

from dma.core.errors import (
    CantCreateError,
    ConfigError,
    DataError,
    DmaError,
    NoUserError,
    TempFailure,
    UsageError,
)
from dma.core.smtp_server import (
    DATA_FRAGMENT_OCTETS,
    MAX_COMMAND_OCTETS,
    MAX_RECIPIENTS,
    TRANSITIONS,
    Closed,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    MailParameters,
    MessageData,
    MessageEnd,
    MessageStart,
    NeedData,
    RcptTo,
    Reset,
    SmtpServer,
    State,
    Transmit,
    message_refusal,
    recipient_refusal,
)

HOST = "mail.example"
GREETING = b"220 mail.example ESMTP pydma\r\n"
EHLO_REPLY = (
    b"250-mail.example\r\n250-PIPELINING\r\n250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    b"250 ENHANCEDSTATUSCODES\r\n"
)


@dataclass
class Run:
    """What a scripted driver saw: every reply byte and every non-reply event."""

    output: bytes
    events: list[Event] = field(default_factory=list)

    def replies(self) -> list[bytes]:
        """The reply lines, each with its CRLF."""
        return self.output.splitlines(keepends=True)

    def codes(self) -> list[int]:
        """The code of each complete reply (multi-line replies count once)."""
        return [int(line[:3]) for line in self.replies() if line[3:4] == b" "]

    def message(self) -> bytes:
        """The message data the driver received, all MessageData joined."""
        return b"".join(e.data for e in self.events if isinstance(e, MessageData))


def drive(
    chunks: Iterable[bytes],
    *,
    refuse: Callable[[str], tuple[int, str] | None] = lambda address: None,
    message_verdict: Callable[[int], tuple[int, str] | None] = lambda number: None,
) -> Run:
    """Run a session over ``chunks`` (then end of input) with a driver that accepts
    everything except what ``refuse``/``message_verdict`` refuse."""
    server = SmtpServer(HOST)
    feed = list(chunks)
    output: list[bytes] = []
    run = Run(b"")
    messages = 0
    while True:
        event = server.next_event()
        if isinstance(event, Transmit):
            output.append(event.data)
            continue
        if isinstance(event, NeedData):
            server.receive_data(feed.pop(0) if feed else b"")
            continue
        run.events.append(event)
        if isinstance(event, RcptTo):
            refusal = refuse(event.address)
            if refusal is None:
                server.accept_recipient()
            else:
                server.refuse_recipient(*refusal)
        elif isinstance(event, MessageEnd):
            messages += 1
            verdict = message_verdict(messages)
            if verdict is None:
                server.accept_message(f"Q{messages}")
            else:
                server.refuse_message(*verdict)
        elif isinstance(event, Closed):
            break
    run.output = b"".join(output)
    return run


def session(*lines: bytes) -> bytes:
    """Client lines joined with CRLF (and a final CRLF)."""
    return b"".join(line + b"\r\n" for line in lines)


FULL_SESSION = session(
    b"EHLO client.example",
    b"MAIL FROM:<alice@example.org>",
    b"RCPT TO:<bob@example.net>",
    b"DATA",
    b"Subject: hi",
    b"",
    b"..leading dot",
    b"body",
    b".",
    b"QUIT",
)
FULL_REPLIES = (
    GREETING
    + EHLO_REPLY
    + b"250 2.1.0 Ok\r\n"
    + b"250 2.1.5 Ok\r\n"
    + b"354 End data with <CR><LF>.<CR><LF>\r\n"
    + b"250 2.0.0 Ok: queued as Q1\r\n"
    + b"221 2.0.0 Bye\r\n"
)


# --- whole sessions -----------------------------------------------------------------------


def test_whole_session_gives_exact_reply_bytes() -> None:
    """A complete session, one line per read, yields the exact greeting and replies."""
    run = drive(line + b"\n" for line in FULL_SESSION.split(b"\n")[:-1])
    assert run.output == FULL_REPLIES


def test_whole_session_events_describe_the_transaction() -> None:
    """The events name the client, the sender, each recipient, the message and the end."""
    run = drive([FULL_SESSION])
    assert run.events == [
        Hello("client.example", extended=True),
        MailFrom("alice@example.org", MailParameters()),
        RcptTo("bob@example.net"),
        MessageStart("alice@example.org", ("bob@example.net",), MailParameters()),
        MessageData(b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"),
        MessageEnd(),
        Closed(by_quit=True, mid_transaction=False),
    ]


def test_pipelined_input_in_one_chunk_gets_the_same_replies_in_order() -> None:
    """All commands in a single read (PIPELINING) get the same replies, in order."""
    assert drive([FULL_SESSION]).output == FULL_REPLIES


def test_input_one_byte_at_a_time_gives_the_same_session() -> None:
    """Splitting the input into single bytes changes neither replies nor message data."""
    whole = drive([FULL_SESSION])
    split = drive(FULL_SESSION[i : i + 1] for i in range(len(FULL_SESSION)))
    assert split.output == whole.output
    assert split.message() == whole.message()


def test_commands_may_end_in_a_bare_lf() -> None:
    """Command lines ending in a bare LF are read as if they ended in CRLF."""
    commands = FULL_SESSION.split(b"DATA\r\n")[0].replace(b"\r\n", b"\n")
    run = drive([commands + b"DATA\n" + FULL_SESSION.split(b"DATA\r\n")[1]])
    assert run.output == FULL_REPLIES
    assert run.message() == b"Subject: hi\r\n\r\n.leading dot\r\nbody\r\n"


def test_a_client_ending_every_line_in_lf_never_ends_the_data() -> None:
    """With bare LFs throughout, the '.' line is message text (only CRLF.CRLF ends the data):
    the rest of the input, QUIT included, is the message and the input ends inside it."""
    run = drive([FULL_SESSION.replace(b"\r\n", b"\n")])
    assert run.codes() == [220, 250, 250, 250, 354]
    assert not [e for e in run.events if isinstance(e, MessageEnd)]
    assert run.message() == b"Subject: hi\n\n..leading dot\nbody\n.\nQUIT\n"
    assert run.events[-1] == Closed(by_quit=False, mid_transaction=True, bare_lf_dots=1)


def test_two_messages_in_one_session_are_answered_separately() -> None:
    """After one message the next MAIL starts a fresh transaction with its own recipients."""
    data = session(
        b"HELO c", b"MAIL FROM:<a@x.example>", b"RCPT TO:<b@y.example>", b"DATA", b"one", b".",
        b"MAIL FROM:<>", b"RCPT TO:<c@z.example>", b"DATA", b"two", b".", b"QUIT",
    )
    run = drive([data])
    starts = [e for e in run.events if isinstance(e, MessageStart)]
    assert starts == [
        MessageStart("a@x.example", ("b@y.example",), MailParameters()),
        MessageStart("", ("c@z.example",), MailParameters()),
    ]
    assert run.codes() == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert b"queued as Q1" in run.output and b"queued as Q2" in run.output


def test_helo_gets_a_one_line_reply() -> None:
    """HELO is answered with one 250 line naming the host, without extensions."""
    run = drive([session(b"HELO client", b"QUIT")])
    assert run.output == GREETING + b"250 mail.example\r\n221 2.0.0 Bye\r\n"
    assert run.events[0] == Hello("client", extended=False)


def test_ehlo_without_a_name_is_a_syntax_error() -> None:
    """EHLO needs the client's host name: 501."""
    run = drive([session(b"EHLO", b"QUIT")])
    assert run.replies()[1] == b"501 5.5.4 EHLO needs your host name\r\n"


# --- sequencing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "reply"),
    [
        ((b"RCPT TO:<a@b.example>",), b"503 5.5.1 send MAIL FROM first\r\n"),
        ((b"DATA",), b"503 5.5.1 send MAIL FROM first\r\n"),
        ((b"MAIL FROM:<a@b.example>", b"DATA"), b"503 5.5.1 send RCPT TO first\r\n"),
        (
            (b"MAIL FROM:<a@b.example>", b"MAIL FROM:<c@d.example>"),
            b"503 5.5.1 a transaction is already open (send RSET to start again)\r\n",
        ),
    ],
)
def test_commands_out_of_sequence_get_503(lines: tuple[bytes, ...], reply: bytes) -> None:
    """RCPT or DATA before MAIL, DATA before RCPT and a nested MAIL are refused with 503."""
    run = drive([session(b"EHLO c", *lines, b"QUIT")])
    assert run.replies()[-2] == reply
    assert run.replies()[-1] == b"221 2.0.0 Bye\r\n"


def test_data_after_every_recipient_was_refused_gets_554() -> None:
    """When every RCPT was refused, DATA gets 554 "no valid recipients", not 354."""
    run = drive(
        [session(b"EHLO c", b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y.example>", b"DATA")],
        refuse=lambda address: (550, "5.1.1 no such user"),
    )
    assert run.replies()[-2:] == [
        b"550 5.1.1 no such user\r\n",
        b"554 5.5.1 no valid recipients\r\n",
    ]
    assert not any(isinstance(e, MessageStart) for e in run.events)


def test_rset_drops_the_transaction() -> None:
    """After RSET the sender is forgotten: RCPT is out of sequence again, and Reset is sent."""
    run = drive(
        [session(b"EHLO c", b"MAIL FROM:<a@b.example>", b"RSET", b"RCPT TO:<x@y.example>")]
    )
    assert run.replies()[-2:] == [b"250 2.0.0 Ok\r\n", b"503 5.5.1 send MAIL FROM first\r\n"]
    assert Reset() in run.events


def test_ehlo_inside_a_transaction_resets_it() -> None:
    """EHLO in the middle of a transaction drops it (RFC 5321 4.1.4) and says so with Reset."""
    run = drive([session(b"EHLO c", b"MAIL FROM:<a@b.example>", b"EHLO c", b"DATA")])
    kinds = [type(e) for e in run.events]
    assert kinds[:4] == [Hello, MailFrom, Reset, Hello]
    assert run.replies()[-1] == b"503 5.5.1 send MAIL FROM first\r\n"


def test_mail_before_hello_is_accepted() -> None:
    """A client may start with MAIL without EHLO/HELO, as sendmail and Postfix allow."""
    run = drive([session(b"MAIL FROM:<a@b.example>", b"QUIT")])
    assert run.codes() == [220, 250, 221]


def test_refused_recipient_keeps_the_accepted_ones() -> None:
    """A refused RCPT gets the driver's reply; the message goes to the accepted recipients."""
    data = session(
        b"EHLO c", b"MAIL FROM:<a@b.example>", b"RCPT TO:<good@x.example>",
        b"RCPT TO:<bad@x.example>", b"DATA", b"text", b".",
    )
    run = drive([data], refuse=lambda a: (550, "5.1.1 unknown") if a.startswith("bad") else None)
    assert b"550 5.1.1 unknown\r\n" in run.replies()
    (start,) = [e for e in run.events if isinstance(e, MessageStart)]
    assert start.recipients == ("good@x.example",)


def test_refused_message_gets_the_driver_reply_and_the_session_goes_on() -> None:
    """A refused message gets the given 5xx, then a new transaction works."""
    data = session(
        b"EHLO c", b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y.example>", b"DATA", b"t", b".",
        b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@y.example>", b"DATA", b"u", b".", b"QUIT",
    )
    run = drive([data], message_verdict=lambda n: (554, "5.6.0 bad message") if n == 1 else None)
    assert run.codes() == [220, 250, 250, 250, 354, 554, 250, 250, 354, 250, 221]
    assert b"554 5.6.0 bad message\r\n" in run.replies()


def test_too_many_recipients_get_452() -> None:
    """Past MAX_RECIPIENTS a RCPT gets a temporary 452."""
    rcpts = [b"RCPT TO:<u%d@x.example>" % n for n in range(MAX_RECIPIENTS + 1)]
    run = drive([session(b"EHLO c", b"MAIL FROM:<a@b.example>", *rcpts)])
    assert run.replies()[-1] == b"452 4.5.3 too many recipients (at most 1000)\r\n"
    assert run.codes().count(250) == 2 + MAX_RECIPIENTS


# --- addresses and parameters ---------------------------------------------------------------


def mail_reply(mail: bytes, *rest: bytes) -> list[bytes]:
    """The replies after EHLO to ``mail`` and ``rest``."""
    return drive([session(b"EHLO c", mail, *rest)]).replies()[7:]


def test_null_sender_is_the_empty_string() -> None:
    """MAIL FROM:<> is accepted and gives the null sender."""
    run = drive([session(b"MAIL FROM:<>")])
    assert run.events[0] == MailFrom("", MailParameters())


@pytest.mark.parametrize(
    ("mail", "sender"),
    [
        (b"MAIL FROM: <a@b.example>", "a@b.example"),
        (b"mail from:<a@b.example>", "a@b.example"),
        (b"MAIL FROM:a@b.example", "a@b.example"),
        (b"MAIL FROM:<@relay.example,@other.example:a@b.example>", "a@b.example"),
        (b'MAIL FROM:<"odd name"@b.example>', '"odd name"@b.example'),
        (b"MAIL FROM:<alice>", "alice"),
    ],
)
def test_sender_forms_that_are_accepted(mail: bytes, sender: str) -> None:
    """Spaces after the colon, lower case, bare addresses, source routes, quoted blanks work."""
    run = drive([session(mail)])
    assert run.events[0] == MailFrom(sender, MailParameters())


def test_mail_parameters_are_parsed() -> None:
    """SIZE, BODY and SMTPUTF8 are accepted in any case and reported in MailFrom."""
    run = drive([session(b"MAIL FROM:<a@b.example> size=1234 BODY=8bitmime SMTPUTF8")])
    assert run.events[0] == MailFrom("a@b.example", MailParameters(1234, "8BITMIME", True))


@pytest.mark.parametrize(
    ("mail", "reply"),
    [
        (b"MAIL FROM:<a@b.example> NOTIFY=NEVER",
         b"555 5.5.4 MAIL parameter NOTIFY is not supported\r\n"),
        (b"MAIL FROM:<a@b.example> SIZE=big", b"501 5.5.4 SIZE must be a number of octets\r\n"),
        (b"MAIL FROM:<a@b.example> BODY=BINARYMIME",
         b"501 5.5.4 BODY must be 7BIT or 8BITMIME\r\n"),
        (b"MAIL FROM:<a@b.example> SIZE=1 SIZE=2",
         b"501 5.5.4 MAIL parameter SIZE given twice\r\n"),
        (b"MAIL FROM:<a@b.example> SMTPUTF8=yes", b"501 5.5.4 SMTPUTF8 takes no value\r\n"),
        (b"MAIL TO:<a@b.example>", b"501 5.5.4 syntax: MAIL FROM:<address>\r\n"),
        (b"MAIL FROM:<a@b.example", b"501 5.5.4 syntax: the address has no closing '>'\r\n"),
        (b"MAIL FROM:<a@b.example>SIZE=1",
         b"501 5.5.4 syntax: a space must follow the address\r\n"),
    ],
)
def test_bad_mail_commands_are_refused(mail: bytes, reply: bytes) -> None:
    """Unknown MAIL parameters get 555, bad values and bad syntax 501."""
    assert mail_reply(mail) == [reply]


def test_bad_sender_address_gets_501_naming_the_problem() -> None:
    """A malformed sender is refused with 501 5.1.7 and the address parser's reason."""
    (reply,) = mail_reply(b"MAIL FROM:<a..b@c.example>")
    assert reply.startswith(b"501 5.1.7 invalid address 'a..b@c.example': ")


def test_bad_recipient_address_gets_501_and_is_not_asked_about() -> None:
    """A malformed recipient is refused with 501 5.1.3 before the driver sees it."""
    run = drive([session(b"MAIL FROM:<a@b.example>", b"RCPT TO:<x@@y.example>")])
    assert run.replies()[-1].startswith(b"501 5.1.3 invalid address 'x@@y.example': ")
    assert not any(isinstance(e, RcptTo) for e in run.events)


@pytest.mark.parametrize(
    ("rcpt", "reply"),
    [
        (b"RCPT TO:<>", b"501 5.1.3 empty recipient address\r\n"),
        (b"RCPT TO:<x@y.example> NOTIFY=NEVER",
         b"555 5.5.4 RCPT parameter NOTIFY=NEVER is not supported\r\n"),
        (b"RCPT FROM:<x@y.example>", b"501 5.5.4 syntax: RCPT TO:<address>\r\n"),
    ],
)
def test_bad_rcpt_commands_are_refused(rcpt: bytes, reply: bytes) -> None:
    """An empty recipient, RCPT parameters and a bad RCPT syntax are refused."""
    assert mail_reply(b"MAIL FROM:<a@b.example>", rcpt)[1:] == [reply]


def test_non_ascii_address_needs_smtputf8() -> None:
    """A UTF-8 recipient is refused with 553 5.6.7 unless MAIL FROM said SMTPUTF8."""
    rcpt = "RCPT TO:<jörg@exämple.de>".encode()
    without = mail_reply(b"MAIL FROM:<a@b.example>", rcpt)
    assert without[1] == (
        b"553 5.6.7 a non-ASCII recipient address needs MAIL FROM with SMTPUTF8\r\n"
    )
    run = drive([session(b"MAIL FROM:<a@b.example> SMTPUTF8", rcpt)])
    assert RcptTo("jörg@exämple.de") in run.events


# --- other commands and bad lines -------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"NOOP", b"250 2.0.0 Ok\r\n"),
        (b"VRFY root", b"252 2.5.2 cannot VRFY user; try RCPT to attempt delivery\r\n"),
        (b"HELP", b"214 2.0.0 commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP\r\n"),
        (b"EXPN staff", b"502 5.5.1 EXPN is not implemented\r\n"),
        (b"STARTTLS", b"502 5.5.1 STARTTLS is not implemented\r\n"),
        (b"FROB x", b"500 5.5.2 command not recognized\r\n"),
        (b"", b"500 5.5.2 command not recognized\r\n"),
        (b"\xff\xfe", b"500 5.5.2 command is not valid UTF-8\r\n"),
        (b"DATA now", b"503 5.5.1 send MAIL FROM first\r\n"),
    ],
)
def test_other_commands_get_their_replies(line: bytes, reply: bytes) -> None:
    """NOOP 250, VRFY 252, HELP 214, known-but-unsupported 502, unknown or garbage 500."""
    assert drive([session(line, b"QUIT")]).replies()[1:] == [reply, b"221 2.0.0 Bye\r\n"]


def test_command_length_limit_is_512_octets_with_crlf() -> None:
    """A 510-octet command is read; a 511-octet one gets 500 and the session goes on."""
    fits = b"NOOP " + b"x" * (MAX_COMMAND_OCTETS - 2 - 5)
    too_long = fits + b"x"
    run = drive([session(fits, too_long, b"QUIT")])
    assert run.replies()[1:] == [
        b"250 2.0.0 Ok\r\n",
        b"500 5.5.2 line too long\r\n",
        b"221 2.0.0 Bye\r\n",
    ]


def test_overlong_command_is_dropped_without_holding_it() -> None:
    """A huge command arriving in pieces gets one 500, then the next command is read."""
    pieces = [b"NOOP "] + [b"y" * 1000] * 50 + [b"\r\nQUIT\r\n"]
    run = drive(pieces)
    assert run.replies()[1:] == [b"500 5.5.2 line too long\r\n", b"221 2.0.0 Bye\r\n"]


def test_input_after_quit_is_ignored() -> None:
    """Nothing after QUIT is read or answered."""
    run = drive([session(b"QUIT", b"NOOP"), b"NOOP\r\n"])
    assert run.output == GREETING + b"221 2.0.0 Bye\r\n"


def test_last_command_without_a_line_end_is_still_read() -> None:
    """A final command cut off by the end of input is handled as if it had its CRLF."""
    run = drive([b"NOOP\r\nQUIT"])
    assert run.codes() == [220, 250, 221]


def test_end_of_input_while_idle_closes_cleanly() -> None:
    """Input ending outside a transaction without QUIT is a clean close without a reply."""
    run = drive([session(b"EHLO c")])
    assert run.events[-1] == Closed(by_quit=False, mid_transaction=False)


def test_end_of_input_inside_the_data_loses_the_message() -> None:
    """Input ending before the lone dot closes the session without MessageEnd."""
    run = drive([session(b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>", b"DATA", b"part")])
    assert run.events[-1] == Closed(by_quit=False, mid_transaction=True)
    assert not [e for e in run.events if isinstance(e, MessageEnd)]
    assert run.message() == b"part\r\n"


# --- the data ---------------------------------------------------------------------------------

DATA_PREFIX = session(b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>", b"DATA")


def message_of(*chunks: bytes) -> bytes:
    """The message data the machine passes on for the data ``chunks`` (after DATA)."""
    run = drive([DATA_PREFIX, *chunks])
    assert [e for e in run.events if isinstance(e, MessageEnd)], run.output
    return run.message()


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...x\r\n.\r\n", b"..x\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),
        (b"a.\r\n.b\r\n.\r\n", b"a.\r\nb\r\n"),
        (b". \r\n.\r\n", b" \r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b".\r\n", b""),
        (b"x\r.\r\n.\r\n", b"x\r.\r\n"),
        (b".\n\r\n.\r\n", b"\n\r\n"),
        (b"a\n..b\r\n.\r\n", b"a\n..b\r\n"),
        (b"a\n.\r\n\r\n.\r\n", b"a\n.\r\n\r\n"),
    ],
)
def test_dot_unstuffing_and_the_end_of_data(wire: bytes, message: bytes) -> None:
    """A leading dot is removed from each line (a line ends in CRLF: a dot after a bare LF is
    text); only a line that is exactly '.' after a CRLF (or first) ends the data."""
    assert message_of(wire) == message


SMUGGLED = session(
    b"MAIL FROM:<boss@example.com>", b"RCPT TO:<victim@example.net>", b"DATA",
    b"Subject: forged", b"", b"wire the money",
)


@pytest.mark.parametrize(
    ("near_end", "kept"),
    [
        (b"\n.\n", b"\n.\n"),
        (b"\n.\r\n", b"\n.\r\n"),
        (b"\r\n.\n", b"\r\n\n"),
    ],
)
def test_smuggled_commands_after_a_bare_lf_dot_are_message_text(
    near_end: bytes, kept: bytes
) -> None:
    """SMTP smuggling (CVE-2023-51764): LF.LF, LF.CRLF and CRLF.LF do not end the data, so the
    commands after them are text of the one message (a dot after a bare LF kept, a dot
    starting a CRLF line unstuffed), counted in MessageEnd.bare_lf_dots."""
    wire = DATA_PREFIX + b"Subject: hi\r\n\r\ntext" + near_end + SMUGGLED + b".\r\nQUIT\r\n"
    for chunks in ([wire], [wire[i : i + 1] for i in range(len(wire))]):
        run = drive(chunks)
        assert run.output == (
            GREETING + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
            b"354 End data with <CR><LF>.<CR><LF>\r\n"
            b"250 2.0.0 Ok: queued as Q1\r\n221 2.0.0 Bye\r\n"
        )
        assert [e for e in run.events if isinstance(e, MailFrom | MessageStart)] == [
            MailFrom("a@b.example", MailParameters()),
            MessageStart("a@b.example", ("c@d.example",), MailParameters()),
        ]
        assert run.message() == b"Subject: hi\r\n\r\ntext" + kept + SMUGGLED
        assert [e for e in run.events if isinstance(e, MessageEnd)] == [MessageEnd(bare_lf_dots=1)]


def test_a_lone_dot_with_a_bare_lf_first_in_the_data_does_not_end_it() -> None:
    """'.' LF right after DATA is a line starting with a dot (unstuffed), not the end."""
    run = drive([DATA_PREFIX + b".\nQUIT\r\n.\r\n"])
    assert run.message() == b"\nQUIT\r\n"
    assert run.codes()[-1] == 250
    assert [e for e in run.events if isinstance(e, MessageEnd)] == [MessageEnd(bare_lf_dots=1)]


def test_a_conforming_message_counts_no_bare_lf_dots() -> None:
    """A message without a lone dot next to a bare LF ends with MessageEnd(bare_lf_dots=0)."""
    run = drive([DATA_PREFIX + b"a\n.b\r\n..\r\n.\r\n"])
    assert [e for e in run.events if isinstance(e, MessageEnd)] == [MessageEnd(bare_lf_dots=0)]


def test_a_cr_ending_a_long_line_piece_and_the_lf_after_it_are_one_crlf() -> None:
    """When a long line's piece ends in CR and the LF comes in the next read, '.' CRLF after
    them still ends the data and the CRLF stays whole."""
    line = b"z" * DATA_FRAGMENT_OCTETS
    assert message_of(line + b"\r", b"\n.\r\n") == line + b"\r\n"


def test_a_bare_lf_after_a_long_line_piece_does_not_end_the_data() -> None:
    """A long line's piece followed by LF '.' CRLF is text: the data goes on."""
    line = b"z" * DATA_FRAGMENT_OCTETS
    run = drive([DATA_PREFIX, line, b"\n.\r\nQUIT\r\n"])
    assert run.message() == line + b"\n.\r\nQUIT\r\n"
    assert run.events[-1] == Closed(by_quit=False, mid_transaction=True, bare_lf_dots=1)


def test_end_of_data_split_across_reads_is_found() -> None:
    """CRLF.CRLF arriving one byte per read still ends the message."""
    wire = b"line\r\n.\r\n"
    assert message_of(*(wire[i : i + 1] for i in range(len(wire)))) == b"line\r\n"


def test_commands_pipelined_after_the_data_are_read_as_commands() -> None:
    """Bytes after the lone dot in the same read are the next commands."""
    run = drive([DATA_PREFIX + b"text\r\n.\r\nNOOP\r\nQUIT\r\n"])
    assert run.codes()[-3:] == [250, 250, 221]


def test_a_long_data_line_is_passed_on_in_pieces() -> None:
    """A line longer than DATA_FRAGMENT_OCTETS arrives in pieces, unstuffed, content intact."""
    line = b"." + b"z" * (3 * DATA_FRAGMENT_OCTETS)
    chunks = [line[i : i + 4096] for i in range(0, len(line), 4096)]
    run = drive([DATA_PREFIX, *chunks, b"\r\n.\r\n"])
    pieces = [e.data for e in run.events if isinstance(e, MessageData)]
    assert len(pieces) > 2
    assert b"".join(pieces) == line[1:] + b"\r\n"
    assert max(len(p) for p in pieces) < DATA_FRAGMENT_OCTETS + 4096


def test_lines_over_1000_octets_are_accepted() -> None:
    """Text lines past RFC 5321's 1000 octets are passed on unchanged, not refused."""
    line = b"w" * 5000 + b"\r\n"
    assert message_of(line + b".\r\n") == line


def test_nul_bytes_in_the_data_are_passed_to_the_driver() -> None:
    """The machine does not judge content: NUL bytes reach the submission path, which does."""
    assert message_of(b"a\0b\r\n.\r\n") == b"a\0b\r\n"


# --- driver mistakes ----------------------------------------------------------------------------


def test_next_event_while_a_verdict_is_due_is_a_local_error() -> None:
    """Asking for the next event before answering RcptTo raises LocalProtocolError."""
    server = SmtpServer(HOST)
    server.receive_data(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    events = [server.next_event() for _ in range(4)]
    assert isinstance(events[-1], RcptTo)
    with pytest.raises(LocalProtocolError):
        server.next_event()


def test_a_verdict_for_the_wrong_question_is_a_local_error() -> None:
    """accept_message while a recipient is being checked, or with nothing asked, raises."""
    server = SmtpServer(HOST)
    with pytest.raises(LocalProtocolError):
        server.accept_recipient()
    server.receive_data(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n")
    while not isinstance(server.next_event(), RcptTo):
        pass
    with pytest.raises(LocalProtocolError):
        server.accept_message("Q")
    with pytest.raises(LocalProtocolError):
        server.refuse_recipient(250, "not a refusal")
    server.refuse_recipient(550, "5.1.1 no")
    assert server.state is State.MAIL


def test_every_action_named_in_the_table_exists() -> None:
    """Each TRANSITIONS action is a method of SmtpServer."""
    for transition in TRANSITIONS.values():
        assert callable(getattr(SmtpServer, transition.action))


def test_reply_text_from_the_driver_is_one_clean_line() -> None:
    """CR, LF and non-ASCII in a refusal text cannot break or smuggle reply lines."""
    run = drive(
        [session(b"MAIL FROM:<a@b.example>", b"RCPT TO:<c@d.example>")],
        refuse=lambda address: (550, "no\r\n250 fake é"),
    )
    assert run.replies()[-1] == b"550 no??250 fake \\xe9\r\n"


# --- what submission errors mean -----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (NoUserError("no such user"), 550, "5.1.1"),
        (DataError("bad alias"), 553, "5.1.3"),
        (UsageError("control character"), 553, "5.1.3"),
        (ConfigError("aliases broken"), 451, "4.3.5"),
        (CantCreateError("spool full"), 451, "4.3.0"),
    ],
)
def test_recipient_refusal_by_error_class(error: DmaError, code: int, status: str) -> None:
    """Unknown users and bad addresses are permanent; our own trouble is a temporary 451."""
    assert recipient_refusal(error) == (code, f"{status} {error}")


@pytest.mark.parametrize(
    ("error", "code", "status"),
    [
        (DataError("NUL byte"), 554, "5.6.0"),
        (NoUserError("gone"), 550, "5.1.1"),
        (TempFailure("input ended"), 451, "4.3.0"),
        (ConfigError("dma.conf"), 451, "4.3.5"),
    ],
)
def test_message_refusal_by_error_class(error: DmaError, code: int, status: str) -> None:
    """Bad content is a permanent 554; trouble on our side a temporary 451."""
    assert message_refusal(error) == (code, f"{status} {error}")
