"""The network adapter against real loopback servers: plain, implicit TLS, STARTTLS, timeouts."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from tls_certs import SERVER_NAME, TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

from dma.adapters.net import (
    Connection,
    NetError,
    TlsPolicy,
    _check_name,
    connect,
    format_fingerprint,
    tls_context,
)
from dma.core.errors import SoftwareError, TempFailure

SHORT = 0.3
"""Timeout for tests that wait on purpose: long enough for a loaded machine to answer."""
PATIENT = 5.0
"""Timeout for tests that expect an answer."""

Handler = Callable[[socket.socket, "Server"], Any]


@dataclass
class Server:
    """A one-connection loopback server running ``handler`` in a thread.

    The handler's return value lands in ``results``, its exception in ``errors``;
    ``sni`` collects the server names clients sent.
    """

    handler: Handler
    host: str = "127.0.0.1"
    results: list[Any] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    client_address: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.listener = socket.create_server((self.host, 0), family=family)
        self.listener.settimeout(PATIENT)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, address = self.listener.accept()
        except OSError:
            return
        self.client_address.append(address[0])
        with conn:
            conn.settimeout(PATIENT)
            try:
                self.results.append(self.handler(conn, self))
            except Exception as error:
                self.errors.append(error)

    def tls(self, conn: socket.socket, context: ssl.SSLContext) -> ssl.SSLSocket:
        """Wrap ``conn`` server side, recording the SNI the client sent."""

        def remember(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: Any) -> None:
            self.sni.append(name)

        context.sni_callback = remember
        return context.wrap_socket(conn, server_side=True)

    def stop(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(PATIENT)


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start servers on demand; stop them all after the test."""
    started: list[Server] = []

    def start(handler: Handler, host: str = "127.0.0.1") -> Server:
        server = Server(handler, host)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def read_line(sock: socket.socket) -> bytes:
    """Read up to and including LF (test servers only)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def banner_echo(context: ssl.SSLContext | None) -> Handler:
    """A server that greets (over TLS given a context), echoes a line, returns the client cert."""

    def handle(conn: socket.socket, server: Server) -> Any:
        sock = server.tls(conn, context) if context is not None else conn
        sock.sendall(b"220 hello\r\n")
        sock.sendall(read_line(sock))
        peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        read_line(sock)  # wait for the client to close
        return peer

    return handle


def starttls_echo(context: ssl.SSLContext) -> Handler:
    """A server that greets in plain text, answers STARTTLS, then echoes one line over TLS."""

    def handle(conn: socket.socket, server: Server) -> Any:
        conn.sendall(b"220 plain\r\n")
        if read_line(conn) != b"STARTTLS\r\n":
            return "no STARTTLS"
        conn.sendall(b"220 go ahead\r\n")
        sock = server.tls(conn, context)
        sock.sendall(read_line(sock))
        version = sock.version()
        read_line(sock)
        return version

    return handle


def silent(conn: socket.socket, server: Server) -> Any:
    """Accept, never answer, and read until the client goes away."""
    received = 0
    with contextlib.suppress(OSError):
        while chunk := conn.recv(65536):
            received += len(chunk)
    return received


def deaf(conn: socket.socket, server: Server) -> Any:
    """Accept and never read, so the client's writes pile up."""
    server.stopping.wait(PATIENT)


def hang_up(conn: socket.socket, server: Server) -> Any:
    """Accept and close at once."""
    return None


def policy(**overrides: Any) -> TlsPolicy:
    """A verifying policy for SERVER_NAME, with fields overridden."""
    values: dict[str, Any] = {"verify": True, "server_name": SERVER_NAME}
    values.update(overrides)
    return TlsPolicy(**values)


def dial(
    server: Server, *, tls: TlsPolicy | None = None, io_timeout: float = PATIENT
) -> Connection:
    """Connect to ``server`` as SERVER_NAME."""
    return connect(
        server.host,
        server.port,
        host_name=SERVER_NAME,
        connect_timeout=PATIENT,
        io_timeout=io_timeout,
        implicit_tls=tls,
    )


def has_ipv6_loopback() -> bool:
    """True when ::1 can be bound here."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_plain_round_trip_counts_sends_and_reads(serve: Callable[..., Server]) -> None:
    """A plain connection carries bytes both ways and counts octets sent, sends and reads."""
    server = serve(banner_echo(None))
    with dial(server) as conn:
        assert conn.receive() == b"220 hello\r\n"
        conn.send(b"EHLO ")
        conn.send(b"me\r\n")
        data = b""
        while not data.endswith(b"\n"):
            data += conn.receive()
        assert data == b"EHLO me\r\n"
        counters = conn.counters
        assert (counters.bytes_sent, counters.send_calls) == (9, 2)
        assert counters.reads >= 2
        assert counters.bytes_received == len(b"220 hello\r\n") + len(data)
        assert conn.tls is None
        assert conn.peer == f"{SERVER_NAME} [127.0.0.1]:{server.port}"


def test_implicit_tls_verifies_with_cafile(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """Implicit TLS with the right CA file and name verifies, sends SNI, reads the banner."""
    server = serve(banner_echo(tls_certs.server_context()))
    with dial(server, tls=policy(cafile=tls_certs.ca_file)) as conn:
        info = conn.tls
        assert info is not None
        assert info.verified and not info.pinned
        assert info.version in ("TLSv1.2", "TLSv1.3")
        assert info.peer_fingerprint == format_fingerprint(tls_certs.fingerprint())
        assert conn.receive() == b"220 hello\r\n"
    assert server.sni == [SERVER_NAME]


def test_starttls_upgrades_a_plain_connection(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """STARTTLS upgrades the existing plain socket, and later bytes travel over TLS."""
    server = serve(starttls_echo(tls_certs.server_context()))
    with dial(server) as conn:
        assert conn.receive() == b"220 plain\r\n"
        conn.send(b"STARTTLS\r\n")
        assert conn.receive() == b"220 go ahead\r\n"
        info = conn.start_tls(policy(cafile=tls_certs.ca_file))
        assert conn.tls == info and info.verified
        conn.send(b"EHLO again\r\n")
        assert conn.receive() == b"EHLO again\r\n"
    server.thread.join(PATIENT)
    assert server.results == [info.version]


def test_wrong_host_name_fails_temporarily(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """A certificate that does not name the host we asked for is a temporary NetError."""
    server = serve(banner_echo(tls_certs.server_context()))
    with pytest.raises(NetError) as caught:
        dial(server, tls=policy(server_name="other.example.test", cafile=tls_certs.ca_file))
    assert isinstance(caught.value, TempFailure)
    assert "certificate not accepted" in str(caught.value)
    assert "other.example.test" in str(caught.value)
    assert f"[127.0.0.1]:{server.port}" in str(caught.value)


def test_untrusted_ca_fails_temporarily(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """A server certificate from a CA we do not trust is a temporary NetError."""
    server = serve(banner_echo(tls_certs.server_context(trusted=False)))
    with pytest.raises(NetError, match="certificate not accepted"):
        dial(server, tls=policy(cafile=tls_certs.ca_file))


def test_noverifycert_accepts_untrusted_server(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """verify=False (NOVERIFYCERT) connects to a server whose CA nobody trusts."""
    server = serve(banner_echo(tls_certs.server_context(trusted=False)))
    with dial(server, tls=policy(verify=False)) as conn:
        info = conn.tls
        assert info is not None and not info.verified and not info.pinned
        assert conn.receive() == b"220 hello\r\n"


def test_fingerprint_pins_untrusted_server(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """The right FINGERPRINT connects even though the CA is untrusted, instead of CA checks."""
    server = serve(banner_echo(tls_certs.server_context(trusted=False)))
    pin = tls_certs.fingerprint(trusted=False)
    with dial(server, tls=policy(cafile=tls_certs.ca_file, fingerprint=pin)) as conn:
        info = conn.tls
        assert info is not None and info.pinned and not info.verified
        assert info.peer_fingerprint == format_fingerprint(pin)
        assert conn.receive() == b"220 hello\r\n"


def test_wrong_fingerprint_fails_naming_both(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """A FINGERPRINT mismatch is a temporary NetError that names both hashes."""
    server = serve(banner_echo(tls_certs.server_context()))
    wrong = tls_certs.fingerprint(trusted=False)
    with pytest.raises(NetError) as caught:
        dial(server, tls=policy(cafile=tls_certs.ca_file, fingerprint=wrong))
    message = str(caught.value)
    assert format_fingerprint(wrong) in message
    assert format_fingerprint(tls_certs.fingerprint()) in message


def test_client_certificate_is_presented(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """With CERTFILE, a server that requires a client certificate sees ours."""
    server = serve(banner_echo(tls_certs.server_context(require_client_cert=True)))
    with dial(server, tls=policy(cafile=tls_certs.ca_file, certfile=tls_certs.client_file)) as conn:
        assert conn.receive() == b"220 hello\r\n"
        conn.send(b"hi\r\n")
        assert conn.receive() == b"hi\r\n"
    server.thread.join(PATIENT)
    assert not server.errors
    (peer,) = server.results
    subject = dict(item for rdn in peer["subject"] for item in rdn)
    assert subject["commonName"] == "client.example.test"


def test_tls_1_1_server_is_refused(serve: Callable[..., Server], tls_certs: TlsCerts) -> None:
    """The client context demands TLS 1.2, and a server capped at TLS 1.1 fails the handshake."""
    assert tls_context(policy(verify=False)).minimum_version == ssl.TLSVersion.TLSv1_2
    try:
        old = tls_certs.server_context(max_version=ssl.TLSVersion.TLSv1_1)
    except (ssl.SSLError, ValueError):
        pytest.skip("the local OpenSSL cannot offer TLS 1.1")
    server = serve(banner_echo(old))
    with pytest.raises(NetError, match="TLS handshake failed"):
        dial(server, tls=policy(verify=False))


def test_ipv6_loopback_with_ip_certificate(
    serve: Callable[..., Server], tls_certs: TlsCerts
) -> None:
    """IPv6 works, and an IP literal server name is verified against the IP SAN without SNI."""
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback")
    server = serve(banner_echo(tls_certs.server_context()), host="::1")
    tls = policy(server_name="[IPv6:::1]", cafile=tls_certs.ca_file)
    with dial(server, tls=tls) as conn:
        assert conn.peer == f"{SERVER_NAME} [::1]:{server.port}"
        assert conn.tls is not None and conn.tls.verified
        assert conn.receive() == b"220 hello\r\n"
    assert server.sni == [None]


def test_source_address_binds_the_local_end(serve: Callable[..., Server]) -> None:
    """source_address makes the server see the connection come from that address."""
    server = serve(banner_echo(None))
    try:
        conn = connect(
            "127.0.0.1",
            server.port,
            host_name="x",
            connect_timeout=PATIENT,
            io_timeout=PATIENT,
            source_address="127.0.0.2",
        )
    except NetError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    with conn:
        assert conn.receive() == b"220 hello\r\n"
    server.thread.join(PATIENT)
    assert server.client_address == ["127.0.0.2"]


def test_refused_connection_is_temporary() -> None:
    """Connecting to a closed port fails at once with a NetError naming the peer."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(NetError, match=rf"mx \[127\.0\.0\.1\]:{port}: cannot connect"):
        connect("127.0.0.1", port, host_name="mx", connect_timeout=PATIENT, io_timeout=PATIENT)


def test_connect_timeout_fires() -> None:
    """A server with a full accept queue leaves SYNs unanswered; connect gives up in time."""
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=0))
        port = listener.getsockname()[1]
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.settimeout(SHORT)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel answers connects beyond the backlog")
        started = time.monotonic()
        with pytest.raises(NetError, match=r"connection timed out after 0\.2s"):
            connect("127.0.0.1", port, host_name="mx", connect_timeout=0.2, io_timeout=PATIENT)
        assert time.monotonic() - started < 3


def test_read_timeout_fires(serve: Callable[..., Server]) -> None:
    """A server that accepts and never answers makes receive fail after the read timeout."""
    server = serve(silent)
    with dial(server, io_timeout=SHORT) as conn:
        started = time.monotonic()
        with pytest.raises(NetError, match=r"timed out after 0\.3s"):
            conn.receive()
        assert time.monotonic() - started < SHORT + 2
        with pytest.raises(NetError, match=r"timed out after 0\.05s"):
            conn.receive(timeout=0.05)
        assert conn.io_timeout == SHORT


def test_handshake_timeout_fires(serve: Callable[..., Server]) -> None:
    """Implicit TLS against a server that never answers the ClientHello times out as a NetError."""
    server = serve(silent)
    with pytest.raises(NetError, match="TLS handshake timed out"):
        dial(server, tls=policy(verify=False), io_timeout=SHORT)


def test_write_timeout_fires(serve: Callable[..., Server]) -> None:
    """A server that never reads makes send fail once the socket buffers are full."""
    server = serve(deaf)
    with dial(server, io_timeout=SHORT) as conn, pytest.raises(NetError, match="sending"):
        for _ in range(64):
            conn.send(b"x" * (1 << 20))


def test_eof_raises_at_once(serve: Callable[..., Server]) -> None:
    """The server closing the connection is a NetError straight away, not after the timeout."""
    server = serve(hang_up)
    with dial(server, io_timeout=30) as conn:
        started = time.monotonic()
        with pytest.raises(NetError, match="closed by the server"):
            conn.receive()
        assert time.monotonic() - started < 5


def test_closed_connection_refuses_io(serve: Callable[..., Server]) -> None:
    """After close, send and receive raise NetError and close may be called again."""
    server = serve(silent)
    conn = dial(server)
    conn.close()
    conn.close()
    with pytest.raises(NetError, match="already closed"):
        conn.send(b"x")
    with pytest.raises(NetError, match="already closed"):
        conn.receive()


def test_bad_files_are_temporary_with_hints(tmp_path: Any, tls_certs: TlsCerts) -> None:
    """A missing CAFILE or a CERTFILE without a key is a NetError that names the file and a fix."""
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(NetError, match="CAFILE") as caught:
        tls_context(policy(cafile=missing))
    assert missing in str(caught.value)
    with pytest.raises(NetError, match="CERTFILE") as caught:
        tls_context(policy(verify=False, certfile=tls_certs.ca_file))
    assert tls_certs.ca_file in str(caught.value)


def test_verify_without_server_name_is_a_bug() -> None:
    """Asking to verify with no name to check is a SoftwareError, never a silent weaker check."""
    with pytest.raises(SoftwareError):
        tls_context(TlsPolicy(verify=True, server_name=None))
    assert tls_context(TlsPolicy(verify=True, server_name=None, fingerprint=b"\0" * 32))


def test_context_modes() -> None:
    """Verifying sets CERT_REQUIRED and name checks; NOVERIFYCERT and pinning leave OpenSSL lax."""
    checking = tls_context(policy())
    assert checking.verify_mode == ssl.CERT_REQUIRED and checking.check_hostname
    for relaxed in (policy(verify=False), policy(fingerprint=b"\1" * 32)):
        context = tls_context(relaxed)
        assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mx.example.org", "mx.example.org"),
        ("mx.example.org.", "mx.example.org"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("", None),
        (None, None),
    ],
)
def test_check_name_strips_address_literal_decoration(
    given: str | None, expected: str | None
) -> None:
    """Address literals lose their brackets and IPv6: tag before SNI and name checks."""
    assert _check_name(given) == expected


def test_eof_over_tls_raises_at_once(serve: Callable[..., Server], tls_certs: TlsCerts) -> None:
    """A TLS server that hangs up after its banner gives the banner, then a NetError at once."""

    def banner_then_close(conn: socket.socket, server: Server) -> Any:
        server.tls(conn, tls_certs.server_context()).sendall(b"220 bye\r\n")

    server = serve(banner_then_close)
    with dial(server, tls=policy(cafile=tls_certs.ca_file), io_timeout=30) as conn:
        assert conn.receive() == b"220 bye\r\n"
        started = time.monotonic()
        with pytest.raises(NetError, match="closed by the server"):
            conn.receive()
        assert time.monotonic() - started < 5
