"""What reaches syslog (SPEC 7): facility mail, the `-L` tag, one line per event with the
queue id, and refused submissions too.  The test listens on /dev/log itself (a real
datagram socket, as syslogd would), so it needs root and a machine without a syslogd."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import DmaSite, login_name

DEV_LOG = "/dev/log"
LOG_MAIL = 2 << 3  # facility mail, as syslog(3) encodes it in <PRI>
LOG_INFO, LOG_ERR = 6, 3
_LINE = re.compile(r"<(\d+)>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?([^\[:]+)\[(\d+)\]: (.*)", re.S)


class SyslogListener:
    """Datagrams sent to /dev/log, parsed into (priority, tag, text).

    A thread reads them as they come, as syslogd would: the kernel queues only a few
    datagrams per socket (net.unix.max_dgram_qlen, often 10), and a sender blocks in
    syslog() once they are not read.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._found: list[tuple[int, str, str]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:  # closed: the test is over
                return
            if not data:  # shut down: the test is over
                return
            match = _LINE.match(data.decode(errors="replace"))
            assert match, data
            with self._lock:
                self._found.append(
                    (int(match.group(1)), match.group(2), match.group(4).rstrip("\n\0")))

    def lines(self) -> list[tuple[int, str, str]]:
        """The lines received since the last call (after a moment for stragglers)."""
        time.sleep(0.1)
        with self._lock:
            found, self._found = self._found, []
        return found

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=5)


@pytest.fixture
def syslog_listener() -> Iterator[SyslogListener]:
    """Listen on /dev/log for the test's duration, and remove the socket afterwards."""
    if os.geteuid() != 0:
        pytest.skip("needs root to listen on /dev/log")
    if os.path.lexists(DEV_LOG):
        pytest.skip("a syslog daemon owns /dev/log here; not stealing its socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(DEV_LOG)
    listener = SyslogListener(sock)
    try:
        yield listener
    finally:
        listener.close()
        os.unlink(DEV_LOG)


def test_submission_logs_to_facility_mail_with_the_tag(
    site: DmaSite, syslog_listener: SyslogListener
) -> None:
    """A submission with -L logs "new mail" and "queued" under that tag, facility mail,
    each line starting with the queue id."""
    (item_id,) = site.send(["-L", "cronmail", login_name()], b"Subject: s\n\nbody\n")
    lines = syslog_listener.lines()
    ours = [(pri, text) for pri, tag, text in lines if tag == "cronmail"]
    message_id = item_id.rsplit(".", 1)[0]
    assert {pri for pri, _ in ours} == {LOG_MAIL | LOG_INFO}
    assert any(text.startswith(f"{message_id}: new mail ") for _, text in ours)
    assert any(text.startswith(f"{item_id}: queued to=") for _, text in ours)


def test_refused_submission_is_logged(site: DmaSite, syslog_listener: SyslogListener) -> None:
    """A message refused at submission (unknown local user) leaves an error in syslog
    with the reason and exit code, not only on the caller's stderr."""
    done = site.run(["-L", "refusals", "no-such-user-xyz"], b"x\n")
    assert done.returncode == 67
    errors = [text for pri, tag, text in syslog_listener.lines()
              if tag == "refusals" and pri == LOG_MAIL | LOG_ERR]
    assert len(errors) == 1
    assert "message refused" in errors[0] and "no-such-user-xyz" in errors[0]
    assert "exit=67" in errors[0]


def test_queue_run_logs_delivery(site: DmaSite, syslog_listener: SyslogListener) -> None:
    """A queue run logs its local delivery ("delivered" with the item id) to syslog."""
    (item_id,) = site.send([login_name()], b"Subject: s\n\nbody\n")
    syslog_listener.lines()
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    texts = [text for pri, tag, text in syslog_listener.lines() if tag == "dma"]
    assert any(text.startswith(f"{item_id}: delivered ") for text in texts), texts
