"""A fake OAuth2 authorization server over HTTPS on loopback, for the OAuth2 tests.

It speaks the two endpoints pydma uses, as Microsoft's and Google's do:

- ``POST /token``: the refresh-token grant (RFC 6749 6; a known refresh token gets
  a fresh access token, rotated refresh token optional; any other gets
  ``invalid_grant``) and the device-code grant (RFC 8628 3.4; the answers come
  from ``device_script``: ``pending``, ``slow_down``, ``expired``, ``denied``,
  ``success``);
- ``POST /devicecode``: the device authorization request (RFC 8628 3.1).

``/redirect`` answers 307 to a plain-http address, ``/garbage`` HTML.  Every
request is recorded with its form, and every token the server hands out is kept,
so a test can search all output for them.  Certificates come from trustme
(``tests/tls_certs.py``).
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

CLIENT_ID = "pydma-test-client"
CLIENT_SECRET = "client-secret-" + secrets.token_hex(8)
USER_CODE = "WDJB-MJHT"


@dataclass
class Seen:
    """One request the server received."""

    path: str
    form: dict[str, str]
    content_type: str


@dataclass
class ServerState:
    """What the server knows and does; tests change it between calls."""

    refresh_tokens: set[str] = field(default_factory=set)
    rotate: bool = False
    expires_in: object = 3600
    device_script: list[str] = field(default_factory=list)
    device_interval: int = 1
    device_expires_in: int = 900
    device_error: str | None = None
    echo_secrets: bool = False
    issued: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def new_token(self, prefix: str) -> str:
        token = f"{prefix}-{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        return token


def _error(code: str, description: str = "") -> tuple[int, dict[str, Any]]:
    return 400, {"error": code, "error_description": description or f"the answer is {code}"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode("ascii"), keep_blank_values=True))
        state = self.server.state
        with self.server.lock:
            state.seen.append(Seen(self.path, form, self.headers.get("Content-Type") or ""))
            if self.path == "/redirect":
                self._send_raw(307, b"", {"Location": "http://127.0.0.1:9/token"})
                return
            if self.path == "/garbage":
                self._send_raw(200, b"<html>not json</html>", {})
                return
            status, answer = self._answer(state, form)
        self._send_raw(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _answer(self, state: ServerState, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return _error("invalid_client")
        if self.path == "/devicecode":
            return self._device_code(state)
        if self.path != "/token":
            return 404, {"error": "not_found"}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            return self._refresh(state, form)
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_poll(state, form)
        return _error("unsupported_grant_type")

    def _device_code(self, state: ServerState) -> tuple[int, dict[str, Any]]:
        if state.device_error is not None:
            return _error(state.device_error)
        return 200, {
            "device_code": state.new_token("device-code"),
            "user_code": USER_CODE,
            "verification_uri": "https://login.example.test/device",
            "expires_in": state.device_expires_in,
            "interval": state.device_interval,
        }

    def _refresh(self, state: ServerState, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        presented = form.get("refresh_token", "")
        if presented not in state.refresh_tokens:
            said = f"token {presented} was revoked" if state.echo_secrets else ""
            return _error("invalid_grant", said)
        answer: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": state.new_token("access"),
            "scope": form.get("scope", ""),
        }
        if state.expires_in is not None:
            answer["expires_in"] = state.expires_in
        if state.rotate:
            rotated = state.new_token("refresh")
            state.refresh_tokens.add(rotated)
            answer["refresh_token"] = rotated
        return 200, answer

    def _device_poll(self, state: ServerState, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("device_code") not in state.issued:
            return _error("bad_verification_code")
        step = state.device_script.pop(0) if state.device_script else "pending"
        if step == "success":
            refresh = state.new_token("refresh")
            state.refresh_tokens.add(refresh)
            return 200, {"token_type": "Bearer", "access_token": state.new_token("access"),
                         "expires_in": state.expires_in, "refresh_token": refresh}
        codes = {"pending": "authorization_pending", "slow_down": "slow_down",
                 "expired": "expired_token", "denied": "access_denied"}
        return _error(codes[step])

    def _send_raw(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState
    lock: threading.Lock


class FakeOAuth2Server:
    """The server, started in a thread on 127.0.0.1 (name ``localhost`` on its certificate)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.state = ServerState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.lock = threading.Lock()
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"https://localhost:{self.port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def closed_port() -> int:
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
