"""Run a script as root on a throwaway copy of the host: /etc, /usr, /var and /root overlaid.

System mode (SPEC 8.2) touches what a host shares: users and groups, /etc/dma,
/var/spool/dma, /var/mail, /usr/sbin/sendmail.  Its tests run in a private mount
namespace (``unshare -m``) where /etc, /usr, /var and /root are overlayfs mounts over
the host's own directories, their upper layers in a temporary directory: the script sees
the real host, may change anything in those four trees, and every change vanishes
with the namespace.  /tmp (pytest's tmp_path) and /work are not overlaid, so files
there carry results out.

Use ``run_on_host_copy(script)`` from a test; ``require_host_namespace()`` skips a
test on a machine where this cannot work (not root, no unshare or overlayfs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

OVERLAID = ("/etc", "/usr", "/var", "/root")
"""/root too: this test run's Python lives under it (mode 0700), so a script that runs
it as a throwaway user makes /root passable (``chmod 711 /root``) on the copy only."""

_SETUP = r"""
set -eu
layers=$1; shift
mount --make-rprivate /
for tree in {trees}; do
    name=$(echo "$tree" | tr / _)
    mkdir -p "$layers/$name/upper" "$layers/$name/work"
    mount -t overlay overlay \
        -o "lowerdir=$tree,upperdir=$layers/$name/upper,workdir=$layers/$name/work" "$tree"
done
exec bash -euo pipefail -c "$1"
"""


def require_host_namespace() -> None:
    """Skip unless this machine can run ``run_on_host_copy`` (root, unshare, overlayfs)."""
    if os.geteuid() != 0:
        pytest.skip("system mode tests need root (they run in a private mount namespace)")
    for tool in ("unshare", "mount", "runuser", "useradd"):
        if shutil.which(tool) is None:
            pytest.skip(f"system mode tests need {tool}")


def run_on_host_copy(script: str, *, timeout: float = 300,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (bash, with -euo pipefail) as root in a namespace where /etc, /usr,
    /var and /root are throwaway overlays; its stdout, stderr and status come back.

    The variable ``PY`` names this test run's Python (the venv that has dma installed)
    and ``BIN`` its bin directory, where the ``dma``, ``sendmail``, ``mailq`` and
    ``newaliases`` commands are.
    """
    require_host_namespace()
    with tempfile.TemporaryDirectory(prefix="dma-host-") as layers:
        environ = dict(os.environ if env is None else env)
        environ["PY"] = sys.executable
        environ["BIN"] = str(Path(sys.executable).parent)
        setup = _SETUP.format(trees=" ".join(OVERLAID))
        done = subprocess.run(
            ["unshare", "-m", "bash", "-c", setup, "setup", layers, script],
            capture_output=True, text=True, env=environ, timeout=timeout, check=False,
        )
    if "overlay" in done.stderr and "mount" in done.stderr and done.returncode == 32:
        pytest.fail(f"overlayfs could not be mounted: {done.stderr}")
    return done


def layers_left() -> list[Path]:
    """Temporary layer directories still present (there should be none after a run)."""
    return sorted(Path(tempfile.gettempdir()).glob("dma-host-*"))
