"""The throwaway host copy that system mode tests run in (tests/host_namespace.py)."""

from __future__ import annotations

import pwd
from pathlib import Path

from host_namespace import layers_left, run_on_host_copy


def test_changes_to_etc_usr_and_var_vanish_with_the_namespace(tmp_path: Path) -> None:
    """A user added, files written under /usr and /var inside are there inside and gone
    after; /tmp is shared, so results can be carried out."""
    out = tmp_path / "seen"
    done = run_on_host_copy(f"""
        useradd --system --no-create-home dmanstest
        mkdir -p /var/spool/dma-nstest /usr/lib/dma-nstest
        id -u dmanstest > {out}
        ls -d /var/spool/dma-nstest /usr/lib/dma-nstest >> {out}
        runuser -u dmanstest -- id -un >> {out}
        test -x "$BIN/dma"
    """)
    assert done.returncode == 0, done.stderr
    inside = out.read_text().split()
    assert inside[1:] == ["/usr/lib/dma-nstest", "/var/spool/dma-nstest", "dmanstest"]
    assert inside[0].isdigit()
    assert "dmanstest" not in {entry.pw_name for entry in pwd.getpwall()}
    assert not Path("/var/spool/dma-nstest").exists()
    assert not Path("/usr/lib/dma-nstest").exists()
    assert layers_left() == []


def test_a_failing_script_reports_its_status() -> None:
    """The script runs with -e: its first failing command ends it with that status."""
    done = run_on_host_copy("echo before; false; echo after")
    assert done.returncode == 1
    assert done.stdout.split() == ["before"]
