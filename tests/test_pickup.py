"""Deletion requests in the pickup pass and the users' views it keeps (shell/pickup.py,
issue 9 item 4), with real dma processes as root on a private spool that has a
maildrop: maildrop files are made ours, then given to another user (nobody) as the
kernel would give a user's own file."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import DmaSite

from dma.adapters.maildrop import MaildropWriter, drop_request
from dma.core.maildrop import DeleteRequest, MaildropEnvelope
from dma.core.user_views import parse_view

if os.geteuid() != 0:
    pytest.skip("the pickup pass runs as root", allow_module_level=True)

NOBODY = 65534


def _maildrop(site: DmaSite) -> str:
    path = site.spool / "maildrop"
    path.mkdir(parents=True, exist_ok=True, mode=0o1733)
    return str(path)


def _drop_message(site: DmaSite, recipient: str, uid: int = NOBODY) -> None:
    """A message in the maildrop as user ``uid`` would hand it in."""
    envelope = MaildropEnvelope(sender="nobody@example.org", recipients=(recipient,))
    with MaildropWriter(_maildrop(site), envelope) as writer:
        writer.file.write(b"Subject: from nobody\n\nhello\n")
        name = writer.finish((recipient,))
    os.chown(os.path.join(_maildrop(site), name), uid, -1)


def _request(site: DmaSite, *item_ids: str, uid: int = NOBODY) -> str:
    name = drop_request(_maildrop(site), DeleteRequest(item_ids))
    os.chown(os.path.join(_maildrop(site), name), uid, -1)
    return name


def _pass(site: DmaSite) -> str:
    """A root queue run that picks up and delivers nothing (DEFER, and an id selector that
    matches no item); its log."""
    done = site.run(["-v", "-qI", "no-such-item"])
    assert done.returncode == 0, done.stderr.decode()
    return done.stderr.decode()


def _view(site: DmaSite, uid: int = NOBODY) -> list[str]:
    path = site.spool / "users" / str(uid) / "queue"
    return [e.item.id for e in parse_view(path.read_bytes(), str(path)).entries]


def test_a_request_deletes_its_owners_items_only(site: DmaSite) -> None:
    """nobody's request naming two of nobody's items, root's item and an id that is no
    item deletes nobody's two; the other two get the same refusal line; the request file
    is gone; nobody's view then lists the item left and root's mail is in no view."""
    _drop_message(site, "a@example.net")
    _drop_message(site, "b@example.net")
    _drop_message(site, "c@example.net")
    root_ids = site.send(["d@example.net"], b"Subject: root's\n\nhello\n")
    _pass(site)
    mine = _view(site)
    assert len(mine) == 3 and not set(root_ids) & set(mine)
    name = _request(site, mine[0], mine[1], root_ids[0], "0000.0")
    log = _pass(site)
    assert sorted(item["id"] for item in site.queue()) == sorted([mine[2], *root_ids])
    assert not os.path.exists(os.path.join(_maildrop(site), name))
    refused = [line for line in log.splitlines() if "deletion by request refused" in line]
    assert len(refused) == 2
    assert {line.split(":", 2)[1].strip() for line in refused} == {root_ids[0], "0000.0"}
    assert len({line.split(": ", 2)[2] for line in refused}) == 1  # the same words
    assert sum("deleted by request" in line for line in log.splitlines()) == 2
    assert _view(site) == [mine[2]]
    assert os.listdir(site.spool / "users") == [str(NOBODY)]


def test_the_view_follows_roots_own_changes(site: DmaSite) -> None:
    """Root's -Qd rewrites the views at once: nobody's view loses the deleted item, and a
    uid left with nothing has no view file (its directory stays)."""
    _drop_message(site, "a@example.net")
    _pass(site)
    (item_id,) = _view(site)
    view = site.spool / "users" / str(NOBODY) / "queue"
    assert stat.S_IMODE(view.stat().st_mode) == 0o400 and view.stat().st_uid == NOBODY
    done = site.run(["-Qd", item_id])
    assert done.returncode == 0, done.stderr.decode()
    assert not view.exists() and view.parent.is_dir()


def test_a_bad_request_goes_to_the_quarantine(site: DmaSite) -> None:
    """A request file that does not parse is moved to the quarantine with its log line,
    deletes nothing, and the pass goes on to the next file."""
    _drop_message(site, "a@example.net")
    _pass(site)
    (item_id,) = _view(site)
    bad = Path(_maildrop(site)) / "bad-request"
    bad.write_bytes(b"PYDMA-MAILDROP-DELETE 1\nItem: " + item_id.encode() + b"\n")
    os.chown(bad, NOBODY, -1)
    _drop_message(site, "b@example.net")
    log = _pass(site)
    assert "moved to the quarantine" in log and "does not end with an End line" in log
    assert len(_view(site)) == 2
    listed = [json.loads(line)["id"] for line in site.run(["-bj"]).stdout.decode().splitlines()]
    assert "maildrop-bad-request" in listed
