"""A real MTA for tests: Debian's Exim on 127.0.0.1 and a free port, with STARTTLS and AUTH.

The daemon runs in the foreground (``exim4 -C <private config> -bdf``) as root, with
every path (spool, logs, pid file, mailbox) in a private directory of its own, so it
shares nothing with a system Exim and several can run at once.  It offers STARTTLS
with the trusted server certificate of ``TlsCerts`` (names: mx.example.test,
localhost, 127.0.0.1, ::1), advertises AUTH PLAIN and LOGIN only once TLS is active,
checks them against a credentials table, relays (for any domain) only for an
authenticated client, and delivers every accepted recipient into one Maildir.

Use the ``real_mta`` fixture, importing it together with the certificates::

    from real_mta import RealMta, real_mta_fixture  # noqa: F401 (a fixture)
    from tls_certs import tls_certs_fixture  # noqa: F401 (a fixture)

    def test_something(real_mta: RealMta) -> None:
        ...send to real_mta.host:real_mta.port as real_mta.user / real_mta.password...
        [raw] = real_mta.wait_for_messages(1)

or ``running_exim(certs)`` as a context manager.  The Debian package is
exim4-daemon-light (scripts/setup installs it and keeps its own service off);
without it the tests skip, and fail in CI, where it must be there.

Why a private directory under /tmp and not under pytest's tmp_path: the spool and
mailbox are written by the Debian-exim user, which cannot traverse pytest's
root-only (0700) temporary base.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from tls_certs import TlsCerts

EXIM = "/usr/sbin/exim4"
EXIM_USER = "Debian-exim"
START_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 10.0
PORT_ATTEMPTS = 5
SERVER_NAME = "mx.example.test"
DEFAULT_USER = "tester"
# Exim's lsearch files and string expansions have their own quoting rules; names
# and passwords of this shape need none, so the configuration stays simple.
_SAFE = re.compile(r"[A-Za-z0-9._@+-]+")


@dataclass(frozen=True, slots=True)
class RealMta:
    """A running Exim: where to connect, whom to log in as, and where mail lands.

    ``maildir`` is the Maildir that every delivered message goes to (one file per
    recipient in ``new/``); ``log_dir`` holds Exim's mainlog, rejectlog, paniclog.
    """

    host: str
    port: int
    user: str
    password: str
    server_name: str
    root: Path
    maildir: Path
    log_dir: Path
    pid: int

    def messages(self) -> list[bytes]:
        """The delivered messages, oldest first, as Exim wrote them (LF line ends)."""
        new = self.maildir / "new"
        if not new.is_dir():
            return []
        files = sorted(new.iterdir(), key=lambda path: (path.stat().st_mtime_ns, path.name))
        return [path.read_bytes() for path in files]

    def wait_for_messages(self, count: int, timeout: float = DELIVERY_TIMEOUT) -> list[bytes]:
        """Wait until at least ``count`` messages are delivered; fail with Exim's log if not.

        Exim delivers in a process of its own after it has answered the data, so a
        client's 250 comes a moment before the file exists.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages()
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(found) < count:
            pytest.fail(
                f"Exim delivered {len(found)} message(s), expected {count}; its log:\n"
                + self.log_text()
            )
        return found

    def log_text(self) -> str:
        """Exim's main and panic logs (for assertions about TLS and AUTH, and for failures)."""
        parts = []
        for name in ("mainlog", "paniclog", "rejectlog"):
            path = self.log_dir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def reception_lines(self) -> list[str]:
        """The mainlog lines of accepted messages (``<=``): they name TLS (X=) and AUTH (A=)."""
        path = self.log_dir / "mainlog"
        if not path.exists():
            return []
        return [line for line in path.read_text(errors="replace").splitlines() if " <= " in line]


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """A delivered message as (header block, body): split at the first empty line."""
    head, separator, body = raw.partition(b"\n\n")
    if not separator:
        raise AssertionError(f"no end of headers in the delivered message: {raw[:200]!r}")
    return head + b"\n", body


def exim_binary() -> str:
    """The Exim to run; skips the test when it cannot run here, fails in CI where it must."""
    reason = None
    if not os.access(EXIM, os.X_OK):
        reason = "Exim is not installed (Debian package exim4-daemon-light; see scripts/setup)"
    elif os.geteuid() != 0:
        reason = "a private Exim daemon needs root (it drops to the Debian-exim user)"
    else:
        try:
            pwd.getpwnam(EXIM_USER)
        except KeyError:
            reason = f"the user {EXIM_USER} is missing (reinstall exim4-base)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return EXIM


def free_port() -> int:
    """A loopback TCP port that is free right now (the daemon may still lose a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_exim(
    certs: TlsCerts, *, user: str = DEFAULT_USER, password: str | None = None
) -> Iterator[RealMta]:
    """Run a private Exim with STARTTLS and AUTH PLAIN/LOGIN; yield it once it greets.

    ``password`` defaults to a random one.  On exit the daemon and every process it
    started are stopped and its directory is removed, whatever happened.
    """
    binary = exim_binary()
    secret = password if password is not None else secrets.token_urlsafe(12)
    for value in (user, secret):
        if not _SAFE.fullmatch(value):
            raise ValueError(f"{value!r}: use letters, digits and ._@+- only")
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="real-mta-"))
        stack.callback(shutil.rmtree, root, True)
        files = _prepare(root, certs, user, secret)
        failures: list[str] = []
        for _ in range(PORT_ATTEMPTS):
            port = free_port()
            config = _write_config(root, files, port)
            output = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [binary, "-C", str(config), "-bdf"],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=root,
            )
            mta = RealMta(
                host="127.0.0.1",
                port=port,
                user=user,
                password=secret,
                server_name=SERVER_NAME,
                root=root,
                maildir=files["maildir"],
                log_dir=files["log_dir"],
                pid=process.pid,
            )
            with ExitStack() as attempt:
                attempt.callback(_stop, process)
                if _wait_until_ready(process, port):
                    yield mta
                    return
                _stop(process)
                output.seek(0)
                said = output.read().decode(errors="replace")
                failures.append((said + mta.log_text()).strip()[-1500:])
                if "in use" not in failures[-1]:
                    break
        raise RuntimeError(f"Exim did not start: {failures[-1] if failures else 'no output'}")


@pytest.fixture(name="real_mta")
def real_mta_fixture(tls_certs: TlsCerts) -> Iterator[RealMta]:
    """A private Exim on loopback with STARTTLS and AUTH (see ``running_exim``)."""
    with running_exim(tls_certs) as mta:
        yield mta


def _prepare(root: Path, certs: TlsCerts, user: str, password: str) -> dict[str, Path]:
    """Make the directory tree and the files that Exim reads, with owners it accepts.

    Exim wants its configuration owned by root and writable by no one else; the
    receiving and delivering processes run as Debian-exim, which must read the
    key and the credentials and write the spool, the logs and the mailbox.
    """
    uid = pwd.getpwnam(EXIM_USER).pw_uid
    gid = grp.getgrnam(EXIM_USER).gr_gid
    root.chmod(0o711)
    paths = {
        "spool": root / "spool",
        "log_dir": root / "log",
        "maildir": root / "mail",
        "run": root / "run",
        "cert": root / "cert.pem",
        "key": root / "key.pem",
        "passwd": root / "passwd",
    }
    for name in ("spool", "log_dir", "maildir", "run"):
        paths[name].mkdir(mode=0o750)
        os.chown(paths[name], uid, gid)
    paths["cert"].write_bytes(b"".join(pem.bytes() for pem in certs.server.cert_chain_pems))
    paths["key"].write_bytes(certs.server.private_key_pem.bytes())
    paths["passwd"].write_text(f"{user}: {password}\n")
    for name in ("cert", "key", "passwd"):
        os.chown(paths[name], uid, gid)
        paths[name].chmod(0o400)
    return paths


def _write_config(root: Path, files: dict[str, Path], port: int) -> Path:
    """Write the Exim configuration for ``port``: root-owned, mode 0644, as Exim demands."""
    config = root / f"exim-{port}.conf"
    passwd = files["passwd"]
    text = f"""\
# Private Exim for pydma's tests: nothing here touches the system's Exim.
keep_environment =
primary_hostname = {SERVER_NAME}
exim_user = {EXIM_USER}
exim_group = {EXIM_USER}
spool_directory = {files["spool"]}
log_file_path = {files["log_dir"]}/%slog
pid_file_path = {files["run"]}/exim.pid
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
queue_run_max = 0
tls_advertise_hosts = *
tls_certificate = {files["cert"]}
tls_privatekey = {files["key"]}
tls_require_ciphers = NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2
acl_smtp_rcpt = acl_check_rcpt
log_selector = +tls_sni +smtp_protocol_error

begin acl

acl_check_rcpt:
  accept authenticated = *
  deny message = relay not permitted: authenticate first

begin routers

everything:
  driver = accept
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = {files["maildir"]}
  maildir_format
  delivery_date_add
  envelope_to_add
  return_path_add
  user = {EXIM_USER}
  group = {EXIM_USER}

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = {_auth_condition("$auth2", "$auth3", passwd)}
  server_advertise_condition = ${{if def:tls_in_cipher}}
  server_set_id = $auth2

login:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = {_auth_condition("$auth1", "$auth2", passwd)}
  server_advertise_condition = ${{if def:tls_in_cipher}}
  server_set_id = $auth1
"""
    config.write_text(text)
    os.chown(config, 0, 0)
    config.chmod(0o644)
    return config


def _auth_condition(login: str, password: str, table: Path) -> str:
    """An Exim condition: ``password`` is the one the table lists for ``login``.

    A login missing from the table looks up as empty, which no (non-empty) password
    matches.
    """
    listed = "${lookup{" + login + "}lsearch{" + str(table) + "}}"
    return "${if and {{!eq{" + password + "}{}}{eq{" + password + "}{" + listed + "}}}}"


def _wait_until_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    """True once the daemon greets on ``port``; False if it exits or times out first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.settimeout(2)
                if probe.recv(4).startswith(b"220"):
                    probe.sendall(b"QUIT\r\n")
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the daemon and its delivery processes: they all share its process group."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
    # Children forked for a delivery in progress may outlive the daemon briefly;
    # finished ones linger as zombies until init reaps them, which is no reason to wait.
    deadline = time.monotonic() + 2
    while _live_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _live_members(process.pid):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _live_members(group: int) -> bool:
    """True while a process of ``group`` other than a zombie exists (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The fields after the command (which may hold blanks) start after its ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False
