"""The SMTP driver (shell/smtp_connection.py) given HopAttempts' steps, against loopback servers.

These drive ``SmtpDriver.session(hop, step, messages)`` the way the hop loop does:
each ``TryAddress`` carries the credentials and the TLS policy, and the plain-text
retry after a failed STARTTLS handshake is a step of core's, not the driver's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from smtp_peers import (  # noqa: F401 (fixtures)
    LOGIN,
    PASSWORD,
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    scripted_sink_fixture,
)

from dma.core.config import Config
from dma.core.credentials import Credentials
from dma.core.errors import SoftwareError
from dma.core.hop_attempts import HopAttempts, HopDone, HopTarget, SessionResult, TryAddress
from dma.core.ledger import AddressId
from dma.core.outcomes import Outcome
from dma.core.routing import NextHop, Target
from dma.core.transport import QueuedRecipient, Security, plan_transactions
from dma.shell.outgoing_message import OutgoingMessage, narrowed
from dma.shell.settings import Settings
from dma.shell.smtp_connection import SmtpDriver

MAY = Security(False, "opportunistic", False, None)
MUST = Security(False, "required", False, None)
PLAIN = Security(False, "no", False, None)


class Recorder:
    """A logger (adapters/log.Logger) that keeps each line as (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def bind(self, **values: Any) -> Recorder:
        return self

    def debug(self, event: str, **values: Any) -> None:
        self.lines.append(("debug", event, values))

    def info(self, event: str, **values: Any) -> None:
        self.lines.append(("info", event, values))

    def warning(self, event: str, **values: Any) -> None:
        self.lines.append(("warning", event, values))

    def error(self, event: str, **values: Any) -> None:
        self.lines.append(("error", event, values))

    def events(self) -> list[str]:
        return [event for _, event, _ in self.lines]


class Hop:
    """One hop to a loopback port, its messages on disk, a driver and what it settled."""

    def __init__(self, tmp: Path, port: int, recipients: tuple[str, ...], *,
                 insecure: bool = False) -> None:
        self.hop = NextHop("smarthost", "127.0.0.1", port)
        self.target = Target("127.0.0.1", ("127.0.0.1",), 0)
        self.log = Recorder()
        self.settled: list[tuple[AddressId, Outcome]] = []
        settings = Settings(Config(timeout=5, insecure=insecure), str(tmp / "dma.conf"),
                            False, "dma.test", "dma.test")
        self.driver = SmtpDriver(settings, self.log,
                                 lambda i, o: self.settled.append((i, o)))
        path = tmp / "Mabc"
        path.write_bytes(b"Subject: hi\n\nhello\n")
        items = [QueuedRecipient(AddressId(f"abc.{n}"), "s@dma.test", r)
                 for n, r in enumerate(recipients)]
        (plan,) = plan_transactions(items)
        self.messages = [OutgoingMessage(plan, (str(path),) * len(items), 0, False)]
        self.ids = list(plan.item_ids)

    def walk(self, attempts: HopAttempts[AddressId]) -> tuple[list[TryAddress[AddressId]],
                                                         list[SessionResult[AddressId]],
                                                         dict[AddressId, Outcome]]:
        """The hop loop of shell/remote.py: every step, each TryAddress to the driver."""
        steps, results = [], []
        while not isinstance(step := attempts.next_step(), HopDone):
            assert isinstance(step, TryAddress)
            offered = [m for m in (narrowed(m, set(step.item_ids)) for m in self.messages) if m]
            result = self.driver.session(self.hop, step, offered)
            steps.append(step)
            results.append(result)
            attempts.session_ended(result)
        return steps, results, dict(step.outcomes)


def test_failed_handshake_under_opportunistic_tls_is_retried_plain_by_core(
    tmp_path: Path, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """The driver reports the broken handshake; core's next step is the same address in
    plain text, which the driver logs as before and delivers over."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "STARTTLS"), broken_starttls=True))
    hop = Hop(tmp_path, sink.port, ("bob@example.org",))
    steps, results, outcomes = hop.walk(HopAttempts([HopTarget(hop.target)], hop.ids,
                                                    security=MAY))
    assert [s.tls_fallback is not None for s in steps] == [False, True]
    assert results[0].tls_handshake_failed and not results[0].settled
    assert results[0].tls_handshake_failed == steps[1].tls_fallback
    assert outcomes[AddressId("abc.0")].kind == "delivered"
    assert hop.settled == [(AddressId("abc.0"), outcomes[AddressId("abc.0")])]
    first, second = sink.connections
    assert first.commands == ["EHLO dma.test", "STARTTLS"]
    assert "STARTTLS" not in second.commands
    assert hop.log.events()[:3] == [
        "trying remote delivery",
        "TLS handshake failed; reconnecting to go on without TLS (OPPORTUNISTIC_TLS)",
        "trying remote delivery",
    ]
    warning = hop.log.lines[1][2]
    assert warning["error"] == steps[1].tls_fallback
    assert warning["host"] == f"127.0.0.1 [127.0.0.1]:{sink.port}"
    assert hop.log.lines[2][2]["tls"] == "no (TLS handshake failed)"
    assert hop.log.lines[2][2]["verification"] == "none"
    assert "connection lost" not in hop.log.events()


def test_failed_handshake_with_tls_required_is_a_lost_connection_and_no_retry(
    tmp_path: Path, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """With TLS required the broken handshake is logged as a lost connection, reported,
    and core gives no plain-text try: the item is deferred with the failure."""
    sink = scripted_sink(Script(extensions=("8BITMIME", "STARTTLS"), broken_starttls=True))
    hop = Hop(tmp_path, sink.port, ("bob@example.org",))
    steps, results, outcomes = hop.walk(HopAttempts([HopTarget(hop.target)], hop.ids,
                                                    security=MUST))
    assert len(steps) == 1 and len(sink.connections) == 1
    failure = results[0].failure
    assert failure is not None and failure.startswith(f"127.0.0.1 [127.0.0.1]:{sink.port}: ")
    assert results[0].tls_handshake_failed is not None
    only = outcomes[AddressId("abc.0")]
    assert only.kind == "deferred" and only.detail == failure
    assert "connection lost" in hop.log.events()


def test_the_try_carries_the_credentials_the_driver_logs_in_with(
    tmp_path: Path, aiosmtpd_sink: Callable[..., AiosmtpdSink]
) -> None:
    """The driver authenticates with the TryAddress's credentials, looking nothing up."""
    sink = aiosmtpd_sink(auth=True, auth_require_tls=False)
    hop = Hop(tmp_path, sink.port, ("bob@example.org",), insecure=True)
    _, _, outcomes = hop.walk(HopAttempts([HopTarget(hop.target, Credentials(LOGIN, PASSWORD))],
                                          hop.ids, security=PLAIN))
    assert outcomes[AddressId("abc.0")].kind == "delivered"
    [arrival] = sink.wait_for(1)
    assert arrival.login == LOGIN


def test_the_452_follow_on_sends_the_rest_in_the_same_connection(
    tmp_path: Path, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """A server taking two recipients per transaction gets three in two transactions of
    one connection; every item is settled as its transaction ends."""
    sink = scripted_sink(Script(max_recipients=2))
    hop = Hop(tmp_path, sink.port, ("a@example.org", "b@example.org", "c@example.org"))
    steps, _, outcomes = hop.walk(HopAttempts([HopTarget(hop.target)], hop.ids,
                                              security=PLAIN))
    assert len(steps) == 1 and len(sink.connections) == 1
    assert [m.recipients for m in sink.wait_for(2)] == [
        ["a@example.org", "b@example.org"], ["c@example.org"]]
    assert [i for i, _ in hop.settled] == [AddressId(f"abc.{n}") for n in range(3)]
    assert {o.kind for o in outcomes.values()} == {"delivered"}
    assert "server takes fewer recipients per message; sending the others in another " \
        "transaction" in hop.log.events()


def test_a_try_without_security_is_our_bug(tmp_path: Path) -> None:
    """A TryAddress with no TLS policy raises SoftwareError before connecting."""
    hop = Hop(tmp_path, 9, ("bob@example.org",))
    with pytest.raises(SoftwareError):
        hop.driver.session(hop.hop, TryAddress(hop.target, "127.0.0.1", (AddressId("abc.0"),)),
                           hop.messages)
    assert hop.log.lines == []
