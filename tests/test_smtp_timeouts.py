"""Which timeout the driver applies while the SMTP client waits (SmtpClient.reply_timeout)."""

from __future__ import annotations

from dma.core.smtp import (
    FINAL_DOT_FACTOR,
    Closed,
    Envelope,
    MessageDone,
    Ready,
    ReadyForData,
    SessionPolicy,
    SmtpClient,
    Transmit,
)

TIMEOUT = 300.0


def _waits(ehlo: bytes) -> list[tuple[str, float]]:
    """Run one message through a client; each time it waits for a reply, the last
    command sent and the timeout it gives."""
    client = SmtpClient(SessionPolicy("client.example", "no", False))
    replies = [b"220 mx ESMTP\r\n", ehlo, b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n",
               b"250 queued\r\n", b"221 bye\r\n"]
    sent = "(connect)"
    waits: list[tuple[str, float]] = []
    while True:
        event = client.next_event()
        if event is None:
            waits.append((sent, client.reply_timeout(TIMEOUT)))
            client.receive_data(replies.pop(0) if replies else b"")
        elif isinstance(event, Ready):
            data = client.send_message(Envelope("s@here.example", ("r@x.example",), 3, False))
            sent = data.decode().splitlines()[-1] if data else sent
        elif isinstance(event, ReadyForData):
            list(client.send_data_lines([b"hi\n"]))
            sent = "."
        elif isinstance(event, MessageDone):
            client.quit()
            sent = "QUIT"
        elif isinstance(event, Closed):
            return waits
        elif isinstance(event, Transmit):
            sent = event.commands[-1]


def test_only_the_final_dot_gets_the_longer_wait() -> None:
    """Greeting, EHLO, MAIL, RCPT, DATA and QUIT wait TIMEOUT; the final dot twice that."""
    assert FINAL_DOT_FACTOR == 2.0
    assert _waits(b"250 mx\r\n") == [
        ("(connect)", 300.0), ("EHLO client.example", 300.0),
        ("MAIL FROM:<s@here.example>", 300.0), ("RCPT TO:<r@x.example>", 300.0),
        ("DATA", 300.0), (".", 600.0), ("QUIT", 300.0)]


def test_pipelined_commands_still_wait_timeout() -> None:
    """With PIPELINING, MAIL, RCPT and DATA go in one write and each of their three
    replies waits TIMEOUT, not the final dot's longer wait."""
    assert _waits(b"250-mx\r\n250 PIPELINING\r\n") == [
        ("(connect)", 300.0), ("EHLO client.example", 300.0),
        ("DATA", 300.0), ("DATA", 300.0), ("DATA", 300.0), (".", 600.0), ("QUIT", 300.0)]
