"""`fleetpki serve`: the management API, the HTTPS mTLS device endpoint and CoAP/DTLS, together.

The HTTPS endpoint runs in ``workers`` forked processes accepting on one listening socket (each
with its own database connections and caches); the parent serves the API and CoAP/DTLS. With
``workers=0`` everything runs in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from OpenSSL import SSL

from fleetpki.errors import FleetPKIError, InputError
from fleetpki.files import read_file, write_file
from fleetpki.platform.app import Platform
from fleetpki.platform.transports.https import (
    HttpsDeviceServer,
    listen,
    server_context,
    start_in_thread,
)

log = logging.getLogger("fleetpki.platform")
ENV_ADMIN_KEY = "FLEETPKI_ADMIN_KEY"
ADMIN_KEY_FILE = "admin.key"


def parse_address(text: str, default_host: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT``; raises InputError."""
    host, port_text = default_host, str(default_port)
    if text.startswith("["):
        inner, _, rest = text[1:].partition("]")
        host = inner
        if rest.startswith(":"):
            port_text = rest[1:]
    elif text.count(":") == 1:
        given, port_text = text.split(":")
        host = given or default_host
    elif text.count(":") > 1:
        host = text
    elif text:
        host = text
    try:
        port = int(port_text)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise InputError(f"bad address {text!r}: use HOST:PORT") from None
    return host, port


def _url(scheme: str, address: tuple[str, int]) -> str:
    host, port = address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def resolve_admin_key(key_file: Path | None, data_dir: Path) -> tuple[str, str]:
    """(admin key, where it came from): --admin-key-file, $FLEETPKI_ADMIN_KEY, or a key made
    on first start in ``<data>/admin.key`` (0600). Raises FleetPKIError."""
    if key_file is not None:
        lines = read_file(key_file, limit=4096).decode().strip().splitlines()
        if not lines or len(lines[0].strip()) < 16:
            raise FleetPKIError(f"admin key file {key_file} must hold a key of 16+ characters")
        return lines[0].strip(), str(key_file)
    if os.environ.get(ENV_ADMIN_KEY):
        key = os.environ[ENV_ADMIN_KEY].strip()
        if len(key) < 16:
            raise FleetPKIError(f"${ENV_ADMIN_KEY} must be 16+ characters")
        return key, f"${ENV_ADMIN_KEY}"
    path = data_dir / ADMIN_KEY_FILE
    if not path.exists():
        write_file(path, secrets.token_urlsafe(32).encode() + b"\n", private=True)
    return path.read_text().strip(), str(path)


@dataclass
class ServeOptions:
    data_dir: Path
    db_url: str | None = None
    api: tuple[str, int] = ("127.0.0.1", 8080)
    https: tuple[str, int] = ("0.0.0.0", 8443)  # noqa: S104 - devices connect from the network
    coaps: tuple[str, int] | None = ("0.0.0.0", 5684)  # noqa: S104
    server_names: list[str] | None = None
    server_ca: tuple[Path, Path] | None = None
    admin_key_file: Path | None = None
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    refresh_interval: float = 0.25


def _https_worker(
    options: ServeOptions,
    sock: socket.socket,
    context: SSL.Context,
    credentials: tuple[Path, Path],
) -> None:
    """A forked HTTPS worker: its own platform objects, stops on SIGTERM or when orphaned."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    platform = Platform.open(
        options.data_dir,
        options.db_url,
        credentials=False,
        refresh_interval=options.refresh_interval,
    )
    server = HttpsDeviceServer(platform.authenticator, platform.resources, context, sock)
    signal.signal(signal.SIGTERM, lambda *_: server.shutdown())
    if _coaps_in_workers(options):
        threading.Thread(
            target=_worker_coaps, args=(options, platform, credentials), daemon=True
        ).start()

    def watchdog() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        server.shutdown()

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        server.serve_forever()
    finally:
        platform.close()


def _coaps_in_workers(options: ServeOptions) -> bool:
    """CoAP/DTLS runs in every HTTPS worker too (SO_REUSEPORT) when it has a fixed port.

    The kernel hashes each peer address to one of the sockets, so a device's cookie exchange
    and session stay in one process, and DTLS handshakes use every core instead of one.
    """
    return options.coaps is not None and options.coaps[1] != 0 and options.workers > 0


def _worker_coaps(
    options: ServeOptions, platform: Platform, credentials: tuple[Path, Path]
) -> None:
    from fleetpki.platform.transports.coaps import serve_coaps

    assert options.coaps is not None
    try:
        asyncio.run(
            serve_coaps(
                platform.authenticator,
                platform.resources,
                certfile=credentials[0],
                keyfile=credentials[1],
                host=options.coaps[0],
                port=options.coaps[1],
                reuse_port=True,
            )
        )
    except Exception as exc:  # the main process reports a bind failure; HTTPS keeps serving
        log.warning("CoAP/DTLS in HTTPS worker %d stopped: %s", os.getpid(), exc)


def _fork_workers(options: ServeOptions, sock: socket.socket, platform: Platform) -> list[int]:
    # One TLS context made before the fork: every worker shares its session-ticket keys, so a
    # device resumes its session whichever worker accepts the next connection.
    context = server_context(platform.server_cert_file, platform.server_key_file)
    # Connections made before the fork must not be shared with the children.
    platform.store.engine.dispose()
    sys.stdout.flush()
    sys.stderr.flush()
    pids = []
    for _ in range(options.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _https_worker(
                    options, sock, context, (platform.server_cert_file, platform.server_key_file)
                )
            except BaseException:
                log.exception("HTTPS worker failed")
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    return pids


def _stop_workers(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.05)
                continue
            break
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def serve(options: ServeOptions, announce: Callable[[str], None] = print) -> None:
    """Run until SIGINT/SIGTERM; ``announce`` gets the human-readable startup lines."""
    from fleetpki.platform.api import create_app

    platform = Platform.open(
        options.data_dir,
        options.db_url,
        server_names=options.server_names,
        server_ca=options.server_ca,
        refresh_interval=options.refresh_interval,
    )
    admin_key, admin_source = resolve_admin_key(options.admin_key_file, options.data_dir)
    try:
        https_sock = listen(*options.https)
        api_sock = listen(*options.api, backlog=128)
    except OSError as exc:
        platform.close()
        raise FleetPKIError(f"cannot listen: {exc.strerror}") from None
    pids: list[int] = []
    https_server = None
    if options.workers > 0:
        pids = _fork_workers(options, https_sock, platform)
    else:
        context = server_context(platform.server_cert_file, platform.server_key_file)
        https_server = HttpsDeviceServer(
            platform.authenticator, platform.resources, context, https_sock
        )
        start_in_thread(https_server)
    app = create_app(platform, admin_key)
    https_address = https_sock.getsockname()[:2]
    api_address = api_sock.getsockname()[:2]
    try:
        asyncio.run(
            _serve_async(
                options,
                platform,
                app,
                api_sock,
                announce,
                pids,
                lines=[
                    f"fleetpki platform serving (data: {options.data_dir})",
                    f"  management API    {_url('http', api_address)}  (web console at /console/, "
                    "OpenAPI at /docs)",
                    f"  device HTTPS      {_url('https', https_address)}  (mTLS; "
                    f"{options.workers or 1} process{'es' if options.workers > 1 else ''})",
                    f"  server CA         {platform.server_ca_file}  (devices trust this file)",
                    f"  admin key         {admin_source}",
                ],
            )
        )
    finally:
        if https_server is not None:
            https_server.shutdown()
        _stop_workers(pids)
        https_sock.close()
        api_sock.close()
        platform.close()


async def _serve_async(
    options: ServeOptions,
    platform: Platform,
    app: Any,
    api_sock: socket.socket,
    announce: Callable[[str], None],
    pids: list[int],
    lines: list[str],
) -> None:
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    api = uvicorn.Server(config)
    tasks = [asyncio.create_task(api.serve(sockets=[api_sock]), name="api")]
    coaps_ready = asyncio.Event()
    if options.coaps is not None:
        try:
            from fleetpki.platform.transports.coaps import serve_coaps
        except ImportError as exc:
            log.warning("CoAP/DTLS endpoint unavailable (%s); serving HTTPS and the API only", exc)
        else:
            tasks.append(
                asyncio.create_task(
                    serve_coaps(
                        platform.authenticator,
                        platform.resources,
                        certfile=platform.server_cert_file,
                        keyfile=platform.server_key_file,
                        host=options.coaps[0],
                        port=options.coaps[1],
                        ready=coaps_ready,
                        reuse_port=_coaps_in_workers(options),
                    ),
                    name="coaps",
                )
            )
    while not api.started:
        if tasks[0].done():
            await tasks[0]
            return
        await asyncio.sleep(0.02)
    if len(tasks) > 1:
        coaps_task = tasks[1]
        ready_wait = asyncio.create_task(coaps_ready.wait())
        await asyncio.wait([ready_wait, coaps_task], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        ready_wait.cancel()
        if coaps_task.done() and coaps_task.exception() is not None:
            api.should_exit = True
            await tasks[0]
            where = _url("coaps", options.coaps)  # type: ignore[arg-type]
            raise FleetPKIError(f"cannot serve CoAP/DTLS on {where}: {coaps_task.exception()}")
        if coaps_ready.is_set():
            lines.insert(3, f"  device CoAP/DTLS  {_url('coaps', options.coaps)}")  # type: ignore[arg-type]
    if pids:
        tasks.append(asyncio.create_task(_watch_workers(pids), name="workers"))
    for line in lines:
        announce(line)
    announce("ready")
    sys.stdout.flush()
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    api.should_exit = True
    for task in pending:
        if task.get_name() != "api":
            task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        error = task.exception()
        if task.get_name() == "coaps" and error is not None:
            raise FleetPKIError(f"CoAP/DTLS endpoint stopped: {error}")
        if error is not None:
            raise error


async def _watch_workers(pids: list[int]) -> None:
    """Log each HTTPS worker that dies; stop serving (an error) when none is left."""
    alive = list(pids)
    while alive:
        await asyncio.sleep(1)
        for pid in list(alive):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                alive.remove(pid)
                log.error("HTTPS worker %d exited (status %d); %d left", pid, status, len(alive))
    raise FleetPKIError("every HTTPS worker process has exited")
