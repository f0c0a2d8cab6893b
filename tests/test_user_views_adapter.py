"""SPOOLDIR/users as root writes it (adapters/user_views.py): each uid's view in a
directory of its own, owned and readable by that uid alone; nothing a user puts in their
own directory is followed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dma.adapters.user_views import UserViews, read_view, view_path

if os.geteuid() != 0:
    pytest.skip("writing views for other uids needs root", allow_module_level=True)

UID = 65534  # nobody


def _facts(path: Path) -> tuple[int, int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


def test_views_are_written_owned_by_their_uid(tmp_path: Path) -> None:
    """users/ is root:root 0711 (even in a set-gid spool), users/<uid>/ <uid>:root 0500,
    users/<uid>/queue <uid>:root 0400 with the octets given, and nothing else is left."""
    tmp_path.chmod(0o2751)
    with UserViews(str(tmp_path)) as views:
        views.write(UID, b"first\n")
        views.write(UID, b"second\n")
        assert views.names() == [str(UID)]
    users = tmp_path / "users"
    assert _facts(users) == (0, 0, 0o711)
    assert _facts(users / str(UID)) == (UID, 0, 0o500)
    assert _facts(users / str(UID) / "queue") == (UID, 0, 0o400)
    assert os.listdir(users / str(UID)) == ["queue"]
    assert read_view(str(tmp_path), UID) == b"second\n"
    assert view_path(str(tmp_path), UID) == str(users / str(UID) / "queue")


def test_a_removed_view_leaves_its_directory(tmp_path: Path) -> None:
    """remove() takes the view away and keeps the directory (its existence tells others
    nothing new); removing what is not there is no error; reading it then gives None."""
    with UserViews(str(tmp_path)) as views:
        views.write(UID, b"x\n")
        views.remove(str(UID))
        views.remove(str(UID))
        views.remove("4242")
    assert os.listdir(tmp_path / "users" / str(UID)) == []
    assert read_view(str(tmp_path), UID) is None
    assert read_view(str(tmp_path), 4242) is None


def test_what_a_user_plants_in_their_directory_is_not_followed(tmp_path: Path) -> None:
    """A symbolic link named queue is replaced, not written through; a directory named
    queue makes that uid's write fail and is left alone; root chowns nothing by name."""
    target = tmp_path / "target"
    target.write_bytes(b"root's file\n")
    with UserViews(str(tmp_path)) as views:
        views.write(UID, b"x\n")
    mine = tmp_path / "users" / str(UID)
    mine.chmod(0o700)  # the user owns it: they may do this
    (mine / "queue").unlink()
    (mine / "queue").symlink_to(target)
    with UserViews(str(tmp_path)) as views:
        views.write(UID, b"view\n")
    assert target.read_bytes() == b"root's file\n" and _facts(target)[0] == 0
    assert not (mine / "queue").is_symlink() and (mine / "queue").read_bytes() == b"view\n"
    (mine / "queue").unlink()
    (mine / "queue").mkdir()
    with UserViews(str(tmp_path)) as views, pytest.raises(IsADirectoryError):
        views.write(UID, b"view\n")
    assert [name for name in os.listdir(mine) if name != "queue"] == []
