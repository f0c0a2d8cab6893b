"""Spool compatibility with the real C dma (Debian's 0.13, extracted by scripts/setup).

Both programs share one spool directory: the C dma lists what we queued, and we list
and read what the C dma queued (SPEC 4).  The C dma reads the compiled-in
/etc/dma/dma.conf and, started as root, becomes user ``mail``; so this test writes
that file (restoring whatever was there, even on failure) and makes the spool
usable by group mail.  Its quirks are in reference/dma-behaviour.md section 9.
"""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DmaSite, command
from smtp_peers import (  # noqa: F401 (fixtures)
    Script,
    ScriptedSink,
    scripted_sink_fixture,
    wait_until,
)

from dma.adapters.spool import Spool

REPO = Path(__file__).resolve().parents[1]
CDMA = REPO / ".cache" / "cdma" / "usr" / "sbin" / "dma"
ETC_DMA = Path("/etc/dma")
CDMA_MAILNAME = "cdma.example"

pytestmark = pytest.mark.slow


@dataclass(frozen=True, slots=True)
class Shared:
    """A spool directory both programs use, and our configuration for it."""

    site: DmaSite
    spool: Path

    def cdma(self, args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        """Run the C dma (it reads /etc/dma/dma.conf)."""
        return subprocess.run(
            [str(CDMA), *args], input=stdin, capture_output=True, timeout=30,
            env=self.site.environ, check=False,
        )


def _backup(path: Path, keep: Path) -> bool:
    """Move ``path`` aside into ``keep`` if it exists; True when something was moved."""
    if not os.path.lexists(path):
        return False
    shutil.move(str(path), str(keep))
    return True


@pytest.fixture
def shared(site: DmaSite) -> Iterator[Shared]:
    """A group-mail spool outside pytest's private tmp tree, named in /etc/dma/dma.conf.

    pytest's tmp directories are mode 0700, so user mail could not reach a spool
    there: the spool lives in its own temporary directory, mode 0711.
    """
    if not CDMA.exists():
        pytest.fail(f"the C dma is missing at {CDMA}: run scripts/setup to extract it")
    if os.geteuid() != 0:
        pytest.skip("needs root: the C dma reads /etc/dma/dma.conf and switches to user mail")
    mail_gid = grp.getgrnam("mail").gr_gid
    top = Path(tempfile.mkdtemp(prefix="dma-cdma-"))
    keep = Path(tempfile.mkdtemp(prefix="dma-etc-backup-"))
    existed = _backup(ETC_DMA, keep / "dma")
    try:
        top.chmod(0o711)
        spool = top / "spool"
        spool.mkdir()
        os.chown(spool, 0, mail_gid)
        spool.chmod(0o2770)
        aliases = top / "aliases"
        aliases.write_text("# none\n")
        aliases.chmod(0o644)
        ETC_DMA.mkdir(mode=0o755)
        (ETC_DMA / "dma.conf").write_text(
            f"SPOOLDIR {spool}\nALIASES {aliases}\nMAILNAME {CDMA_MAILNAME}\nDEFER\n"
        )
        site.spool = spool
        site.write_config()
        yield Shared(site, spool)
    finally:
        shutil.rmtree(ETC_DMA, ignore_errors=True)
        if existed:
            shutil.move(str(keep / "dma"), str(ETC_DMA))
        shutil.rmtree(keep, ignore_errors=True)
        shutil.rmtree(top, ignore_errors=True)


def c_blocks(text: str) -> list[tuple[str, str, str]]:
    """(ID, From, To) of each block of a C dma listing."""
    return re.findall(r"^ID\t: (.*)\nFrom\t: (.*)\nTo\t: (.*)$", text, re.M)


def test_c_dma_lists_what_we_queued(shared: Shared) -> None:
    """Items we queue (two recipients, hard-linked M, and a null sender) show in the C
    dma's -bp with the same ID, From and To as in our listing."""
    site = shared.site
    ours = site.send(["-f", "us@example.org", "a@example.org", "b@example.org"], b"x\n")
    ours += site.send(["-f", "", "c@example.org"], b"y\n")
    assert len(ours) == 3
    for item_id in ours:
        assert os.stat(shared.spool / f"Q{item_id}").st_gid == grp.getgrnam("mail").gr_gid
    done = shared.cdma(["-bp"])
    assert done.returncode == 0, done.stderr
    listed = c_blocks(done.stdout.decode())
    expected = {(i["id"], i["sender"], i["recipient"]) for i in site.queue()}
    assert {item_id for item_id, _, _ in listed} == set(ours)
    # The C dma shows the null sender as an empty field where we show <>.
    assert set(listed) == expected
    ours_text = c_blocks(site.run(["-bp"]).stdout.decode())
    assert {(i, "" if s == "<>" else s, r) for i, s, r in ours_text} == expected


def test_we_list_and_read_what_the_c_dma_queued(shared: Shared) -> None:
    """A message the C dma queues with DEFER is listed by our -bp and -bj, and our
    spool reading gives its sender, recipients and body."""
    site = shared.site
    body = b"first line\n..dot stays\nlast line\n"
    done = shared.cdma(
        ["-f", "bob@example.org", "alice@example.org", "carol@example.org"],
        b"Subject: from the C dma\n\n" + body,
    )
    assert done.returncode == 0, done.stderr
    items = site.queue()
    assert sorted(i["recipient"] for i in items) == ["alice@example.org", "carol@example.org"]
    for item in items:
        assert item["sender"] == "bob@example.org"
        assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]+", str(item["id"]))
        message = site.message(str(item["id"]))
        assert item["size"] == len(message)
        assert message.startswith(b"Received: from ")
        assert f"by {CDMA_MAILNAME} (DragonFly Mail Agent v0.13)".encode() in message
        assert b"\nSubject: from the C dma\n" in message
        assert b"\nFrom: <bob@example.org>\n" in message
        assert message.endswith(b"\n\n" + body)
    text = site.run(["-bp"]).stdout.decode()
    assert {(i, s, r) for i, s, r in c_blocks(text)} == {
        (str(i["id"]), "bob@example.org", str(i["recipient"])) for i in items
    }
    assert shared.cdma(["-bp"]).stdout.decode().count("ID\t: ") == 2
    spool = Spool(str(shared.spool))
    assert spool.problems() == []
    claim = spool.claim(str(items[0]["id"]))
    assert claim is not None
    with claim:
        assert claim.item.sender == "bob@example.org"
        assert claim.item.recipient == items[0]["recipient"]
        assert Path(claim.message_path).read_bytes().endswith(body)


def test_c_dma_and_we_share_one_queue(shared: Shared) -> None:
    """With items from both programs in one spool, each lists all of them."""
    site = shared.site
    ours = site.send(["-f", "us@example.org", "ours@example.org"], b"x\n")
    done = shared.cdma(["-f", "c@example.org", "theirs@example.org"], b"Subject: c\n\ny\n")
    assert done.returncode == 0, done.stderr
    theirs = {c[2] for c in c_blocks(shared.cdma(["-bp"]).stdout.decode())}
    mine = {str(i["recipient"]) for i in site.queue()}
    assert theirs == mine == {"ours@example.org", "theirs@example.org"}
    assert len(ours) == 1


def _point_both_at(shared: Shared, port: int) -> None:
    """Make the C dma (/etc/dma/dma.conf) and us deliver to a smarthost on loopback ``port``."""
    conf = ETC_DMA / "dma.conf"
    conf.write_text(conf.read_text() + f"SMARTHOST 127.0.0.1\nPORT {port}\n")
    shared.site.write_config(f"MAILNAME {CDMA_MAILNAME}\nSMARTHOST 127.0.0.1\nPORT {port}\n")


def test_c_dma_delivers_items_we_rescheduled(
    shared: Shared, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """Q files we rewrote after a failed attempt (X-Attempts, X-Next-Try, X-Last-Error)
    are still read and delivered by the C dma's queue run, and leave the spool."""
    site = shared.site
    ids = site.send(["-f", "us@example.org", "a@example.org", "b@example.org"], b"S: x\n\nhi\n")
    done = site.run(["-q"])  # the site's dead smarthost: both items are deferred
    assert done.returncode == 0, done.stderr
    for item_id in ids:
        assert b"X-Attempts: 1\n" in site.queue_file(item_id)
        assert b"X-Last-Error: " in site.queue_file(item_id)
    sink = scripted_sink()
    _point_both_at(shared, sink.port)
    done = shared.cdma(["-q"])
    assert done.returncode == 0, done.stderr
    assert wait_until(lambda: len(sink.messages) == 2, timeout=20)
    assert sorted(r for m in sink.messages for r in m.recipients) == [
        "a@example.org", "b@example.org"]
    assert wait_until(lambda: not any(n.startswith("Q") for n in os.listdir(shared.spool)))


def test_c_dma_and_our_queue_runs_deliver_each_item_once(
    shared: Shared, scripted_sink: Callable[..., ScriptedSink]
) -> None:
    """A C dma `-q` and ours on one spool deliver every item exactly once: items our run
    holds are skipped by the C dma, and runs started together split the queue."""
    site = shared.site
    sink = scripted_sink(Script(data_delay=0.2))
    _point_both_at(shared, sink.port)
    site.write_config(f"MAILNAME ours.example\nSMARTHOST 127.0.0.1\nPORT {sink.port}\n")

    def queue(prefix: str) -> list[str]:
        recipients = [f"{prefix}{n}@example.org" for n in range(6)]
        for recipient in recipients:
            site.send(["-f", "us@example.org", recipient], b"Subject: once\n\nonce\n")
        return recipients

    def ours() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*command("dma"), "-C", str(site.config), "-q"], env=site.environ,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )

    def delivered(prefix: str) -> list[str]:
        return sorted(r for m in sink.messages for r in m.recipients if r.startswith(prefix))

    def spool_empty() -> bool:
        return not any(n.startswith("Q") for n in os.listdir(shared.spool))

    # Our run holds every item (it claims them before it delivers): the C dma skips them.
    first = queue("held")
    runner = ours()
    assert wait_until(lambda: any(c.commands[:1] == ["EHLO ours.example"]
                                  for c in sink.connections))
    assert shared.cdma(["-q"]).returncode == 0
    assert runner.wait(timeout=60) == 0
    assert wait_until(spool_empty, timeout=30)
    time.sleep(0.5)  # a second copy from a C dma child would have arrived by now
    assert delivered("held") == sorted(first)
    assert all(c.commands[:1] == ["EHLO ours.example"] for c in sink.connections)

    # Both started together: each item goes out once, whoever takes it.
    second = queue("race")
    theirs = shared.cdma(["-q"])
    runner = ours()
    assert theirs.returncode == 0, theirs.stderr
    assert runner.wait(timeout=60) == 0
    assert wait_until(spool_empty, timeout=30)
    time.sleep(0.5)
    assert delivered("race") == sorted(second)
