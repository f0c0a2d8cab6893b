"""The server side of SASL, written from the RFCs for the tests (no code shared with core).

``ScramServer`` computes what a SCRAM server does (RFC 5802 3 and 5) for one login
and password: server-first from client-first, then the proof check and server-final.
``parse_xoauth2`` and ``parse_oauthbearer`` read the clients' initial responses.
Used by the aiosmtpd authenticators in ``smtp_peers`` and by the property tests.
The server does not apply SASLprep: tests give it passwords SASLprep leaves alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class ScramServer:
    """One SCRAM exchange, server side; ``tamper`` makes its signature wrong (one bit)."""

    def __init__(self, hash_name: str, login: str, password: str, *, salt: bytes,
                 iterations: int, nonce: str, tamper: bool = False) -> None:
        self.hash_name = hash_name
        self.login = login
        self.salt = salt
        self.iterations = iterations
        self.nonce = nonce
        self.tamper = tamper
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hash_name).digest()
        self.stored_key = hashlib.new(hash_name, client_key).digest()
        self.server_key = hmac.new(salted, b"Server Key", hash_name).digest()
        self.first_bare = ""
        self.server_first = ""
        self.client_login: str | None = None

    def first(self, client_first: bytes) -> bytes:
        """server-first for ``client_first``; ValueError when it is not gs2 ``n,,`` + n=,r=."""
        text = client_first.decode("utf-8")
        if not text.startswith("n,,"):
            raise ValueError(f"gs2 header is not n,,: {text[:10]!r}")
        self.first_bare = text[3:]
        attributes = dict(part.split("=", 1) for part in self.first_bare.split(","))
        self.client_login = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        combined = attributes["r"] + self.nonce
        salt = base64.b64encode(self.salt).decode()
        self.server_first = f"r={combined},s={salt},i={self.iterations}"
        return self.server_first.encode()

    def final(self, client_final: bytes) -> bytes | None:
        """server-final (``v=...``) when the proof holds and the login is ours, else None."""
        text = client_final.decode("utf-8")
        without_proof, _, proof_part = text.rpartition(",p=")
        attributes = dict(part.split("=", 1) for part in without_proof.split(","))
        expected_nonce = self.server_first.split(",")[0][2:]
        if attributes.get("c") != "biws" or attributes.get("r") != expected_nonce:
            return None
        auth_message = f"{self.first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(self.stored_key, auth_message, self.hash_name).digest()
        proof = base64.b64decode(proof_part, validate=True)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if self.client_login != self.login or not hmac.compare_digest(
                hashlib.new(self.hash_name, client_key).digest(), self.stored_key):
            return None
        server_signature = hmac.new(self.server_key, auth_message, self.hash_name).digest()
        if self.tamper:
            server_signature = bytes([server_signature[0] ^ 1]) + server_signature[1:]
        return b"v=" + base64.b64encode(server_signature)


def parse_xoauth2(data: bytes) -> tuple[str, str]:
    """(user, token) of an XOAUTH2 initial response; ValueError when malformed."""
    parts = data.split(b"\x01")
    if len(parts) != 4 or parts[2:] != [b"", b""] or not parts[0].startswith(b"user=") \
            or not parts[1].startswith(b"auth=Bearer "):
        raise ValueError("not an XOAUTH2 initial response")
    return parts[0][5:].decode(), parts[1][12:].decode()


def parse_oauthbearer(data: bytes) -> tuple[str, dict[str, str]]:
    """(authzid, key-values) of an OAUTHBEARER initial response (RFC 7628 3.1)."""
    gs2, _, rest = data.decode().partition(",\x01")
    if not gs2.startswith("n,a=") or not rest.endswith("\x01\x01"):
        raise ValueError("not an OAUTHBEARER initial response")
    login = gs2[4:].replace("=2C", ",").replace("=3D", "=")
    pairs = dict(pair.split("=", 1) for pair in rest[:-2].split("\x01"))
    return login, pairs
