"""HTTPS with client certificates (mTLS over TCP): the device endpoint on TCP.

pyOpenSSL, because the server must see the presented chain even when it would not verify: the
verify callback accepts every chain, the handshake still proves possession of the leaf's key
(CertificateVerify), and the Authenticator alone decides.

One event loop (epoll via ``selectors``) per process drives every connection through handshake,
request and response with non-blocking sockets: no thread per connection, so idle or slow peers
cost a socket and a deadline, not a thread, and the GIL is never contended. ``fleetpki serve``
runs several processes accepting on one socket for throughput.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from pathlib import Path

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
MAX_CONNECTIONS = 10_000  # per process; past that, new connections wait in the backlog
ACCEPTS_PER_WAKEUP = 16  # small, so that worker processes share a burst
REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def _accept_any(_conn: object, _cert: object, _errno: int, _depth: int, _ok: int) -> bool:
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


def _response(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    if body:
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _error(status: int, code: str, message: str) -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return _response(status, body, "application/json", False)


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


class _Connection:
    """One device connection: handshake, then requests and responses, then close."""

    __slots__ = ("closing", "deadline", "inbox", "outbox", "peer", "sock", "state", "tls", "who")

    def __init__(self, tls: SSL.Connection, sock: socket.socket, peer: str) -> None:
        self.tls, self.sock, self.peer = tls, sock, peer
        self.state = "handshake"
        self.who: DeviceIdentity | Refusal | None = None
        self.inbox = b""
        self.outbox = b""
        self.closing = False
        self.deadline = 0.0


class HttpsDeviceServer:
    """Accepts mTLS connections on ``sock`` and serves device resources from one event loop."""

    def __init__(
        self,
        authenticator: Authenticator,
        resources: DeviceResources,
        context: SSL.Context,
        sock: socket.socket,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.authenticator = authenticator
        self.resources = resources
        self.context = context
        self.sock = sock
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._connections: dict[int, _Connection] = {}

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def shutdown(self) -> None:
        """Ask ``serve_forever`` to return (within half a second)."""
        self._stop.set()

    def serve_forever(self) -> None:
        """Run the event loop until ``shutdown``; blocks the calling thread."""
        self.sock.setblocking(False)
        self._selector.register(self.sock, _READ, None)
        listening = True
        next_sweep = time.monotonic() + 0.5
        try:
            while not self._stop.is_set():
                full = len(self._connections) >= MAX_CONNECTIONS
                if full == listening:  # stop accepting when full, resume when there is room
                    listening = not full
                    if listening:
                        self._selector.register(self.sock, _READ, None)
                    else:
                        self._selector.unregister(self.sock)
                for key, _events in self._selector.select(timeout=0.5):
                    if key.data is None:
                        self._accept()
                    else:
                        self._advance(key.data)
                now = time.monotonic()
                if now >= next_sweep:
                    next_sweep = now + 0.5
                    for conn in [c for c in self._connections.values() if c.deadline < now]:
                        self._close(conn)
        finally:
            for conn in list(self._connections.values()):
                self._close(conn)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self.sock)
            self._selector.close()

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                client, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.warning("accept failed (out of file descriptors?)", exc_info=True)
                return
            try:
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                tls = SSL.Connection(self.context, client)
                tls.set_accept_state()
            except OSError:
                client.close()
                continue
            conn = _Connection(tls, client, f"{address[0]}:{address[1]}")
            conn.deadline = time.monotonic() + self.handshake_timeout
            self._connections[client.fileno()] = conn
            self._selector.register(client, _READ, conn)
            self._advance(conn)

    def _advance(self, conn: _Connection) -> None:
        """Move ``conn`` as far as it can go without blocking, then wait for its socket."""
        try:
            if conn.state == "handshake":
                conn.tls.do_handshake()
                self._authenticate(conn)
            while True:
                if not conn.outbox and not conn.closing:
                    self._read(conn)
                while conn.outbox:
                    sent = conn.tls.send(conn.outbox[:16384])
                    conn.outbox = conn.outbox[sent:]
                if conn.closing:
                    self._close(conn)
                    return
                if b"\r\n\r\n" not in conn.inbox:
                    break  # nothing pipelined: wait for the next request
            self._want(conn, _READ)
        except SSL.WantReadError:
            self._want(conn, _READ)
        except SSL.WantWriteError:
            self._want(conn, _WRITE)
        except (SSL.Error, OSError):
            self._close(conn)
        except Exception:
            log.exception("HTTPS connection from %s failed", conn.peer)
            self._close(conn)

    def _want(self, conn: _Connection, events: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            if self._selector.get_key(conn.sock).events != events:
                self._selector.modify(conn.sock, events, conn)

    def _authenticate(self, conn: _Connection) -> None:
        leaf = conn.tls.get_peer_certificate(as_cryptography=True)
        presented = None
        if leaf is not None:
            sent = conn.tls.get_peer_cert_chain(as_cryptography=True) or []
            presented = PresentedChain(leaf, tuple(c for c in sent if c != leaf))
        conn.who = self.authenticator.authenticate(presented, transport=TRANSPORT, peer=conn.peer)
        conn.state = "read"
        conn.deadline = time.monotonic() + self.idle_timeout

    def _read(self, conn: _Connection) -> None:
        """Read until a whole request is in; queue its response (raises WantReadError)."""
        while True:
            request = self._take_request(conn)
            if request is not None:
                conn.outbox = request
                conn.deadline = time.monotonic() + self.idle_timeout
                return
            try:
                data = conn.tls.recv(65536)
            except (SSL.ZeroReturnError, SSL.SysCallError):
                data = b""
            if not data:
                conn.closing = True
                return
            conn.inbox += data

    def _take_request(self, conn: _Connection) -> bytes | None:
        """The response to the next complete request in the inbox, or None if none is whole."""
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbox) > MAX_HEAD:
                conn.closing = True
                return _response(431, b"", "", False)
            return None
        head = conn.inbox[:end]
        try:
            method, target, version, headers = _parse_head(head)
            length = int(headers.get("content-length", "0"))
        except ValueError:
            conn.closing = True
            return _error(400, "bad_request", "bad request")
        if "transfer-encoding" in headers:
            conn.closing = True
            return _error(501, "not_implemented", "send Content-Length, not chunked")
        if not 0 <= length <= MAX_BODY:
            conn.closing = True
            return _error(413, "too_large", "body too large")
        if len(conn.inbox) < end + 4 + length:
            return None
        body = conn.inbox[end + 4 : end + 4 + length]
        conn.inbox = conn.inbox[end + 4 + length :]
        who = conn.who
        if not isinstance(who, DeviceIdentity):
            reason = who.reason if who is not None else "not authenticated"
            status = 401 if reason == "no client certificate" else 403
            conn.closing = True
            return _error(status, "unauthenticated", reason)
        connection = headers.get("connection", "").lower()
        keep_alive = connection == "keep-alive" if version == "HTTP/1.0" else connection != "close"
        conn.closing = not keep_alive
        path = target.split("?", 1)[0]
        if not path.startswith("/v1/device/"):
            body404 = json.dumps({"error": {"code": "not_found", "message": "no such resource"}})
            return _response(404, body404.encode(), "application/json", keep_alive)
        answer = self.resources.handle(who, method, path, body)
        return _response(answer.status, answer.body, answer.content_type, keep_alive)

    def _close(self, conn: _Connection) -> None:
        self._connections.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with contextlib.suppress(SSL.Error, OSError):
            conn.tls.shutdown()  # close_notify, best effort: the socket is non-blocking
        with contextlib.suppress(OSError):
            conn.sock.close()


def start_in_thread(server: HttpsDeviceServer) -> threading.Thread:
    """Run ``server.serve_forever`` in a daemon thread (tests, single-process serve)."""
    thread = threading.Thread(target=server.serve_forever, name="fleetpki-https", daemon=True)
    thread.start()
    return thread
