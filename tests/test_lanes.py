"""Several connections to one next hop (SPEC 5.1): ``dma -q`` against loopback sinks.

A queue run shares a hop's messages among up to MAXCONNECTIONS connections, each reused
and pipelined; a server that turns connections away (421, Exchange Online's limit)
lowers the count for the rest of the run and nothing is bounced; a message that breaks
every connection it is sent on is kept back after the second, and the others go on.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    Script,
    ScriptedSink,
    bounces,
    q_fields,
    scripted_sink_fixture,
    write_remote_config,
)

ScriptedFactory = Callable[..., ScriptedSink]

QUEUE_MANY = """\
import os, sys
from dma.core.cmdline import parse_command_line
from dma.shell.settings import load_settings
from dma.shell.submit import submit

class Quiet:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None

config, recipients = sys.argv[1], sys.argv[2:]
for recipient in recipients:
    invocation = parse_command_line(["sendmail", "-C", config, recipient])
    settings = load_settings(invocation.config_path, os.environ)
    message = f"Subject: lane test\\nTo: {recipient}\\n\\nfor {recipient}\\n".encode()
    submit(invocation, settings, Quiet(), [message])
"""


def queue_many(site: DmaSite, recipients: list[str]) -> None:
    """Queue one message per recipient (DEFER), in one process: fast enough for 40."""
    done = subprocess.run([sys.executable, "-c", QUEUE_MANY, str(site.config), *recipients],
                          capture_output=True, env=site.environ, cwd=site.root, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert len(site.queue()) == len(recipients)


def recipients(count: int) -> list[str]:
    return [f"r{n}@example.org" for n in range(count)]


def arrived(sink: ScriptedSink) -> Counter[str]:
    """How often each recipient's message reached the sink."""
    return Counter(r for arrival in sink.messages for r in arrival.recipients)


def test_a_hop_gets_maxconnections_connections(site: DmaSite,
                                               scripted_sink: ScriptedFactory) -> None:
    """Forty messages to a server slow to take the data go out over four connections at
    once (MAXCONNECTIONS 4), each reused and pipelined, every message exactly once."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING"), data_delay=0.05))
    write_remote_config(site, sink.port, "MAXCONNECTIONS 4\n", defer=True)
    queue_many(site, recipients(40))
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode()
    assert arrived(sink) == Counter(recipients(40))
    assert sink.peak == 4
    assert len(sink.connections) == 4
    for connection in sink.connections:  # each one reused: one EHLO, many transactions
        assert sum(c.startswith("EHLO") for c in connection.commands) == 1
        assert sum(c.startswith("MAIL FROM:") for c in connection.commands) >= 2
    assert site.queue() == []


def test_maxconnections_one_keeps_one_connection(site: DmaSite,
                                                scripted_sink: ScriptedFactory) -> None:
    """MAXCONNECTIONS 1: the same forty messages share a single connection."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING"), data_delay=0.01))
    write_remote_config(site, sink.port, "MAXCONNECTIONS 1\n", defer=True)
    queue_many(site, recipients(40))
    assert site.run(["-q"]).returncode == 0
    assert arrived(sink) == Counter(recipients(40))
    assert len(sink.connections) == 1


def test_a_server_that_turns_connections_away_lowers_the_count(
        site: DmaSite, scripted_sink: ScriptedFactory) -> None:
    """A server that serves two sessions at once and greets more with 421: every message
    is delivered once, none bounced or left queued, and no further connection is turned
    away after the first ones (the hop's limit stays lowered for the run)."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING"), data_delay=0.02,
                                max_sessions=2))
    write_remote_config(site, sink.port, "MAXCONNECTIONS 4\n", defer=True)
    queue_many(site, recipients(40))
    done = site.run(["-q", "-v"])
    assert done.returncode == 0, done.stderr.decode()
    assert arrived(sink) == Counter(recipients(40))
    assert site.queue() == []
    assert bounces(site) == []
    assert 1 <= sink.turned_away <= 2  # the first wave only: lanes 3 and 4
    assert sink.peak == 2
    assert b"fewer connections to it for the rest of this run" in done.stderr


def test_a_message_that_breaks_connections_does_not_hold_the_others(
        site: DmaSite, scripted_sink: ScriptedFactory) -> None:
    """A message whose data makes the server hang up is tried on two connections, then
    kept back (deferred with the reason); the thirty-nine others are delivered once."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING"), data_delay=0.02,
                                drop_data_of="r5@example.org"))
    write_remote_config(site, sink.port, "MAXCONNECTIONS 4\n", defer=True)
    queue_many(site, recipients(40))
    done = site.run(["-q", "-v"])
    assert done.returncode == 0, done.stderr.decode()  # -q: a deferral is no error
    others = [r for r in recipients(40) if r != "r5@example.org"]
    assert arrived(sink) == Counter(others)
    left = site.queue()
    assert [item["recipient"] for item in left] == ["r5@example.org"]
    assert bounces(site) == []
    tries = [c for c in sink.connections
             if any("RCPT TO:<r5@example.org>" in command for command in c.commands)]
    assert len(tries) == 2
    assert b"not offered again in this attempt" in done.stderr
    assert "connection closed" in q_fields(site, left[0]["id"])["X-Last-Error"]


@pytest.mark.parametrize("maxconnections", [2, 8])
def test_the_count_never_exceeds_maxconnections(site: DmaSite, scripted_sink: ScriptedFactory,
                                                maxconnections: int) -> None:
    """However many messages wait, no more than MAXCONNECTIONS connections are open."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "PIPELINING"), data_delay=0.02))
    write_remote_config(site, sink.port, f"MAXCONNECTIONS {maxconnections}\n", defer=True)
    queue_many(site, recipients(48))
    assert site.run(["-q"]).returncode == 0
    assert arrived(sink) == Counter(recipients(48))
    assert 2 <= sink.peak <= maxconnections
