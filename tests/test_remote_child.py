"""The unprivileged remote-delivery child and its root parent (shell/remote_child.py):
reports come through the pipe as they are made, a child that fails or dies leaves its
open addresses deferred with the reason, and the parent believes no line it cannot read
and no address it did not hand out.  The child becomes ``nobody`` here (root only)."""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from dma.adapters.privileges import Identity
from dma.core.ledger import Address, AddressId, Report
from dma.core.outcomes import Outcome, deferred, delivered
from dma.core.report_lines import encode_report
from dma.shell.remote import Parcel
from dma.shell.remote_child import deliver_as

FIRST, SECOND = AddressId("1a.0"), AddressId("1b.0", 1)


class _Log:
    """Records (level, event, values) of every log call, the child's too: each is one
    write to a file opened before the fork."""

    def __init__(self, path: Any) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda event, **values: os.write(
            self.fd, (repr((level, event, values)) + "\n").encode())

    @property
    def lines(self) -> list[tuple[str, str, dict[str, Any]]]:
        import ast

        with open(self.path) as logged:
            return [ast.literal_eval(line) for line in logged]

    def events(self, level: str) -> list[str]:
        return [event for got, event, _ in self.lines if got == level]


@pytest.fixture(name="nobody")
def nobody_fixture() -> Identity:
    if os.geteuid() != 0:
        pytest.skip("the child gives up root: these tests need root")
    entry = pwd.getpwnam("nobody")
    return Identity("nobody", entry.pw_uid, entry.pw_gid)


def _run(identity: Identity, work: Callable[[Report], None], tmp_path: Any
         ) -> tuple[list[tuple[AddressId, Outcome]], _Log]:
    """deliver_as over FIRST and SECOND with ``work`` as the delivery; what the parent heard."""
    heard: list[tuple[AddressId, Outcome]] = []
    log = _Log(tmp_path / "log")
    parcels: list[Any] = [Parcel(Address(FIRST, "a@x.example"), None),  # type: ignore[arg-type]
                          Parcel(Address(SECOND, "b@x.example"), None)]  # type: ignore[arg-type]
    deliver_as(identity, lambda _parcels, report: work(report), parcels,
               lambda address, outcome: heard.append((address, outcome)), log,  # type: ignore[arg-type]
               claims=(), spooldir=str(tmp_path))
    return heard, log


def test_reports_come_through_in_order_from_the_unprivileged_child(
    nobody: Identity, tmp_path: Any
) -> None:
    """Each report the child makes reaches the parent once, in order, and the child ran
    as the identity (uid, gid and only its group), saying so in the log."""
    def work(report: Report) -> None:
        report(FIRST, delivered(f"uid {os.getuid()} gid {os.getgid()} groups {os.getgroups()}"))
        report(SECOND, deferred("451 later"))

    heard, log = _run(nobody, work, tmp_path)
    assert heard == [(FIRST, delivered(f"uid {nobody.uid} gid {nobody.gid} groups "
                                       f"[{nobody.gid}]")),
                     (SECOND, deferred("451 later"))]
    assert log.events("info") == ["remote delivery runs unprivileged"]
    assert log.events("error") == []


def test_a_bug_in_the_child_defers_what_it_did_not_report(nobody: Identity, tmp_path: Any
                                                          ) -> None:
    """An exception in the child's delivery defers every address with it as the reason;
    the parent's ledger keeps the first outcome, so what was reported before stands."""
    def work(report: Report) -> None:
        report(FIRST, delivered("250 ok"))
        raise ZeroDivisionError("boom")

    heard, log = _run(nobody, work, tmp_path)
    assert heard[0] == (FIRST, delivered("250 ok"))
    assert {address for address, _ in heard[1:]} == {FIRST, SECOND}
    assert all(o.kind == "deferred" and "internal error" in o.detail and "boom" in o.detail
               for _, o in heard[1:])
    assert "internal error in remote delivery; the items stay queued" in log.events("error")


def test_a_killed_child_leaves_its_open_addresses_deferred_with_how_it_ended(
    nobody: Identity, tmp_path: Any
) -> None:
    """A child killed after one report: that report stands, and the parent defers every
    address with the signal as the reason and logs the child's pid and status."""
    def work(report: Report) -> None:
        report(FIRST, delivered("250 ok"))
        os.kill(os.getpid(), signal.SIGKILL)

    heard, log = _run(nobody, work, tmp_path)
    assert heard[0] == (FIRST, delivered("250 ok"))
    reasons = {o.detail for _, o in heard[1:]}
    assert len(reasons) == 1 and reasons.pop().endswith("was killed by signal 9")
    [(_, event, values)] = [line for line in log.lines if line[0] == "error"]
    assert event.startswith("remote delivery process ended abnormally")
    assert values["status"] == -9


def test_the_parent_believes_no_bad_line_and_no_address_it_did_not_give(
    nobody: Identity, tmp_path: Any
) -> None:
    """Octets that are no report and a report on another address are logged and dropped;
    the good reports around them are taken."""
    def work(report: Report) -> None:
        fd = report.fd  # type: ignore[attr-defined]
        os.write(fd, b"\xff not a report\n")
        os.write(fd, encode_report(AddressId("other.0"), delivered("250 ok")))
        report(SECOND, delivered("250 ok"))

    heard, log = _run(nobody, work, tmp_path)
    assert heard == [(SECOND, delivered("250 ok"))]
    assert log.events("error") == [
        "ignoring a report of the remote delivery process",
        "ignoring a report of the remote delivery process on an address it was not given",
    ]


def test_a_child_that_cannot_give_up_root_delivers_nothing(tmp_path: Any) -> None:
    """Becoming uid 0 'drops' nothing: root can be had back, so the child refuses to work,
    and every address is deferred with that reason first (the ledger keeps the first)."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    ran: list[bool] = []
    heard, log = _run(Identity("root", 0, 0), lambda report: ran.append(True), tmp_path)
    assert not ran
    assert {address for address, _ in heard[:2]} == {FIRST, SECOND}
    assert all("root could be had back" in outcome.detail for _, outcome in heard[:2])
    assert "remote delivery process cannot run; its items stay queued" in log.events("error")


def test_an_endless_line_stops_the_child_and_is_our_data_error(nobody: Identity,
                                                               tmp_path: Any) -> None:
    """A child that writes more than a report line may hold without a line end is killed
    and DataError ends the hand-over (the run then defers the items with it); the report
    before it was taken."""
    from dma.core.errors import DataError
    from dma.core.report_lines import MAX_REPORT_OCTETS

    def work(report: Report) -> None:
        report(FIRST, delivered("250 ok"))
        os.write(report.fd, b"x" * (MAX_REPORT_OCTETS + 2))  # type: ignore[attr-defined]
        time.sleep(60)  # killed long before

    heard: list[tuple[AddressId, Outcome]] = []
    parcels: list[Any] = [Parcel(Address(FIRST, "a@x.example"), None)]  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(DataError, match="longer than"):
        deliver_as(nobody, lambda _parcels, report: work(report), parcels,
                   lambda address, outcome: heard.append((address, outcome)),
                   _Log(tmp_path / "log"), claims=(), spooldir=str(tmp_path))  # type: ignore[arg-type]
    assert heard == [(FIRST, delivered("250 ok"))]
    assert time.monotonic() - started < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the child was reaped
