"""Queue run selectors as sendmail combines them: -qI/-qR/-qS, negated with -q!, -qf, -qp.

``select_entries`` is checked on values; the command line end to end with real dma
processes and local delivery.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import DmaSite, command

from dma.core.cmdline import QueueSelector
from dma.core.mailq import QueueEntry, select_entries
from dma.core.queuefile import QueueItem

ITEMS = [
    QueueEntry(QueueItem("aa.0", "alice@senders.example", "bob@example.org"), 1.0, 1),
    QueueEntry(QueueItem("bb.0", "carol@senders.example", "dan@example.org"), 2.0, 1),
    QueueEntry(QueueItem("cc.0", "alice@senders.example", "erin@example.org"), 3.0, 1),
]


def picked(*selectors: QueueSelector) -> list[str]:
    """The ids select_entries keeps of ITEMS."""
    return [entry.item.id for entry in select_entries(ITEMS, selectors)]


def test_no_selector_keeps_everything() -> None:
    """Without selectors every item is run."""
    assert picked() == ["aa.0", "bb.0", "cc.0"]


def test_selectors_of_one_kind_are_alternatives() -> None:
    """Two -qR select the items whose recipient contains either text (case-insensitive)."""
    assert picked(QueueSelector("recipient", "BOB"), QueueSelector("recipient", "erin")) == [
        "aa.0", "cc.0"]


def test_selectors_of_different_kinds_must_all_match() -> None:
    """-qS alice -qR erin keeps only the item from alice to erin, as sendmail does."""
    assert picked(QueueSelector("sender", "alice"), QueueSelector("recipient", "erin")) == [
        "cc.0"]


def test_negated_selector_keeps_the_items_without_the_text() -> None:
    """-q!S alice keeps the items whose sender does not contain alice; with -qI it must
    also match the id."""
    assert picked(QueueSelector("sender", "alice", negate=True)) == ["bb.0"]
    assert picked(QueueSelector("id", "cc", negate=True),
                  QueueSelector("sender", "ALICE")) == ["aa.0"]


def test_negated_recipient_runs_the_others_end_to_end(site: DmaSite) -> None:
    """`dma -q!R bob` delivers every queued item except the one for bob (local delivery)."""
    site.write_aliases("")
    site.send(["root"], b"Subject: for root\n\nbody\n")
    (kept,) = site.send(["bob@example.org"], b"Subject: for bob\n\nbody\n")
    site.write_config(defer=False)
    done = site.run(["-q!R", "bob"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Subject: for root" in (site.maildir / "root").read_bytes()
    assert [item["id"] for item in site.queue()] == [kept]


def test_qf_runs_the_queue_once_in_the_foreground(site: DmaSite) -> None:
    """`sendmail -qf` delivers what is queued and returns (it is -q, not a usage error)."""
    site.send(["root"], b"Subject: qf\n\nbody\n")
    site.write_config(defer=False)
    done = site.run(["-qf"], program="sendmail")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Subject: qf" in (site.maildir / "root").read_bytes()
    assert site.queue() == []


@pytest.mark.slow
def test_qp_alone_is_a_persistent_runner(site: DmaSite) -> None:
    """`dma -qp` keeps running (a queue runner, first pass at once) until SIGTERM ends it."""
    site.send(["root"], b"Subject: qp\n\nbody\n")
    site.write_config(defer=False)
    runner = subprocess.Popen(
        [*command("dma"), "-C", str(site.config), "-qp"], env=site.environ,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (site.maildir / "root").exists():
            time.sleep(0.1)
        assert (site.maildir / "root").exists()
        assert runner.poll() is None
    finally:
        runner.send_signal(signal.SIGTERM)
        runner.wait(timeout=20)
    assert runner.returncode == 0
