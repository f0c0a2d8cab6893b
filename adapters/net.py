"""TCP connections to mail servers, with implicit TLS or a STARTTLS upgrade (SPEC 5.5).

This adapter owns sockets, TLS and timeouts and knows nothing of SMTP: the
sans-I/O client in ``core/smtp.py`` says what to send and reads what arrives, a
driver in the shell moves the bytes through a ``Connection``.  Every network
problem is temporary (``NetError``, a ``TempFailure``): the item stays queued.
Unlike the C dma, which spun for its 300-second alarm on EOF, a closed
connection is reported at once.  Timeouts come from the caller (RFC 5321
section 4.5.3.2 suggests 5 minutes per reply and 10 for the final dot).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from types import TracebackType

from dma.core.errors import SoftwareError, TempFailure
from dma.core.values import frozen

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl  # loaded at run time only when TLS is used: a plain session skips ~5 ms

RECEIVE_SIZE = 65536
"""Octets asked of one ``recv()``: more than any SMTP reply the client waits for."""


class NetError(TempFailure):
    """A connection, TLS or timeout problem talking to a mail server; retry later."""


class TlsHandshakeFailed(NetError):
    """The TLS handshake itself broke down (protocol versions, ciphers, a hang-up, a timeout).

    Not raised for a certificate that was checked and refused, nor for our own CA or
    client certificate files: OPPORTUNISTIC_TLS may go on in plain text after this
    error only.
    """


@frozen
class TlsPolicy:
    """How to set up TLS with one host: verification, pinning, our client certificate.

    ``verify`` asks for CA and host name checks (mandatory TLS, unless NOVERIFYCERT);
    ``server_name`` is sent as SNI (not for IP literals) and is the name checked;
    ``cafile`` replaces the system CAs; ``certfile`` holds our certificate and key
    in one PEM; ``fingerprint`` is the SHA-256 of the server's DER certificate and
    replaces the CA checks when given.
    """

    verify: bool
    server_name: str | None
    cafile: str | None = None
    certfile: str | None = None
    fingerprint: bytes | None = None


@frozen
class TlsInfo:
    """What the handshake settled, for the delivery log line."""

    version: str
    cipher: str
    verified: bool
    pinned: bool
    peer_fingerprint: str


@frozen
class NetCounters:
    """Traffic on one connection so far; tests use it to count round trips."""

    bytes_sent: int = 0
    send_calls: int = 0
    reads: int = 0
    bytes_received: int = 0


def format_fingerprint(digest: bytes) -> str:
    """Render a digest as ``AB:CD:...``, the form ``openssl x509 -fingerprint`` prints.

    FINGERPRINT accepts hex with colons, so a value from a log line can be pasted
    into dma.conf as it is.
    """
    return ":".join(f"{octet:02X}" for octet in digest)


def _is_ip_literal(name: str) -> bool:
    """True when ``name`` is an IPv4 or IPv6 address rather than a host name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _check_name(server_name: str | None) -> str | None:
    """The name to verify and send as SNI: brackets and ``IPv6:`` of address literals removed.

    ``user@[192.0.2.1]`` and ``user@[IPv6:2001:db8::1]`` reach us with the
    literal's decoration; OpenSSL wants the bare address, and CPython sends no
    SNI for an IP address (RFC 6066 forbids it).
    """
    if server_name is None:
        return None
    name = server_name.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if name[:5].lower() == "ipv6:":
        name = name[5:]
    name = name.rstrip(".")
    return name or None


def _reason(error: BaseException) -> str:
    """A short human text for an OSError or SSLError, without Python's wrapping."""
    ssl = sys.modules.get("ssl")  # no TLS yet means no SSLError either
    if ssl is not None and isinstance(error, ssl.SSLCertVerificationError):
        return error.verify_message or error.reason or str(error)
    if ssl is not None and isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def tls_context(policy: TlsPolicy) -> ssl.SSLContext:
    """Build the client context for ``policy``: TLS 1.2 at least, checks as asked.

    With ``verify`` and no fingerprint: the CAs (``cafile`` or the system's) and
    the host name are checked during the handshake.  Without ``verify``, or when
    a fingerprint pins the certificate, OpenSSL checks nothing and
    ``Connection.start_tls`` compares the fingerprint afterwards.  A CAFILE or
    CERTFILE that cannot be loaded is a temporary failure, as in the C dma: the
    mail waits while the admin fixes the file.
    """
    pinning = policy.fingerprint is not None
    checking = policy.verify and not pinning
    if checking and _check_name(policy.server_name) is None:
        raise SoftwareError(
            "TLS verification was asked for without a server name to check",
            hint="pass the smarthost or MX name as TlsPolicy.server_name",
        )
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if checking:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            if policy.cafile is not None:
                context.load_verify_locations(cafile=policy.cafile)
            else:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        except (OSError, ValueError) as error:
            raise NetError(
                f"cannot load the CA certificates from {policy.cafile}: {_reason(error)}",
                hint="check CAFILE in dma.conf",
            ) from error
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if policy.certfile is not None:
        try:
            context.load_cert_chain(policy.certfile)
        except (OSError, ValueError) as error:
            raise NetError(
                f"cannot load the client certificate and key from {policy.certfile}: "
                f"{_reason(error)}",
                hint="CERTFILE must hold the certificate and its private key in one PEM file",
            ) from error
    return context


class Connection:
    """One TCP connection to a mail server, plain or TLS, with read and write timeouts.

    ``send`` and ``receive`` map every socket, TLS and timeout error to
    ``NetError`` naming the peer; ``close`` is safe to call more than once.
    """

    def __init__(self, sock: socket.socket, *, peer: str, io_timeout: float) -> None:
        self._sock = sock
        self._peer = peer
        self._io_timeout = io_timeout
        self._tls: TlsInfo | None = None
        self._closed = False
        self._counters = NetCounters()
        self._timeout = io_timeout  # the socket's timeout now: set only when it changes
        sock.settimeout(io_timeout)

    @property
    def peer(self) -> str:
        """``host [address]:port``, the way every message about this server names it."""
        return self._peer

    @property
    def tls(self) -> TlsInfo | None:
        """The TLS session in use, or None while the connection is plain."""
        return self._tls

    @property
    def counters(self) -> NetCounters:
        """Traffic so far, as a snapshot."""
        return self._counters

    @property
    def io_timeout(self) -> float:
        """Seconds ``send`` and ``receive`` wait by default."""
        return self._io_timeout

    def _fail(self, doing: str, error: BaseException, wait: float) -> NetError:
        """The NetError for ``error`` while ``doing`` something with the peer."""
        if isinstance(error, TimeoutError):
            return NetError(f"{self._peer}: {doing} timed out after {wait:g}s")
        return NetError(f"{self._peer}: {doing} failed: {_reason(error)}")

    def _check_open(self) -> None:
        """Refuse I/O after close: a driver bug, but still only a failed delivery."""
        if self._closed:
            raise NetError(f"{self._peer}: connection already closed")

    def _wait_at_most(self, seconds: float) -> None:
        """The socket's timeout for the next call (each change is a system call)."""
        if seconds != self._timeout:
            self._sock.settimeout(seconds)
            self._timeout = seconds

    def send(self, data: bytes) -> None:
        """Send every octet of ``data`` within the write timeout."""
        self._check_open()
        try:
            self._wait_at_most(self._io_timeout)
            self._sock.sendall(data)
        except (OSError, ValueError) as error:
            raise self._fail(f"sending {len(data)} octets", error, self._io_timeout) from error
        counters = self._counters
        self._counters = NetCounters(
            counters.bytes_sent + len(data),
            counters.send_calls + 1,
            counters.reads,
            counters.bytes_received,
        )

    def receive(self, *, timeout: float | None = None) -> bytes:
        """Return what one ``recv()`` brings, waiting at most ``timeout`` (default: io_timeout).

        The longer wait after the final dot (10 minutes in RFC 5321) is this
        call with a larger ``timeout``.  End of file raises at once.
        """
        self._check_open()
        wait = self._io_timeout if timeout is None else timeout
        try:
            self._wait_at_most(wait)
            data = self._sock.recv(RECEIVE_SIZE)
        except (OSError, ValueError) as error:
            raise self._fail("reading from the server", error, wait) from error
        counters = self._counters
        self._counters = NetCounters(
            counters.bytes_sent,
            counters.send_calls,
            counters.reads + 1,
            counters.bytes_received + len(data),
        )
        if not data:
            raise NetError(f"{self._peer}: connection closed by the server")
        return data

    def start_tls(self, policy: TlsPolicy) -> TlsInfo:
        """Upgrade this plain connection to TLS (after the server's 220 to STARTTLS).

        A failed handshake or a fingerprint mismatch closes the connection: it
        never goes on in plain text.
        """
        self._check_open()
        if self._tls is not None:
            raise NetError(f"{self._peer}: TLS is already active")
        try:
            self._tls = self._handshake(policy)
        except BaseException:
            self.close()
            raise
        return self._tls

    def _handshake(self, policy: TlsPolicy) -> TlsInfo:
        """Wrap the socket, run the handshake within the I/O timeout, check the pin."""
        import hashlib
        import ssl

        context = tls_context(policy)
        name = _check_name(policy.server_name)
        try:
            tls_sock = context.wrap_socket(
                self._sock, server_hostname=name, do_handshake_on_connect=False
            )
            self._sock = tls_sock
            tls_sock.settimeout(self._io_timeout)
            self._timeout = self._io_timeout
            tls_sock.do_handshake()
        except ssl.SSLCertVerificationError as error:
            raise NetError(
                f"{self._peer}: TLS certificate not accepted: {_reason(error)}",
                hint="check the server name, CAFILE, or set FINGERPRINT or NOVERIFYCERT",
            ) from error
        except (OSError, ValueError) as error:
            failure = self._fail("TLS handshake", error, self._io_timeout)
            raise TlsHandshakeFailed(str(failure)) from error
        der = tls_sock.getpeercert(binary_form=True)
        if not der:
            raise NetError(f"{self._peer}: the server sent no TLS certificate")
        digest = hashlib.sha256(der).digest()
        if policy.fingerprint is not None and digest != policy.fingerprint:
            raise NetError(
                f"{self._peer}: TLS certificate fingerprint "
                f"{format_fingerprint(digest)} does not match FINGERPRINT "
                f"{format_fingerprint(policy.fingerprint)}",
                hint="update FINGERPRINT in dma.conf if the server's certificate changed",
            )
        cipher = tls_sock.cipher()
        return TlsInfo(
            version=tls_sock.version() or "unknown",
            cipher=cipher[0] if cipher else "unknown",
            verified=tls_sock.context.verify_mode == ssl.CERT_REQUIRED,
            pinned=policy.fingerprint is not None,
            peer_fingerprint=format_fingerprint(digest),
        )

    def close(self) -> None:
        """Close the socket; errors on the way out do not matter any more."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _format_peer(host_name: str, address: str, port: int) -> str:
    """``host [address]:port``, with the address bare inside the brackets (IPv6 too)."""
    return f"{host_name} [{address}]:{port}"


def connect(
    address: str,
    port: int,
    *,
    host_name: str,
    connect_timeout: float,
    io_timeout: float,
    implicit_tls: TlsPolicy | None = None,
    source_address: str | None = None,
) -> Connection:
    """Open a TCP connection to ``address`` (one IPv4 or IPv6 address) and ``port``.

    ``host_name`` names the server in messages; the caller walks a host's
    addresses and calls this once per address.  With ``implicit_tls`` the TLS
    handshake runs at once (SMTPS, port 465 style) before anything is read.
    ``source_address`` binds the local end (any port).
    """
    peer = _format_peer(host_name, address, port)
    bind = (source_address, 0) if source_address is not None else None
    try:
        sock = socket.create_connection(
            (address, port), timeout=connect_timeout, source_address=bind
        )
    except TimeoutError as error:
        raise NetError(f"{peer}: connection timed out after {connect_timeout:g}s") from error
    except (OSError, ValueError, OverflowError) as error:
        raise NetError(f"{peer}: cannot connect: {_reason(error)}") from error
    try:  # we write whole commands and pipeline them ourselves: Nagle's wait only adds
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a delayed ACK's 40 ms
    except OSError:
        pass
    connection = Connection(sock, peer=peer, io_timeout=io_timeout)
    if implicit_tls is not None:
        connection.start_tls(implicit_tls)
    return connection
