"""A record cut short by a killed writer is undone by the next one (SPEC 5.2, issue 7):
each mbox append writes its intent under the spool first; the next writer, holding the
locks, cuts the mailbox back when what follows the recorded length is that record alone.
"""

from __future__ import annotations

import io
import mailbox
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

from conftest import DmaSite, command, login_name

from dma.adapters import mailbox as local
from dma.core.mbox import AppendIntent, from_line, render_intent

MOMENT = datetime(2026, 12, 6, 1, 2, 3)
FIRST = b"From a@b Sun Dec  6 01:02:03 2026\nSubject: first\n\nkept\n\n"


def _dead_writer(box: Path, intents: Path, tail: bytes, head: bytes | None = None) -> None:
    """What a writer killed mid-append leaves: its intent, and ``tail`` after FIRST."""
    box.write_bytes(FIRST)
    info = box.stat()
    intents.mkdir(exist_ok=True)
    head = head if head is not None else from_line("x@y", MOMENT)
    intent = AppendIntent(info.st_dev, info.st_ino, len(FIRST), head)
    path = local._intent_path(str(intents), str(box))
    assert path is not None
    Path(path).write_bytes(render_intent(intent))
    with open(box, "ab") as handle:
        handle.write(tail)


def test_a_record_cut_short_is_removed_before_the_next_append(tmp_path: Path) -> None:
    """Half a record after the recorded length is cut off, the new record follows the
    old mailbox whole, the log note says so, and the intent is gone."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    _dead_writer(box, intents, from_line("x@y", MOMENT) + b"Subject: cut\n\nhalf a li")
    where = local.deliver(str(box), io.BytesIO(b"Subject: new\n\nwhole\n"), "n@m", MOMENT,
                          intent_dir=str(intents))
    assert "cut short by a delivery that was killed" in where
    assert box.read_bytes() == FIRST + from_line("n@m", MOMENT) + b"Subject: new\n\nwhole\n\n"
    assert os.listdir(intents) == []


def test_a_record_appended_after_the_cut_keeps_everything(tmp_path: Path) -> None:
    """When another program appended a record after the cut one, nothing is removed:
    both stay (readers see the cut one as a short message) and the new one follows."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    other = b"\n\nFrom other@z Sun Dec  6 01:02:04 2026\nSubject: other\n\nbody\n\n"
    _dead_writer(box, intents, from_line("x@y", MOMENT) + b"Subject: cut\n\nhalf" + other)
    before = box.read_bytes()
    local.deliver(str(box), io.BytesIO(b"Subject: new\n\nwhole\n"), "n@m", MOMENT,
                  intent_dir=str(intents))
    assert box.read_bytes().startswith(before)
    assert os.listdir(intents) == []


def test_text_that_is_not_the_recorded_record_is_left_alone(tmp_path: Path) -> None:
    """A mailbox rewritten since (the recorded separator line is not at the offset) is
    never cut."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    _dead_writer(box, intents, b"From someone@else Sun Dec  6 01:02:09 2026\nSubject: s\n")
    before = box.read_bytes()
    local.deliver(str(box), io.BytesIO(b"Subject: new\n\nwhole\n"), "n@m", MOMENT,
                  intent_dir=str(intents))
    assert box.read_bytes().startswith(before)


def test_an_append_leaves_no_intent_behind(tmp_path: Path) -> None:
    """A normal append writes its intent and removes it once the record is durable."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    local.deliver(str(box), io.BytesIO(b"Subject: a\n\nb\n"), "a@b", MOMENT,
                  intent_dir=str(intents))
    assert os.listdir(intents) == []


def _messages(box: Path) -> list[bytes]:
    return [bytes(m) for m in mailbox.mbox(str(box))] if box.exists() else []


def test_sigkill_inside_a_real_append_leaves_one_whole_message(site: DmaSite) -> None:
    """dma -q killed with SIGKILL while it appends a 20 MB message to the mbox; the next
    dma -q leaves exactly one copy of it, whole (the C dma and our old code left the cut
    record and then a whole one)."""
    user = login_name()
    body = b"".join(b"line %07d " % n + b"x" * 60 + b"\n" for n in range(300_000))
    box = site.maildir / user
    for _attempt in range(5):
        if box.exists():
            box.unlink()
        site.send([user], b"Subject: big\n\n" + body)
        site.write_config(defer=False)
        runner = subprocess.Popen([*command("dma"), "-C", str(site.config), "-q"],
                                  env=site.environ, cwd=site.root)
        while runner.poll() is None and not (box.exists() and box.stat().st_size > 0):
            time.sleep(0.0005)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        cut = box.stat().st_size if box.exists() else 0
        if 0 < cut < len(body):  # the kill landed inside the append: the case to test
            break
        site.run(["-q"])  # finish this attempt's message, then try again
        site.write_config()
    else:
        raise AssertionError("no kill landed inside the append in five attempts")
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr
    (message,) = _messages(box)
    assert message.endswith(body)
    assert site.queue() == []


def test_a_separator_glued_to_the_cut_text_keeps_everything(tmp_path: Path) -> None:
    """A program that appends without a newline first (`cat >>`) glues its separator to
    the cut line: that is another record, so nothing is cut (review finding)."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    foreign = b"From c@x Mon Jan  1 00:00:00 2024\nSubject: FOREIGN\n\nimportant\n\n"
    _dead_writer(box, intents, from_line("x@y", MOMENT) + b"Subject: two\n\npartial li" + foreign)
    before = box.read_bytes()
    local.deliver(str(box), io.BytesIO(b"Subject: new\n\nwhole\n"), "n@m", MOMENT,
                  intent_dir=str(intents))
    assert box.read_bytes().startswith(before)


def test_an_intent_that_cannot_be_written_does_not_stop_delivery(tmp_path: Path) -> None:
    """When the intent directory cannot be written (a full or read-only spool; here a
    file stands where the directory should be), the message is appended all the same."""
    box, intents = tmp_path / "bob", tmp_path / "intents"
    intents.mkdir()
    path = local._intent_path(str(intents), str(box))
    assert path is not None
    os.mkdir(path)  # the intent's own name is taken by a directory: open() fails
    local.deliver(str(box), io.BytesIO(b"Subject: a\n\nb\n"), "a@b", MOMENT,
                  intent_dir=str(intents))
    assert b"Subject: a" in box.read_bytes()
