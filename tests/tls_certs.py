"""Test certificates from trustme: a trusted CA, an untrusted one, server and client certs.

Any test module can use the ``tls_certs`` fixture by importing it (pytest's
rootdir import mode puts tests/ on the path)::

    from tls_certs import TlsCerts, tls_certs_fixture  # noqa: F401 (a fixture)

    def test_something(tls_certs: TlsCerts) -> None:
        server_context = tls_certs.server_context()
        ...

The certificates are made once per session (ECDSA keys: fast) and written under
the session's temporary directory, so a client can load them by path the way
dma.conf names them (CAFILE, CERTFILE).
"""

from __future__ import annotations

import hashlib
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

SERVER_NAME = "mx.example.test"
"""The name on both server certificates (besides localhost and the loopback addresses)."""

SERVER_IDENTITIES = (SERVER_NAME, "localhost", "127.0.0.1", "::1")
CLIENT_NAME = "client.example.test"


@dataclass(frozen=True, slots=True)
class TlsCerts:
    """Certificates and key files for TLS tests on loopback.

    ``ca_file`` is the CA a client should trust; ``server`` is signed by it and
    ``rogue_server`` (same names) by a CA nobody trusts.  ``client_file`` holds a
    client certificate and its key in one PEM (what CERTFILE expects), signed by
    the trusted CA, whose common name is ``CLIENT_NAME``.
    """

    ca: trustme.CA
    rogue_ca: trustme.CA
    server: trustme.LeafCert
    rogue_server: trustme.LeafCert
    client: trustme.LeafCert
    ca_file: str
    rogue_ca_file: str
    client_file: str

    def server_context(
        self,
        *,
        trusted: bool = True,
        require_client_cert: bool = False,
        max_version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A server-side context with the trusted (or the rogue) server certificate.

        ``require_client_cert`` makes the server demand a client certificate
        signed by the trusted CA; ``max_version`` caps the protocol (old TLS
        versions also get OpenSSL's security level 0, so they can be offered).
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf = self.server if trusted else self.rogue_server
        leaf.configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        if max_version is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                if max_version < ssl.TLSVersion.TLSv1_2:
                    context.set_ciphers("DEFAULT:@SECLEVEL=0")
                    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
                context.maximum_version = max_version
        return context

    def fingerprint(self, *, trusted: bool = True) -> bytes:
        """SHA-256 of the DER server certificate, the value FINGERPRINT pins."""
        leaf = self.server if trusted else self.rogue_server
        der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode("ascii"))
        return hashlib.sha256(der).digest()


def make_tls_certs(directory: Path) -> TlsCerts:
    """Issue every certificate and write the PEM files into ``directory``."""
    ca = trustme.CA()
    rogue_ca = trustme.CA()
    client = ca.issue_cert(CLIENT_NAME, common_name=CLIENT_NAME)
    ca_file = directory / "ca.pem"
    rogue_ca_file = directory / "rogue-ca.pem"
    client_file = directory / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    rogue_ca.cert_pem.write_to_path(str(rogue_ca_file))
    client.private_key_and_cert_chain_pem.write_to_path(str(client_file))
    return TlsCerts(
        ca=ca,
        rogue_ca=rogue_ca,
        server=ca.issue_cert(*SERVER_IDENTITIES),
        rogue_server=rogue_ca.issue_cert(*SERVER_IDENTITIES),
        client=client,
        ca_file=str(ca_file),
        rogue_ca_file=str(rogue_ca_file),
        client_file=str(client_file),
    )


@pytest.fixture(scope="session", name="tls_certs")
def tls_certs_fixture(tmp_path_factory: pytest.TempPathFactory) -> TlsCerts:
    """Session-wide test certificates (see ``TlsCerts``)."""
    return make_tls_certs(tmp_path_factory.mktemp("tls"))
