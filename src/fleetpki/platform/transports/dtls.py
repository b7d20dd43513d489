"""DTLS 1.2 server sessions over one UDP socket (pyOpenSSL, memory BIOs), keyed by peer address.

The endpoint keeps no per-peer state until a ClientHello comes back with a valid cookie
(HelloVerifyRequest, RFC 6347 4.2.1): before that, one shared listener connection answers every
peer statelessly, and the cookie is an HMAC of the peer address and a coarse clock. After the
handshake the session is held back (the server's last flight unsent) until ``authorize`` says yes;
a refusal is answered with a fatal ``access_denied`` alert, so the device's handshake fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from OpenSSL import SSL
from OpenSSL._util import lib as _lib  # pyOpenSSL has no sigalgs setter

from fleetpki.platform.transports.dtls_records import (
    DTLS1_2_VERSION,
    MTU,
    access_denied_alert,
    is_client_hello,
    pack_datagrams,
    split_records,
)

log = logging.getLogger(__name__)

# OpenSSL files CCM_8 (64-bit tag) under security level 0; device SDKs offer it, so the level is
# lowered and what it would otherwise guard is pinned explicitly: these three suites, and
# signature algorithms without SHA-1 (SIGALGS). Key sizes are the auth pipeline's business.
CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM:ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0"
)
SIGALGS = (
    b"ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:RSA-PSS+SHA256:RSA-PSS+SHA384:RSA-PSS+SHA512:"
    b"RSA+SHA256:RSA+SHA384:RSA+SHA512"
)
_COOKIE_PERIOD = 30.0  # seconds; a cookie stays valid for one to two periods
RECEIVE_BUFFER = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DtlsSettings:
    """Limits of one endpoint: sessions are capped, idle ones dropped, handshakes time-bounded."""

    max_sessions: int = 10_000
    # Handshakes not yet established: a peer that owns its address can still open many and stall
    # them; this keeps them from crowding out the table (RFC 6347 4.2.1 leaves that to servers).
    max_handshakes: int = 1_000
    idle_timeout: float = 300.0
    handshake_timeout: float = 30.0
    sweep_interval: float = 1.0


def _drain(conn: SSL.Connection) -> bytes:
    chunks = []
    while True:
        try:
            chunk = conn.bio_read(65536)
        except SSL.WantReadError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _accept_any_chain(_conn: Any, _cert: Any, _errno: int, _depth: int, _ok: int) -> bool:
    # The handshake only proves possession of the leaf's key; the platform's auth pipeline builds
    # and checks the path against the project's CAs afterwards.
    return True


def server_context(certfile: Path, keyfile: Path) -> SSL.Context:
    """A DTLS 1.2 server context requesting a client certificate; raises OpenSSL.SSL.Error."""
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD)
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.set_max_proto_version(DTLS1_2_VERSION)
    ctx.set_cipher_list(CIPHERS)
    if _lib.SSL_CTX_set1_sigalgs_list(ctx._context, SIGALGS) != 1:
        raise SSL.Error("cannot set the DTLS signature algorithms")
    # No resumption: every session proves possession of the device key afresh.
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_QUERY_MTU)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # Idle sessions give their record buffers back: thousands of mostly quiet devices.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    ctx.use_certificate_chain_file(str(certfile))
    ctx.use_privatekey_file(str(keyfile))
    ctx.check_privatekey()
    ctx.set_verify(SSL.VERIFY_PEER, _accept_any_chain)
    return ctx


class DtlsSession:
    """One peer's DTLS connection; ``state`` is handshake, authorizing or established."""

    def __init__(self, endpoint: DtlsEndpoint, conn: SSL.Connection, peer: tuple[Any, ...]):
        self.endpoint = endpoint
        self.conn = conn
        self.peer = peer
        self.state = "handshake"
        self.started = self.last_seen = time.monotonic()
        self.app: Any = None  # what ``authorize`` returned: the transport's per-session object
        self._timer: asyncio.TimerHandle | None = None
        self.cipher = ""
        self.extended_master_secret = False

    @property
    def peer_text(self) -> str:
        host, port = self.peer[0], self.peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def presented_chain(self) -> tuple[x509.Certificate | None, tuple[x509.Certificate, ...]]:
        """The leaf the peer proved possession of, and the other certificates it sent."""
        leaf = self.conn.get_peer_certificate(as_cryptography=True)
        # On the server side OpenSSL's peer chain excludes the leaf.
        others = self.conn.get_peer_cert_chain(as_cryptography=True) or []
        return leaf, tuple(c for c in others if leaf is None or c != leaf)

    def send(self, plaintext: bytes) -> None:
        """Encrypt one record (one CoAP message) and send it."""
        if self.state != "established":
            return
        try:
            self.conn.write(plaintext)
        except SSL.Error as exc:
            self.endpoint.drop(self, f"write failed: {exc}")
            return
        self.endpoint.transmit(self, _drain(self.conn))

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.conn.DTLSv1_get_timeout()
        if delay is not None and self.state == "handshake":
            self._timer = self.endpoint.loop.call_later(max(delay, 0.0), self._retransmit)

    def _retransmit(self) -> None:
        self._timer = None
        if self.state != "handshake":
            return
        try:
            self.conn.DTLSv1_handle_timeout()
        except SSL.Error as exc:
            self.endpoint.drop(self, f"handshake timer: {exc}")
            return
        self.endpoint.transmit(self, _drain(self.conn))
        self._arm_timer()

    def handshake_step(self) -> None:
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self.endpoint.transmit(self, _drain(self.conn))
            self._arm_timer()
            return
        except SSL.Error as exc:
            # Send whatever alert OpenSSL produced before forgetting the peer.
            self.endpoint.transmit(self, _drain(self.conn))
            self.endpoint.drop(self, f"handshake failed: {_ssl_reason(exc)}")
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.state = "authorizing"
        self.cipher = self.conn.get_cipher_name() or ""
        self.extended_master_secret = _lib.SSL_get_extms_support(self.conn._ssl) == 1
        log.debug(
            "DTLS handshake with %s: %s, extended master secret %s",
            self.peer_text,
            self.cipher,
            "yes" if self.extended_master_secret else "no",
        )
        held = _drain(self.conn)
        self.endpoint.spawn(self._authorize(held))

    async def _authorize(self, held: bytes) -> None:
        try:
            app = await self.endpoint.authorize(self)
        except Exception:
            log.exception("authorizing %s failed", self.peer_text)
            app = None
        if self.endpoint.sessions.get(self.peer) is not self:
            return  # expired or replaced meanwhile
        if app is None:
            self.endpoint.transmit_raw(self.peer, [access_denied_alert(held)])
            self.endpoint.drop(self, "refused by the auth pipeline")
            return
        self.app = app
        self.state = "established"
        self.endpoint.handshaking -= 1
        self.last_seen = time.monotonic()
        self.endpoint.transmit(self, held)

    def datagram(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        if self.state == "authorizing":
            return  # a retransmitted final flight; the held-back answer goes out after authorizing
        try:
            self.conn.bio_write(data)
        except SSL.Error:
            return
        if self.state == "handshake":
            self.handshake_step()
            return
        while True:
            try:
                plaintext = self.conn.recv(65536)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.endpoint.drop(self, "closed by peer")
                return
            except SSL.Error as exc:
                self.endpoint.transmit(self, _drain(self.conn))
                self.endpoint.drop(self, f"record error: {_ssl_reason(exc)}")
                return
            self.endpoint.on_data(self, plaintext)
        # OpenSSL may answer a retransmitted Finished by resending its last flight.
        self.endpoint.transmit(self, _drain(self.conn))

    def close(self, notify: bool) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if notify and self.state == "established":
            with contextlib.suppress(SSL.Error):
                self.conn.shutdown()
                self.endpoint.transmit(self, _drain(self.conn))
        if self.state in ("handshake", "authorizing"):
            self.endpoint.handshaking -= 1
        self.state = "closed"


def _ssl_reason(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list) and args[0]:
        return str(args[0][-1][-1])
    return str(exc) or type(exc).__name__


class DtlsEndpoint(asyncio.DatagramProtocol):
    """The UDP socket, the stateless cookie exchange and the session table.

    ``authorize(session)`` runs once per completed handshake and returns the transport's
    per-session object, or None to refuse; ``on_data(session, plaintext)`` gets each record.
    """

    def __init__(
        self,
        context: SSL.Context,
        authorize: Callable[[DtlsSession], Awaitable[Any]],
        on_data: Callable[[DtlsSession, bytes], None],
        settings: DtlsSettings | None = None,
        on_close: Callable[[DtlsSession], None] | None = None,
    ) -> None:
        self.context = context
        self.authorize = authorize
        self.on_data = on_data
        self.on_close = on_close
        self.settings = settings or DtlsSettings()
        self.sessions: dict[tuple[Any, ...], DtlsSession] = {}
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.DatagramTransport | None = None
        self._secret = os.urandom(32)
        self._cookie_peer = b""
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"hello_verify": 0, "refused_full": 0, "expired": 0, "handshakes": 0}
        self.handshaking = 0  # sessions in state handshake or authorizing
        context.set_cookie_generate_callback(self._generate_cookie)
        context.set_cookie_verify_callback(self._verify_cookie)
        self._listener = self._new_connection()

    # -- cookies -----------------------------------------------------------------------------

    def _cookie(self, bucket: int) -> bytes:
        message = self._cookie_peer + bucket.to_bytes(8, "big")
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:16]

    def _generate_cookie(self, _conn: SSL.Connection) -> bytes:
        self.stats["hello_verify"] += 1
        return self._cookie(int(time.time() / _COOKIE_PERIOD))

    def _verify_cookie(self, _conn: SSL.Connection, cookie: bytes) -> bool:
        bucket = int(time.time() / _COOKIE_PERIOD)
        return any(hmac.compare_digest(cookie, self._cookie(b)) for b in (bucket, bucket - 1))

    # -- socket ------------------------------------------------------------------------------

    def _new_connection(self) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        conn.set_accept_state()
        conn.set_ciphertext_mtu(MTU)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Bursts of handshakes (a fleet reconnecting) overflow the default ~200 KiB buffer;
            # the kernel caps this at net.core.rmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        session = self.sessions.get(addr)
        if session is not None and not (session.state == "established" and is_client_hello(data)):
            session.datagram(data)
            return
        if is_client_hello(data):
            self._listen(data, addr)
        # Anything else from an unknown peer is dropped without a trace (no state, no answer).

    def _listen(self, data: bytes, addr: tuple[Any, ...]) -> None:
        listener = self._listener
        self._cookie_peer = repr(addr[:2]).encode()
        try:
            listener.bio_write(data)
            listener.DTLSv1_listen()
        except SSL.WantReadError:
            self.transmit_raw(addr, split_records(_drain(listener)))
            return
        except SSL.Error:
            self._listener = self._new_connection()
            return
        self._listener = self._new_connection()
        old = self.sessions.get(addr)
        if old is not None:  # the peer restarted: RFC 6347 4.2.8
            self.drop(old, "replaced by a new handshake")
        if (
            len(self.sessions) >= self.settings.max_sessions
            or self.handshaking >= self.settings.max_handshakes
        ):
            self.stats["refused_full"] += 1
            if self.stats["refused_full"] % 1000 == 1:  # a flood must not flood the log too
                log.warning(
                    "DTLS sessions at their limit (%d sessions, %d handshaking): new handshakes "
                    "are dropped (%d so far)",
                    len(self.sessions),
                    self.handshaking,
                    self.stats["refused_full"],
                )
            return
        session = DtlsSession(self, listener, addr)
        self.sessions[addr] = session
        self.stats["handshakes"] += 1
        self.handshaking += 1
        session.handshake_step()

    def transmit(self, session: DtlsSession, data: bytes) -> None:
        if data:
            self.transmit_raw(session.peer, split_records(data))

    def transmit_raw(self, peer: tuple[Any, ...], records: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        for datagram in pack_datagrams(records):
            self.transport.sendto(datagram, peer)

    # -- lifecycle ---------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def drop(self, session: DtlsSession, why: str, notify: bool = False) -> None:
        """Forget ``session`` (if it is still the one for its peer)."""
        if self.sessions.get(session.peer) is session:
            del self.sessions[session.peer]
        if session.state != "closed":
            log.debug("DTLS session %s dropped: %s", session.peer_text, why)
            session.close(notify)
            if self.on_close is not None:
                self.on_close(session)

    def sweep(self) -> None:
        """Drop idle sessions and handshakes that take too long."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.state == "established":
                if now - session.last_seen > self.settings.idle_timeout:
                    self.stats["expired"] += 1
                    self.drop(session, "idle", notify=True)
            elif now - session.started > self.settings.handshake_timeout:
                self.stats["expired"] += 1
                self.drop(session, "handshake timed out")

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            self.sweep()

    def close(self) -> None:
        for session in list(self.sessions.values()):
            self.drop(session, "server shutting down", notify=True)
        for task in list(self._tasks):
            task.cancel()
        if self.transport is not None:
            self.transport.close()
