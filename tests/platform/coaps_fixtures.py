"""Shared pieces of the CoAPS tests: PKI material, a server on an ephemeral port, a DTLS client."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from fleetpki.csr import check_csr, create_csr
from fleetpki.home import Home
from fleetpki.keys import generate_private_key
from fleetpki.platform.transports.coaps import CoapsServer
from fleetpki.platform.transports.dtls import DtlsSettings
from fleetpki.platform.transports.dtls_records import (
    DTLS1_2_VERSION,
    pack_datagrams,
    split_records,
)

PROJECT = "acme"


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class DeviceFiles:
    cert: Path
    key: Path
    certificate_id: str


class Pki:
    """A fleetpki home with a root and an intermediate, issuing device certificates into ``dir``."""

    def __init__(self, directory: Path, name: str = "fleet") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home = Home(directory / f"home-{name}")
        self.root = self.home.init_root(f"{name}-root", passphrase=None)
        self.ca = self.home.create_intermediate(
            f"{name}-int", parent=f"{name}-root", parent_passphrase=None, passphrase=None
        )
        self.root_file = directory / f"{name}-root.pem"
        self.root_file.write_bytes(pem(self.root.certificate))

    def device(
        self,
        certificate_id: str,
        *,
        project: str = PROJECT,
        key_type: str = "p256",
        expired: bool = False,
        chain: bool = True,
    ) -> DeviceFiles:
        """Key + certificate (leaf, then the intermediate when ``chain``) for one device."""
        key = generate_private_key(key_type)
        csr = create_csr(key, project, certificate_id)
        if expired:
            past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
            cert = self.ca.issue(check_csr(csr, project), days=2, now=past)
        else:
            cert = self.home.sign(self.ca, csr, project_slug=project, renew=True)
        cert_file = self.dir / f"{certificate_id}.crt.pem"
        key_file = self.dir / f"{certificate_id}.key.pem"
        cert_file.write_bytes(pem(cert) + (pem(self.ca.certificate) if chain else b""))
        key_file.write_bytes(key_pem(key))
        return DeviceFiles(cert_file, key_file, certificate_id)


def openssl_recipe_device(directory: Path, project: str, certificate_id: str) -> DeviceFiles:
    """The seed's plain openssl recipe: req -x509 root, v1 device certificate from x509 -req."""

    def run(*args: str) -> None:
        subprocess.run(args, cwd=directory, check=True, capture_output=True)

    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root.key")
    run("openssl", "req", "-x509", "-new", "-key", "root.key", "-subj", "/CN=Seed Root",
        "-days", "365", "-out", "root.pem")  # fmt: skip
    run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "device.key")
    subject = f"/O={project}/CN={certificate_id}"
    run("openssl", "req", "-new", "-key", "device.key", "-subj", subject, "-out", "device.csr")
    run("openssl", "x509", "-req", "-in", "device.csr", "-CA", "root.pem", "-CAkey", "root.key",
        "-CAcreateserial", "-days", "365", "-out", "device.pem")  # fmt: skip
    return DeviceFiles(directory / "device.pem", directory / "device.key", certificate_id)


class ServerThread:
    """A CoapsServer on 127.0.0.1:<ephemeral> with its own event loop in a thread."""

    def __init__(
        self,
        authenticator: Any,
        resources: Any,
        certfile: Path,
        keyfile: Path,
        settings: DtlsSettings | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.server: CoapsServer | None = None
        self.port = 0
        started = threading.Event()
        self._args = (authenticator, resources, certfile, keyfile, settings)
        self._task: asyncio.Task[None] | None = None
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        started.wait(10)
        assert self.port, "CoAPS server did not start"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main() -> None:
            authenticator, resources, certfile, keyfile, settings = self._args
            self.server = CoapsServer(
                authenticator, resources, certfile=certfile, keyfile=keyfile, settings=settings
            )
            _host, self.port = await self.server.start(self.host, 0)
            started.set()
            await self.server.serve()

        self._task = self.loop.create_task(main())
        try:
            self.loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            self.loop.close()

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop and return its result."""
        done: dict[str, Any] = {}
        event = threading.Event()

        def wrapper() -> None:
            done["value"] = fn(*args)
            event.set()

        self.loop.call_soon_threadsafe(wrapper)
        event.wait(10)
        return done["value"]

    def session_count(self) -> int:
        assert self.server is not None and self.server.endpoint is not None
        return int(self.call(lambda: len(self.server.endpoint.sessions)))  # type: ignore[union-attr]

    def stop(self) -> None:
        if self._task is not None:
            self.loop.call_soon_threadsafe(self._task.cancel)
        self.thread.join(10)


def coap_client(
    binary: str,
    device: DeviceFiles,
    ca_file: Path,
    port: int,
    path: str,
    *,
    method: str = "get",
    payload: str | None = None,
    timeout: int = 10,
    host: str = "127.0.0.1",
) -> subprocess.CompletedProcess[str]:
    """libcoap's coap-client as a device (``-B`` bounds its wait)."""
    args = [binary, "-m", method, "-c", str(device.cert), "-j", str(device.key),
            "-C", str(ca_file), "-B", "5"]  # fmt: skip
    if payload is not None:
        args += ["-e", payload]
    args.append(f"coaps://{host}:{port}/{path}")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def coap_request(
    code: Any, path: str, *, mid: int = 1, confirmable: bool = True, payload: bytes = b""
) -> aiocoap.Message:
    """A request as a device sends it, with the message ID and token set by hand."""
    message = aiocoap.Message(code=code, uri_path=(path,), payload=payload)
    message.mtype = aiocoap.CON if confirmable else aiocoap.NON
    message.mid = mid
    message.token = mid.to_bytes(2, "big")
    return message


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DtlsClient:
    """A pyOpenSSL DTLS 1.2 client over a plain UDP socket (tests and the benchmark)."""

    def __init__(
        self,
        port: int,
        cert: Path | None,
        key: Path | None,
        ca_file: Path,
        sock: socket.socket | None = None,
        group: Any = None,
    ) -> None:
        ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
        if group is not None:
            ctx.set_tmp_ecdh(group)  # offer only this ECDHE group
        ctx.set_min_proto_version(DTLS1_2_VERSION)
        ctx.set_max_proto_version(DTLS1_2_VERSION)
        if cert is not None and key is not None:
            ctx.use_certificate_chain_file(str(cert))
            ctx.use_privatekey_file(str(key))
        ctx.load_verify_locations(str(ca_file))
        ctx.set_verify(SSL.VERIFY_PEER, lambda *_: True)
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(1200)
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.connect(("127.0.0.1", port))
        self.sock = sock
        self.sock.settimeout(0.5)

    def _flush(self) -> None:
        data = b""
        while True:
            try:
                data += self.conn.bio_read(65536)
            except SSL.WantReadError:
                break
        for datagram in pack_datagrams(split_records(data)):
            self.sock.send(datagram)

    def handshake(self, deadline: float = 5.0) -> None:
        """Complete the handshake; raises SSL.Error (e.g. the server's alert) or TimeoutError."""
        end = time.monotonic() + deadline
        while True:
            try:
                self.conn.do_handshake()
                self._flush()
                return
            except SSL.WantReadError:
                self._flush()
            try:
                self.conn.bio_write(self.sock.recv(65536))
            except TimeoutError:
                self.conn.DTLSv1_handle_timeout()
            if time.monotonic() > end:
                raise TimeoutError("DTLS handshake did not complete")

    def request(self, message: aiocoap.Message) -> aiocoap.Message:
        self.conn.write(message.encode())
        self._flush()
        while True:
            self.conn.bio_write(self.sock.recv(65536))
            try:
                return aiocoap.Message.decode(self.conn.recv(65536))
            except SSL.WantReadError:
                continue

    def get_json(self, path: str) -> Any:
        return json.loads(self.request(coap_request(aiocoap.GET, path)).payload)

    def close(self) -> None:
        self.sock.close()


def stop_all(servers: Iterator[ServerThread]) -> None:
    for server in servers:
        server.stop()


def mbedtls_get(
    port: int, device: DeviceFiles, ca_file: Path, path: str, suite: str | None = None
) -> tuple[aiocoap.Message, str]:
    """A device on mbedTLS 2.28 (python-mbedtls): handshake, one confirmable GET; returns the
    response and the negotiated cipher suite. Raises mbedtls.exceptions.TLSError on refusal."""
    from mbedtls import pk, tls
    from mbedtls import x509 as mx509

    chain_pem = device.cert.read_text()
    blocks = [
        b + "-----END CERTIFICATE-----\n" for b in chain_pem.split("-----END CERTIFICATE-----")[:-1]
    ]
    certs = [mx509.CRT.from_PEM(b.strip() + "\n") for b in blocks]
    key = pk.ECC.from_PEM(device.key.read_text())
    config = tls.DTLSConfiguration(
        certificate_chain=(certs, key),
        trust_store=tls.TrustStore([mx509.CRT.from_PEM(ca_file.read_text())]),
        validate_certificates=True,
        ciphers=[suite] if suite else None,
        lowest_supported_version=tls.DTLSVersion.DTLSv1_2,
        highest_supported_version=tls.DTLSVersion.DTLSv1_2,
        handshake_timeout_max=5.0,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    wrapped = tls.ClientContext(config).wrap_socket(sock, server_hostname="localhost")
    try:
        wrapped.do_handshake()
        request = coap_request(aiocoap.GET, path, mid=7)
        wrapped.send(request.encode())
        reply = aiocoap.Message.decode(wrapped.recv(4096))
        cipher = wrapped.cipher()
        cipher_name = cipher if isinstance(cipher, str) else str(cipher[0])
        return reply, cipher_name
    finally:
        with contextlib.suppress(Exception):
            wrapped.close()


class CoapsEnv:
    """The real platform (SQLite) with projects acme and other, served by CoAPS on loopback."""

    def __init__(
        self, directory: Path, settings: DtlsSettings | None = None, host: str = "127.0.0.1"
    ) -> None:
        from fleetpki.platform.app import Platform

        self.dir = directory
        self.pki = Pki(directory / "pki-acme", "acme")
        self.other_pki = Pki(directory / "pki-other", "other")
        self.platform = Platform.open(directory / "data", event_flush_interval=0)
        store = self.platform.store
        store.create_project("acme", "Acme")
        store.create_project("other", "Other")
        self.root_id = store.upload_ca("acme", pem(self.pki.root.certificate), "root")[0]["id"]
        self.intermediate_id = store.upload_ca(
            "acme", pem(self.pki.ca.certificate), "intermediate"
        )[0]["id"]
        store.upload_ca("other", pem(self.other_pki.root.certificate), "root")
        self.ca_file = self.platform.server_ca_file
        self.server = ServerThread(
            self.platform.authenticator,
            self.platform.resources,
            self.platform.server_cert_file,
            self.platform.server_key_file,
            settings,
            host,
        )
        self.port = self.server.port

    def events(self, project: str | None = "acme") -> list[dict[str, Any]]:
        """CoAPS auth events, newest first (``project=None``: those with no project)."""
        if project is not None:
            return self.platform.store.list_auth_events(project, transport="coaps", limit=1000)
        import sqlalchemy as sa

        from fleetpki.platform.store.schema import auth_events

        self.platform.store.list_auth_events("acme")  # flushes pending events
        query = (
            sa.select(auth_events)
            .where(auth_events.c.project_id.is_(None), auth_events.c.transport == "coaps")
            .order_by(auth_events.c.id.desc())
        )
        with self.platform.store.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def close(self) -> None:
        self.server.stop()
        self.platform.close()


class _LoadSlot:
    def __init__(self, ctx: SSL.Context, port: int, host: str) -> None:
        self.conn = SSL.Connection(ctx, None)
        self.conn.set_connect_state()
        self.conn.set_ciphertext_mtu(1200)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect((host, port))
        self.done = False
        self.answered = False
        self.last = time.monotonic()

    def flush(self) -> None:
        data = b""
        while True:
            try:
                data += self.conn.bio_read(65536)
            except SSL.WantReadError:
                break
        for datagram in pack_datagrams(split_records(data)):
            with contextlib.suppress(BlockingIOError):
                self.sock.send(datagram)

    def step(self, request: bytes | None) -> None:
        """Advance the handshake; once done, send ``request`` (or finish)."""
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            self.flush()
            return
        self.flush()
        self.done = True
        if request is not None:
            self.conn.write(request)
            self.flush()


def run_load(
    port: int,
    cert: Path,
    key: Path,
    count: int,
    concurrency: int,
    *,
    request: bool = True,
    keep_open: bool = False,
    timeout: float = 60.0,
    host: str = "127.0.0.1",
) -> tuple[int, float, list[_LoadSlot]]:
    """``count`` DTLS handshakes (+ one confirmable GET whoami each), ``concurrency`` at a time,
    from one thread. Returns (completed, seconds, open slots when ``keep_open``)."""
    import selectors

    ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    ctx.set_min_proto_version(DTLS1_2_VERSION)
    ctx.set_max_proto_version(DTLS1_2_VERSION)
    ctx.use_certificate_chain_file(str(cert))
    ctx.use_privatekey_file(str(key))
    ctx.set_verify(SSL.VERIFY_NONE)
    payload = coap_request(aiocoap.GET, "whoami").encode() if request else None
    selector = selectors.DefaultSelector()
    started = completed = 0
    kept: list[_LoadSlot] = []
    begin = time.monotonic()

    def start() -> None:
        nonlocal started
        slot = _LoadSlot(ctx, port, host)
        selector.register(slot.sock, selectors.EVENT_READ, slot)
        started += 1
        slot.step(payload)

    def finish(slot: _LoadSlot, ok: bool = True) -> None:
        nonlocal completed
        completed += ok
        selector.unregister(slot.sock)
        if keep_open and ok:
            kept.append(slot)
        else:
            slot.sock.close()
        if started < count:
            start()

    while started < min(concurrency, count):
        start()
    while selector.get_map() and time.monotonic() - begin < timeout:
        for selected, _mask in selector.select(0.2):
            slot = selected.data
            try:
                data = slot.sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            slot.last = time.monotonic()
            slot.conn.bio_write(data)
            if not slot.done:
                try:
                    slot.step(payload)
                except SSL.Error:
                    finish(slot, ok=False)
                    continue
                if slot.done and payload is None:
                    finish(slot)
            else:
                try:
                    reply = aiocoap.Message.decode(slot.conn.recv(65536))
                except SSL.WantReadError:
                    continue
                if reply.code == aiocoap.EMPTY:
                    continue  # an empty ACK: the answer follows separately
                slot.answered = reply.code == aiocoap.CONTENT
                finish(slot)
        now = time.monotonic()
        for key_ in list(selector.get_map().values()):
            slot = key_.data
            if now - slot.last > 1.0:  # retransmit: the handshake flight, or the request
                slot.last = now
                if slot.done and payload is not None:
                    slot.conn.write(payload)
                else:
                    slot.conn.DTLSv1_handle_timeout()
                slot.flush()
    for unfinished in list(selector.get_map().values()):
        unfinished.fileobj.close()  # type: ignore[union-attr]
    selector.close()
    return completed, time.monotonic() - begin, kept
