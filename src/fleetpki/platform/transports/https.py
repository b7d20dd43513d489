"""HTTPS with client certificates (mTLS over TCP): the device endpoint on TCP.

pyOpenSSL, because the server must see the presented chain even when it would not verify: the
verify callback accepts every chain, the handshake still proves possession of the leaf's key
(CertificateVerify), and the Authenticator alone decides. Each connection is served by a thread
(OpenSSL releases the GIL while it computes); ``fleetpki serve`` runs several processes
accepting on one socket for throughput.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import lib as _lib

from fleetpki.platform.identity import (
    Authenticator,
    DeviceIdentity,
    DeviceResources,
    PresentedChain,
    Refusal,
)

log = logging.getLogger(__name__)

TRANSPORT = "https"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 5.0
MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class _Closed(Exception):
    """The peer went away or was too slow."""


def _accept_any(_conn: Any, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    # The Authenticator decides; OpenSSL's own chain verdict is ignored on purpose.
    return True


def server_context(certfile: Path | str, keyfile: Path | str) -> SSL.Context:
    """A TLS 1.2/1.3 server context that requests (not requires) a client certificate."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(b"ECDHE+AESGCM:ECDHE+CHACHA20")
    context.use_certificate_chain_file(str(certfile))
    context.use_privatekey_file(str(keyfile))
    context.check_privatekey()
    context.set_verify(SSL.VERIFY_PEER, _accept_any)
    context.set_session_id(b"fleetpki-https")
    # A write retried after WANT_WRITE may come from a new buffer object with the same bytes.
    context.set_mode(_lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER)
    return context


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket (IPv4 or IPv6 by the host's form)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


class _Channel:
    """Blocking reads/writes over an SSL.Connection on a non-blocking socket, with deadlines."""

    def __init__(self, conn: SSL.Connection, sock: socket.socket) -> None:
        self.conn, self.sock = conn, sock

    def _wait(self, writable: bool, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Closed("timeout")
        if writable:
            ready = select.select([], [self.sock], [], remaining)[1]
        else:
            ready = select.select([self.sock], [], [], remaining)[0]
        if not ready:
            raise _Closed("timeout")

    def _retry(self, action: Any, deadline: float) -> Any:
        while True:
            try:
                return action()
            except SSL.WantReadError:
                self._wait(False, deadline)
            except SSL.WantWriteError:
                self._wait(True, deadline)
            except (SSL.ZeroReturnError, SSL.SysCallError) as exc:
                raise _Closed(str(exc)) from None
            except SSL.Error as exc:
                raise _Closed(str(exc)) from None

    def handshake(self, timeout: float) -> None:
        self._retry(self.conn.do_handshake, time.monotonic() + timeout)

    def recv(self, timeout: float) -> bytes:
        return bytes(self._retry(lambda: self.conn.recv(65536), time.monotonic() + timeout))

    def send(self, data: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        while view:
            chunk = bytes(view[:16384])
            sent = int(self._retry(functools.partial(self.conn.send, chunk), deadline))
            view = view[sent:]

    def close(self) -> None:
        with contextlib.suppress(SSL.Error, OSError):
            self.conn.shutdown()
        with contextlib.suppress(OSError):
            self.sock.close()


def _response(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if body:
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class HttpsDeviceServer:
    """Accepts mTLS connections on ``sock`` and serves device resources, thread per connection."""

    def __init__(
        self,
        authenticator: Authenticator,
        resources: DeviceResources,
        context: SSL.Context,
        sock: socket.socket,
        *,
        threads: int = 64,
    ) -> None:
        self.authenticator = authenticator
        self.resources = resources
        self.context = context
        self.sock = sock
        self.threads = threads
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(threads * 4)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        """Accept until ``shutdown``; blocks the calling thread."""
        self.sock.settimeout(0.5)
        with ThreadPoolExecutor(self.threads, thread_name_prefix="fleetpki-https") as pool:
            while not self._stop.is_set():
                # Past this many accepted connections, leave the rest in the kernel's backlog
                # (or to another worker) rather than queueing sockets without bound.
                if not self._slots.acquire(timeout=0.5):
                    continue
                try:
                    client, address = self.sock.accept()
                except TimeoutError:
                    self._slots.release()
                    continue
                except OSError:
                    self._slots.release()
                    if self._stop.is_set():
                        break
                    time.sleep(0.05)  # e.g. out of file descriptors: do not spin
                    continue
                pool.submit(self._serve_connection, client, address)

    def shutdown(self) -> None:
        self._stop.set()

    def _serve_connection(self, client: socket.socket, address: Any) -> None:
        try:
            self._handle(client, f"{address[0]}:{address[1]}")
        finally:
            self._slots.release()

    def _handle(self, client: socket.socket, peer: str) -> None:
        channel = None
        try:
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = SSL.Connection(self.context, client)
            conn.set_accept_state()
            channel = _Channel(conn, client)
            channel.handshake(HANDSHAKE_TIMEOUT)
            leaf = conn.get_peer_certificate(as_cryptography=True)
            presented = None
            if leaf is not None:
                sent = conn.get_peer_cert_chain(as_cryptography=True) or []
                presented = PresentedChain(leaf, tuple(c for c in sent if c != leaf))
            result = self.authenticator.authenticate(presented, transport=TRANSPORT, peer=peer)
            self._serve_requests(channel, result)
        except (_Closed, OSError):
            pass
        except Exception:
            log.exception("HTTPS connection from %s failed", peer)
        finally:
            if channel is not None:
                channel.close()
            else:
                with contextlib.suppress(OSError):
                    client.close()

    def _serve_requests(self, channel: _Channel, who: DeviceIdentity | Refusal) -> None:
        buffer = b""
        timeout = IDLE_TIMEOUT
        while True:
            while b"\r\n\r\n" not in buffer:
                if len(buffer) > MAX_HEAD:
                    channel.send(_response(431, b"", "", False))
                    return
                data = channel.recv(timeout)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            try:
                method, target, version, headers = _parse_head(head)
                length = int(headers.get("content-length", "0"))
            except ValueError:
                channel.send(
                    _response(
                        400, _error_body("bad_request", "bad request"), "application/json", False
                    )
                )
                return
            if "transfer-encoding" in headers:
                body = _error_body("not_implemented", "send Content-Length, not chunked")
                channel.send(_response(501, body, "application/json", False))
                return
            if length < 0 or length > MAX_BODY:
                channel.send(
                    _response(
                        413, _error_body("too_large", "body too large"), "application/json", False
                    )
                )
                return
            while len(buffer) < length:
                data = channel.recv(timeout)
                if not data:
                    return
                buffer += data
            body, buffer = buffer[:length], buffer[length:]
            connection = headers.get("connection", "").lower()
            keep_alive = isinstance(who, DeviceIdentity) and (
                connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
            )
            channel.send(self._respond(who, method, target, body, keep_alive))
            if not keep_alive:
                return

    def _respond(
        self, who: DeviceIdentity | Refusal, method: str, target: str, body: bytes, keep_alive: bool
    ) -> bytes:
        if isinstance(who, Refusal):
            status = 401 if who.reason == "no client certificate" else 403
            return _response(
                status, _error_body("unauthenticated", who.reason), "application/json", False
            )
        path = target.split("?", 1)[0]
        if not path.startswith("/v1/device/"):
            return _response(
                404, _error_body("not_found", "no such resource"), "application/json", keep_alive
            )
        answer = self.resources.handle(who, method, path, body)
        return _response(answer.status, answer.body, answer.content_type, keep_alive)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("not HTTP/1.x")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


def start_in_thread(server: HttpsDeviceServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (tests, single-process serve)."""
    thread = threading.Thread(
        target=server.serve_forever, name="fleetpki-https-accept", daemon=True
    )
    thread.start()
    return thread
