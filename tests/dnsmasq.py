"""A real DNS server for tests: dnsmasq on 127.0.0.1 and a free port, serving given records.

Use the ``dns_server`` fixture (a factory: call it with record options, get back the
``(address, port)`` to put in NAMESERVER), or ``running_dnsmasq`` as a context
manager for a server shared by a module.  Other test files reuse the fixture with
``from dnsmasq import dns_server  # noqa: F401``.

Records are dnsmasq options; the helpers below spell the common ones.  Names under
a domain given to ``local`` that have no record get NXDOMAIN; other record types
of a known name get an empty answer (NODATA); names outside every ``local``
domain get REFUSED (there is no upstream server), which dnspython reports as "no
name server answered".  ``mx(domain, ".", 0)`` serves a null MX (RFC 7505).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import dns.exception
import dns.message
import dns.query
import pytest

DNSMASQ = "/usr/sbin/dnsmasq"
START_TIMEOUT = 10.0
PORT_ATTEMPTS = 5


def mx(domain: str, host: str, preference: int) -> str:
    """An MX record: ``domain`` is served by ``host`` (``"."`` for a null MX)."""
    return f"--mx-host={domain},{host},{preference}"


def host_record(name: str, *addresses: str) -> str:
    """A and/or AAAA records for ``name``: at most one address of each family per call.

    dnsmasq keeps one IPv4 and one IPv6 address per option; give the same name again
    for more (the records add up).
    """
    families = [ipaddress.ip_address(text).version for text in addresses]
    if len(set(families)) != len(families):
        raise ValueError("host_record takes one IPv4 and one IPv6 address: call it again")
    return f"--host-record={','.join((name, *addresses))}"


def cname(alias: str, target: str) -> str:
    """A CNAME from ``alias`` to ``target`` (which must have records of its own here)."""
    return f"--cname={alias},{target}"


def local(domain: str) -> str:
    """Answer for ``domain`` from these records only: unknown names in it get NXDOMAIN."""
    return f"--local=/{domain}/"


def address(domain: str, ip: str) -> str:
    """Answer ``ip`` for ``domain`` and every name under it (a wildcard).

    Beware: dnsmasq answers NXDOMAIN for every other record type of those names
    (MX included), so this is no way to test the no-MX fallback.
    """
    return f"--address=/{domain}/{ip}"


def dnsmasq_binary() -> str:
    """The dnsmasq to run; skips the test when it is missing, fails in CI where it must be."""
    found = DNSMASQ if os.access(DNSMASQ, os.X_OK) else shutil.which("dnsmasq")
    if found is None:
        message = "dnsmasq is not installed (Debian package dnsmasq-base)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def free_port() -> int:
    """A loopback port that is free for both UDP and TCP right now."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def answers(port: int, timeout: float = 0.2) -> bool:
    """True when something answers a DNS query on 127.0.0.1:``port``."""
    query = dns.message.make_query("ready.invalid.", "A")
    try:
        dns.query.udp(query, "127.0.0.1", port=port, timeout=timeout)
    except (OSError, dns.exception.DNSException):
        return False
    return True


@contextmanager
def running_dnsmasq(*records: str) -> Iterator[tuple[str, int]]:
    """Run dnsmasq serving ``records`` (dnsmasq options); yield ``(address, port)``.

    Returns only once the server answers queries, and stops it on exit.
    """
    binary = dnsmasq_binary()
    failures = []
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        with ExitStack() as stack:
            log = stack.enter_context(tempfile.TemporaryFile())
            process = subprocess.Popen(
                [binary, *_base_options(port), *records],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            stack.callback(_stop, process)
            if _wait_until_ready(process, port):
                yield ("127.0.0.1", port)
                return
            _stop(process)
            log.seek(0)
            output = log.read().decode(errors="replace")
            failures.append(output.strip()[-500:])
            if "in use" not in output:
                break
    raise RuntimeError(f"dnsmasq did not start: {failures[-1] if failures else 'no output'}")


@pytest.fixture
def dns_server() -> Iterator[Callable[..., tuple[str, int]]]:
    """A factory: ``dns_server(*records)`` starts a dnsmasq and returns ``(address, port)``."""
    with ExitStack() as stack:

        def start(*records: str) -> tuple[str, int]:
            return stack.enter_context(running_dnsmasq(*records))

        yield start


def _base_options(port: int) -> list[str]:
    return [
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--pid-file=",
        "--log-facility=-",
        "--log-queries",
    ]


def _wait_until_ready(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if answers(port):
            return True
        time.sleep(0.02)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
