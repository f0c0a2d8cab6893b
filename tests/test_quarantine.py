"""Damaged spool items end to end: moved to SPOOLDIR/quarantine/, listed, deleted, released.

Real dma processes on a private spool (SPEC 4, issue 7 finding 7): an item whose M
file is a symbolic link, a FIFO or a directory, a Q file whose ``ID:`` names another
item, a Q file that is garbage.  Each must be listed by mailq with its reason, never
delivered as something else, deleted by ``-Qd`` and put back by ``-Qr`` once fixed.
"""

from __future__ import annotations

import json
import os
import pwd
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import DmaSite
from smtp_peers import (  # noqa: F401 (fixtures)
    AiosmtpdSink,
    aiosmtpd_sink_fixture,
    write_remote_config,
)
from test_cdma_compat import Shared, c_blocks, shared  # noqa: F401 (fixture)

SinkFactory = Callable[..., AiosmtpdSink]


def message(subject: str) -> bytes:
    """A small message whose subject and body name it."""
    return f"Subject: {subject}\n\nthis is message {subject}\n".encode()


def listing(site: DmaSite) -> list[dict[str, Any]]:
    """``dma -bj``, quarantined items included, one dict per item."""
    done = site.run(["-bj"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return [json.loads(line) for line in done.stdout.decode().splitlines()]


def quarantined(site: DmaSite) -> dict[str, dict[str, Any]]:
    """The quarantined items of ``dma -bj``, by id."""
    return {item["id"]: item for item in listing(site) if item["quarantined"]}


def deliver_queue(site: DmaSite) -> None:
    """Run ``dma -q`` with delivery on (then DEFER again); it must exit 0 and not hang."""
    site.write_config(defer=False)
    done = site.run(["-q", "-v"], timeout=60)
    site.write_config()
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def break_message(site: DmaSite, item_id: str, how: str) -> None:
    """Replace an item's M file by a symbolic link, a FIFO or a directory."""
    path = site.spool / f"M{item_id}"
    path.unlink()
    if how == "symlink":
        os.symlink("/etc/passwd", path)
    elif how == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
        (path / "inside").write_text("x")


@pytest.mark.parametrize(
    ("how", "kind"),
    [("symlink", "a symbolic link"), ("fifo", "a FIFO"), ("directory", "a directory")],
)
def test_message_file_not_regular_is_quarantined_listed_and_deleted(
    site: DmaSite, how: str, kind: str
) -> None:
    """An item whose M is a symlink, FIFO or directory is listed by mailq with the reason
    (not 'Mail queue is empty'), moved to quarantine/<id>/ unfollowed, not delivered, and
    -Qd removes it; a queue run goes on with the other items."""
    (broken,) = site.send(["root"], message("broken"))
    (good,) = site.send(["root"], message("good"))
    break_message(site, broken, how)
    done = site.run(["-bp"])
    text = done.stdout.decode()
    assert done.returncode == 0 and "Mail queue is empty" not in text
    block = text.split(f"ID\t: {broken}\n", 1)[1]
    assert f"Status\t: quarantined 0s ago: its message file M{broken} is {kind}\n" in block
    assert f"{broken}: damaged; moved to the quarantine".encode() in done.stderr
    moved = site.spool / "quarantine" / broken
    assert sorted(os.listdir(moved)) == sorted([f"Q{broken}", f"M{broken}", "reason"])
    if how == "symlink":
        assert os.readlink(moved / f"M{broken}") == "/etc/passwd"
    assert {f"Q{broken}", f"M{broken}"}.isdisjoint(site.spool_names())
    assert quarantined(site)[broken]["damage"] == f"its message file M{broken} is {kind}"
    deliver_queue(site)
    mailbox = (site.maildir / "root").read_bytes()
    assert b"this is message good" in mailbox and b"this is message broken" not in mailbox
    assert b"root:x:0:0" not in mailbox
    assert [item["id"] for item in listing(site)] == [broken]
    assert good not in {item["id"] for item in listing(site)}
    done = site.run(["-Qd", broken])
    assert done.returncode == 0 and f"{broken}: deleted".encode() in done.stdout
    assert listing(site) == [] and not moved.exists()


def test_queue_run_quarantines_what_it_claims(site: DmaSite) -> None:
    """A plain `dma -q` that claims a damaged item (garbage Q) logs it once, moves it
    aside and delivers the rest; the next run does not see it again."""
    (garbage,) = site.send(["root"], message("garbage"))
    (good,) = site.send(["root"], message("good"))
    (site.spool / f"Q{garbage}").write_bytes(b"this is no queue file\0\n")
    site.write_config(defer=False)
    first = site.run(["-q", "-v"])
    second = site.run(["-q", "-v"])
    site.write_config()
    assert first.returncode == 0, first.stderr.decode(errors="replace")
    assert [line for line in first.stderr.splitlines() if garbage.encode() in line] == [
        line for line in first.stderr.splitlines() if b"cannot take queue item" in line
    ]
    assert first.stderr.count(b"cannot take queue item") == 1
    assert f"moved to {site.spool}/quarantine/{garbage}".encode() in first.stderr
    assert garbage.encode() not in second.stderr
    assert b"this is message good" in (site.maildir / "root").read_bytes()
    [item] = listing(site)
    assert (item["id"], item["quarantined"]) == (garbage, True)
    assert item["sender"] is None and "NUL octet" in item["damage"]
    assert good != garbage


def name_other_item(site: DmaSite, item_id: str, other: str) -> None:
    """Make the ID line of ``item_id``'s Q file name ``other``."""
    queue_file = site.spool / f"Q{item_id}"
    text = queue_file.read_bytes()
    queue_file.write_bytes(text.replace(f"ID: {item_id}".encode(), f"ID: {other}".encode()))


def _two_local_items(site: DmaSite) -> tuple[str, str]:
    """Item A for root and item B for nobody (two mailboxes), A's Q file naming B."""
    if os.geteuid() != 0:
        pytest.skip("needs root: delivers to two users' mailboxes")
    pwd.getpwnam("nobody")
    (a,) = site.send(["root"], message("A"))
    (b,) = site.send(["nobody"], message("B"))
    name_other_item(site, a, b)
    return a, b


def test_queue_file_naming_another_item_is_never_delivered_as_it(site: DmaSite) -> None:
    """A's Q file says ID: B.  A is quarantined with that reason and nothing reaches A's
    recipient; B is delivered to its own recipient, once, with its own message."""
    a, b = _two_local_items(site)
    deliver_queue(site)
    assert not (site.maildir / "root").exists()
    nobody = (site.maildir / "nobody").read_bytes()
    assert nobody.count(b"this is message") == 1 and b"this is message B" in nobody
    moved = quarantined(site)
    assert list(moved) == [a]
    assert f"says ID '{b}' but is named for item '{a}'" in moved[a]["damage"]
    assert moved[a]["recipient"] == "root"


def test_release_puts_a_fixed_item_back_and_it_is_delivered(site: DmaSite) -> None:
    """-Qr refuses an item that is still damaged (exit 65, it stays quarantined); once its
    ID line is fixed, -Qr puts it back with its arrival time and `dma -q` delivers A's own
    message to A's recipient."""
    a, _b = _two_local_items(site)
    arrival = os.stat(site.spool / f"Q{a}").st_mtime
    deliver_queue(site)
    done = site.run(["-Qr", a])
    assert done.returncode == 65
    assert f"quarantined item {a} is still damaged".encode() in done.stderr
    assert list(quarantined(site)) == [a]
    held = site.spool / "quarantine" / a / f"Q{a}"
    time.sleep(0.01)
    held.write_bytes(held.read_bytes().replace(b"ID: " + _b.encode(), b"ID: " + a.encode()))
    done = site.run(["-Qr", a])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert f"{a}: released as {a}".encode() in done.stdout
    [item] = listing(site)
    assert (item["id"], item["quarantined"], item["recipient"]) == (a, False, "root")
    assert item["arrival"] == pytest.approx(arrival, abs=0.001)
    assert not (site.spool / "quarantine" / a).exists()
    deliver_queue(site)
    mailbox = (site.maildir / "root").read_bytes()
    assert b"this is message A" in mailbox and b"this is message B" not in mailbox
    assert listing(site) == []


def test_garbage_queue_file_release_after_a_rewrite(site: DmaSite) -> None:
    """A garbage Q is listed as (unreadable) with its reason; -Qb refuses it (exit 65); an
    admin who rewrites the Q file can release it, and an unknown name is exit 66."""
    (item_id,) = site.send(["root"], message("rewritten"))
    good_text = site.queue_file(item_id)
    (site.spool / f"Q{item_id}").write_bytes(b"\xff\xfe garbage")
    text = site.run(["-bp"]).stdout.decode()
    assert f"ID\t: {item_id}\nFrom\t: (unreadable)\nTo\t: (unreadable)\n" in text
    assert "1 quarantined" in text
    done = site.run(["-Qb", item_id])
    assert done.returncode == 65 and b"not bounced" in done.stderr
    (site.spool / "quarantine" / item_id / f"Q{item_id}").write_bytes(good_text)
    assert site.run(["-Qr", "nosuch.0"]).returncode == 66
    assert site.run(["-Qr", item_id]).returncode == 0
    assert [entry["id"] for entry in site.queue()] == [item_id]


def test_latin1_sender_from_the_c_dma_is_no_damage(site: DmaSite) -> None:
    """A Q file holding a Latin-1 sender (as the C dma writes it) is listed as a queued
    item, not quarantined."""
    (item_id,) = site.send(["root"], message("latin1"))
    queue_file = site.spool / f"Q{item_id}"
    queue_file.write_bytes(queue_file.read_bytes().replace(b"Sender: ", b"Sender: j\xf6rg"))
    [item] = listing(site)
    assert (item["id"], item["quarantined"]) == (item_id, False)
    assert item["sender"].startswith("j\ufffdrg")
    assert not (site.spool / "quarantine").exists()


def test_delete_all_empties_the_quarantine_too(site: DmaSite) -> None:
    """-Qd ALL deletes queued and quarantined items alike, a directory M included."""
    (broken,) = site.send(["root"], message("broken"))
    site.send(["root"], message("fine"))
    break_message(site, broken, "directory")
    assert len(listing(site)) == 2
    done = site.run(["-Qd", "ALL"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert listing(site) == []
    assert os.listdir(site.spool / "quarantine") == []


def test_old_lone_message_directory_does_not_stop_the_queue_run(site: DmaSite) -> None:
    """An hour-old M<id> directory with no Q is quarantined by the run's clean-up instead
    of failing the run (unlink of a directory), and the run delivers the rest."""
    (item_id,) = site.send(["root"], message("good"))
    lone = site.spool / "Mdeadbeef.0"
    lone.mkdir()
    old = time.time() - 7200
    os.utime(lone, (old, old))
    deliver_queue(site)
    assert b"this is message good" in (site.maildir / "root").read_bytes()
    moved = quarantined(site)
    assert list(moved) == ["deadbeef.0"]
    assert "is a directory and no queue file names it" in moved["deadbeef.0"]["damage"]
    assert item_id not in moved


def test_remote_items_never_carry_another_items_message(
    site: DmaSite, aiosmtpd_sink: SinkFactory
) -> None:
    """With remote delivery, A's Q naming B must not send B's (or A's) message to A's
    recipient: only B's message reaches only B's recipient."""
    sink = aiosmtpd_sink()
    write_remote_config(site, sink.port, defer=True)
    (a,) = site.send(["a@example.org"], message("A"))
    (b,) = site.send(["b@example.org"], message("B"))
    name_other_item(site, a, b)
    write_remote_config(site, sink.port)
    done = site.run(["-q"])
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    [arrival] = sink.wait_for(1)
    time.sleep(0.3)
    assert len(sink.messages) == 1
    assert arrival.recipients == ["b@example.org"]
    assert b"this is message B" in arrival.content
    assert list(quarantined(site)) == [a]


@pytest.mark.slow
def test_c_dma_lists_the_queue_beside_a_quarantine(shared: Shared) -> None:  # noqa: F811
    """The C dma reads only the flat spool (names starting with Q): with a quarantined item
    in SPOOLDIR/quarantine/ its -bp exits 0 and lists exactly the queued items."""
    site = shared.site
    (broken,) = site.send(["-f", "us@example.org", "x@example.org"], b"x\n")
    (good,) = site.send(["-f", "us@example.org", "y@example.org"], b"y\n")
    break_message(site, broken, "fifo")
    assert list(quarantined(site)) == [broken]
    done = shared.cdma(["-bp"])
    assert done.returncode == 0, done.stderr
    assert [block[0] for block in c_blocks(done.stdout.decode())] == [good]
    assert (shared.spool / "quarantine" / broken / f"M{broken}").exists()


def test_quarantine_is_private(site: DmaSite) -> None:
    """The quarantine directory is made mode 0700, like the spool."""
    (item_id,) = site.send(["root"], message("x"))
    break_message(site, item_id, "symlink")
    listing(site)
    assert (site.spool / "quarantine").stat().st_mode & 0o777 == 0o700
    assert Path(site.spool / "quarantine" / item_id).stat().st_mode & 0o777 == 0o700


def test_mailq_lists_the_queue_when_the_quarantine_is_unreadable(site: DmaSite) -> None:
    """A quarantine that cannot be opened (a symbolic link in its place) is named on stderr
    while the queued items are still listed."""
    (item_id,) = site.send(["root"], message("x"))
    os.symlink("/tmp", site.spool / "quarantine")
    done = site.run(["-bp"])
    assert done.returncode == 0
    assert f"ID\t: {item_id}\n".encode() in done.stdout
    assert b"mailq: cannot open the quarantine" in done.stderr


def test_an_item_named_like_a_second_directory_gets_its_own(site: DmaSite) -> None:
    """Two damaged items with the id abc fill quarantine/abc and quarantine/abc-2; a
    third item whose real id is abc-2 gets a directory of its own instead of sharing
    abc-2 (review finding): all three are listed, each with its reason."""
    site.spool.mkdir(exist_ok=True)

    def damaged(item_id: str) -> None:
        (site.spool / f"Q{item_id}").write_bytes(b"garbage without a colon\n")
        (site.spool / f"M{item_id}").write_bytes(message(item_id))
        assert site.run(["-bp"]).returncode == 0  # the listing moves it aside

    damaged("abc")
    damaged("abc")
    damaged("abc-2")
    directories = sorted(os.listdir(site.spool / "quarantine"))
    assert len([d for d in directories if d.startswith("abc")]) == 3
    for directory in directories:
        reason = (site.spool / "quarantine" / directory / "reason").read_text()
        expected = "abc-2" if directory.startswith("abc-2-") else "abc"
        assert f"Item: {expected}\n" in reason, (directory, reason)
