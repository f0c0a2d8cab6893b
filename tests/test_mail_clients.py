"""Real mail clients from Debian's packages sending through our sendmail (SPEC 3.8).

GNU mailutils' ``mail`` (the default ``mail`` on many hosts, and what logrotate and
many scripts mail through) runs sendmail with stderr closed: the message must still be
queued, the command must exit 0, and the detached delivery must still run.
"""

from __future__ import annotations

import mailbox
import shutil
import subprocess

import pytest
from conftest import BIN, DmaSite, login_name
from smtp_peers import wait_until

MAILUTILS = shutil.which("mail.mailutils")


@pytest.mark.skipif(MAILUTILS is None, reason="Debian's mailutils is not installed")
def test_gnu_mailutils_mail_sends_through_our_sendmail(site: DmaSite) -> None:
    """`mail -s SUBJECT user` from GNU mailutils (which closes stderr before it runs
    sendmail -oi -f ... -t) exits 0 and the message reaches the user's mailbox."""
    assert MAILUTILS is not None
    site.write_config(defer=False)
    user = login_name()
    env = {**site.environ, "DMA_CONF": str(site.config)}
    done = subprocess.run(
        [MAILUTILS, "-E", f"set sendmail=sendmail://{BIN / 'sendmail'}",
         "-s", "mailutils says hello", user],
        input=b"sent with GNU mailutils\n", capture_output=True, env=env, cwd=site.root,
        timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    box = site.maildir / user

    def arrived() -> list[bytes]:
        return [bytes(m) for m in mailbox.mbox(str(box))] if box.exists() else []

    assert wait_until(lambda: len(arrived()) == 1)
    (message,) = arrived()
    assert b"Subject: mailutils says hello" in message
    assert b"sent with GNU mailutils" in message
