"""Queue runs end to end: ``dma -q``, selectors, retry bookkeeping, expiry, runners and locks.

Messages are queued with DEFER and delivered by queue runs to sinks on loopback;
the tests look at what arrived, the Q files (X-Attempts, X-Next-Try, mtime kept
as the arrival time) and the sender's mailbox for bounces (SPEC 1, 4, 5.1, 5.7).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from conftest import DmaSite, command
from smtp_peers import (  # noqa: F401 (fixtures)
    AiosmtpdSink,
    Script,
    ScriptedSink,
    aiosmtpd_sink_fixture,
    bounces,
    delivery_status,
    free_port,
    q_fields,
    queued,
    scripted_sink_fixture,
    wait_until,
    write_remote_config,
)

MESSAGE = b"Subject: queued\n\nwaiting in the queue\n"
SinkFactory = Callable[..., AiosmtpdSink]
ScriptedFactory = Callable[..., ScriptedSink]


def _queue_run(site: DmaSite, *options: str) -> None:
    done = site.run(["-q", *options], timeout=60)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def _popen(site: DmaSite, *args: str) -> subprocess.Popen[bytes]:
    """Start ``dma -C conf args`` in the background, output discarded."""
    return subprocess.Popen(
        [*command("dma"), "-C", str(site.config), *args], env=site.environ, cwd=site.root,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


@contextmanager
def _running(site: DmaSite, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A background dma that is killed (by its own pid) if the test leaves it running."""
    process = _popen(site, *args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_q_delivers_deferred_items(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """Items queued with DEFER stay put until `dma -q` delivers them all."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    site.send(["ann@example.org"], MESSAGE)
    site.send(["ben@example.org", "cat@example.org"], MESSAGE)
    time.sleep(0.3)
    assert sink.messages == []
    assert len(site.queue()) == 3
    _queue_run(site)
    arrivals = sink.wait_for(2)
    assert sorted(r for a in arrivals for r in a.recipients) == [
        "ann@example.org", "ben@example.org", "cat@example.org"]
    assert site.queue() == []


def test_selectors_pick_items(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """-qR, -qS and -qI deliver only the items whose recipient, sender or id matches."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    site.send(["-f", "first@senders.example", "alice@example.org"], MESSAGE)
    site.send(["-f", "second@senders.example", "bob@example.org"], MESSAGE)
    [carol_id] = site.send(["-f", "third@senders.example", "carol@example.org"], MESSAGE)
    site.send(["-f", "fourth@senders.example", "dan@example.org"], MESSAGE)

    _queue_run(site, "-qRALICE")  # case-insensitive, attached
    assert [a.recipients for a in sink.wait_for(1)] == [["alice@example.org"]]
    assert set(queued(site)) == {"bob@example.org", "carol@example.org", "dan@example.org"}

    _queue_run(site, "-qS", "second@")  # separate argument
    assert [a.sender for a in sink.wait_for(2)][1] == "second@senders.example"
    assert set(queued(site)) == {"carol@example.org", "dan@example.org"}

    _queue_run(site, f"-qI{carol_id}")
    assert sink.wait_for(3)[2].recipients == ["carol@example.org"]
    assert set(queued(site)) == {"dan@example.org"}

    _queue_run(site, "-qR", "nobody-matches")
    time.sleep(0.2)
    assert len(sink.messages) == 3
    assert set(queued(site)) == {"dan@example.org"}


def test_deferred_items_keep_arrival_and_count_attempts(site: DmaSite) -> None:
    """Each failed -q adds to X-Attempts, sets X-Next-Try, and keeps the Q file's mtime."""
    write_remote_config(site, free_port(), defer=True)
    [item_id] = site.send(["bob@example.org"], MESSAGE)
    q_path = site.spool / f"Q{item_id}"
    arrival = time.time() - 600
    os.utime(q_path, (arrival, arrival))
    for attempt in (1, 2):
        before = int(time.time())
        _queue_run(site)
        fields = q_fields(site, item_id)
        assert fields["X-Attempts"] == str(attempt)
        assert int(fields["X-Next-Try"]) >= before + 60
        assert "refused" in fields["X-Last-Error"].lower()
        assert fields["Recipient"] == "bob@example.org"
        assert abs(os.stat(q_path).st_mtime - arrival) < 1
    [item] = site.queue()
    assert item["attempts"] == 2
    assert item["age"] >= 599
    assert bounces(site) == []


def test_expired_item_bounces_at_next_run(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """QUEUELIFETIME 2s: a young item is deferred; once older than that, the next -q bounces it."""
    sink = scripted_sink(Script(greeting="421 4.3.2 try again later"))
    write_remote_config(site, sink.port, "QUEUELIFETIME 2s\n", defer=True)
    [item_id] = site.send(["bob@example.org"], MESSAGE)
    _queue_run(site)
    assert q_fields(site, item_id)["X-Attempts"] == "1"
    assert bounces(site) == []
    time.sleep(2.2)
    _queue_run(site)
    assert len(sink.connections) == 2
    assert site.queue() == []
    [report] = bounces(site)
    status = delivery_status(report, "bob@example.org")
    assert status["action"] == "failed"
    assert status["status"] == "4.4.7"  # RFC 3463: delivery time expired
    assert "421" in status.get("diagnostic-code", "")


def test_parallel_queue_runs_deliver_once(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """Two `dma -q` started together never deliver the same item twice."""
    sink = scripted_sink(Script(data_delay=0.1))
    write_remote_config(site, sink.port, defer=True)
    recipients = [f"user{n}@example.org" for n in range(8)]
    for recipient in recipients:
        site.send([recipient], MESSAGE)
    with _running(site, "-q") as first, _running(site, "-q") as second:
        assert first.wait(timeout=60) == 0
        assert second.wait(timeout=60) == 0
    assert len(sink.connections) >= 1
    delivered = sorted(r for a in sink.messages for r in a.recipients)
    assert delivered == sorted(recipients)
    assert site.queue() == []


def test_queue_runner_repeats_and_holds_the_lock(
    site: DmaSite, aiosmtpd_sink: SinkFactory
) -> None:
    """`dma -q1s` delivers new items pass after pass; a second -q1s runs once and exits."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    with _running(site, "-q1s") as runner:
        site.send(["one@example.org"], MESSAGE)
        sink.wait_for(1, timeout=10)
        site.send(["two@example.org"], MESSAGE)
        assert sink.wait_for(2, timeout=10)[1].recipients == ["two@example.org"]
        second = site.run(["-q1s"], timeout=20)
        assert second.returncode == 0, second.stderr.decode(errors="replace")
        assert runner.poll() is None
        assert wait_until(lambda: site.queue() == [], timeout=5)


def test_queue_runner_honours_next_try(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """A -q1s runner does not retry a deferred item every second: it waits for X-Next-Try."""
    sink = scripted_sink(Script(greeting="421 4.3.2 busy"))
    write_remote_config(site, sink.port, defer=True)
    [item_id] = site.send(["bob@example.org"], MESSAGE)
    with _running(site, "-q1s"):
        assert wait_until(lambda: len(sink.connections) >= 1, timeout=10)
        time.sleep(2.5)
    assert len(sink.connections) == 1
    assert q_fields(site, item_id)["X-Attempts"] == "1"


def test_sigterm_stops_the_runner(site: DmaSite, aiosmtpd_sink: SinkFactory) -> None:
    """SIGTERM ends a -q1s runner promptly with exit status 0, and frees its lock."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    with _running(site, "-q1s") as runner:
        site.send(["one@example.org"], MESSAGE)
        sink.wait_for(1, timeout=10)
        started = time.monotonic()
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    with _running(site, "-q1s") as successor:
        site.send(["two@example.org"], MESSAGE)
        sink.wait_for(2, timeout=10)
        assert successor.poll() is None  # it took the lock: a runner, not a single pass


def _with_descriptor_limit(soft: int, hard: int | None = None) -> Callable[[], None]:
    """A preexec_fn that sets the child's open-file limits (hard defaults to soft)."""
    import resource

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))

    return lower


def test_big_queue_runs_within_a_small_descriptor_limit(
    site: DmaSite, aiosmtpd_sink: SinkFactory
) -> None:
    """A queue much larger than the open-file limit is still delivered in one `dma -q`
    (items are claimed a batch at a time, not all at once)."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    recipients = [f"r{n}@example.org" for n in range(90)]
    site.send(recipients, MESSAGE)
    assert len(site.queue()) == 90
    done = subprocess.run(
        [*command("dma"), "-C", str(site.config), "-q"], env=site.environ, cwd=site.root,
        capture_output=True, timeout=120, check=False, preexec_fn=_with_descriptor_limit(48),
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert b"Traceback" not in done.stderr
    assert wait_until(lambda: len({r for a in sink.messages for r in a.recipients}) == 90)
    assert sorted(r for a in sink.messages for r in a.recipients) == sorted(recipients)
    assert site.queue() == []


def test_queue_run_raises_a_low_soft_descriptor_limit(
    site: DmaSite, scripted_sink: ScriptedFactory
) -> None:
    """With a low soft open-file limit but room under the hard one, `dma -q` raises its
    own limit and sends a queue bigger than the soft limit over one connection."""
    sink = scripted_sink(Script())
    write_remote_config(site, sink.port, defer=True)
    recipients = [f"r{n}@example.org" for n in range(60)]
    for chunk in (recipients[:30], recipients[30:]):
        site.send(chunk, MESSAGE)
    done = subprocess.run(
        [*command("dma"), "-C", str(site.config), "-q"], env=site.environ, cwd=site.root,
        capture_output=True, timeout=120, check=False,
        preexec_fn=_with_descriptor_limit(40, 4096),
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert sorted(r for a in sink.wait_for(2) for r in a.recipients) == sorted(recipients)
    assert len(sink.connections) == 1
