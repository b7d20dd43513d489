"""DTLS handshakes + one CoAP request per second, against the mTLS endpoint in the same run.

    .venv/bin/python benchmarks/dtls_handshakes.py [--seconds 5] [--clients 64] [--client-procs 2]
                                                   [--server-procs 1] [--python-clients]

Each phase starts ``server-procs`` server processes (SO_REUSEPORT) on loopback with the real
platform (SQLite, real auth pipeline, auth events recorded) and client processes that each keep
``clients/client-procs`` handshakes in flight; a client completes a full handshake with a P-256
device certificate and one request (CoAP GET whoami, confirmable / HTTP GET
/v1/device/whoami), sends close_notify, then starts over. The clients are benchmarks/loadclient.c
(OpenSSL + epoll, compiled here with cc; needs libssl-dev), so they take little of the CPU the
server is measured on; ``--python-clients`` (or no compiler) uses pyOpenSSL / ssl clients instead.
Reported: completed handshakes+requests per second, server CPU per handshake (ms) and what one
server core sustains at that cost; the ratio line compares CoAPS to mTLS (both TLS 1.2
ECDHE-ECDSA-AES128-GCM with a client certificate). Bounded: about 2 x (seconds + 3) s.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "platform"))  # the CoAPS test client helpers

from auth_connections import build_c_client  # noqa: E402  (same folder; shared C load client)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- servers (child processes) ---------------------------------------------------------------


def _serve(kind: str, data_dir: str, port: int, port_out: Any, stop: Any) -> None:
    from fleetpki.platform.app import Platform

    platform = Platform.open(data_dir)
    if kind == "coaps":
        import asyncio

        from fleetpki.platform.transports.coaps import CoapsServer
        from fleetpki.platform.transports.dtls import DtlsSettings

        async def main() -> None:
            server = CoapsServer(
                platform.authenticator,
                platform.resources,
                certfile=platform.server_cert_file,
                keyfile=platform.server_key_file,
                settings=DtlsSettings(max_sessions=100_000, idle_timeout=5.0),
            )
            _host, bound = await server.start("127.0.0.1", port, reuse_port=True)
            port_out.send(bound)
            task = asyncio.ensure_future(server.serve())
            while not stop.is_set():
                await asyncio.sleep(0.1)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
    else:
        from fleetpki.platform.transports import https

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
        server = https.HttpsDeviceServer(
            platform.authenticator,
            platform.resources,
            https.server_context(platform.server_cert_file, platform.server_key_file),
            sock,
        )
        https.start_in_thread(server)
        port_out.send(server.address[1])
        stop.wait()
        server.shutdown()
    platform.close()


# -- clients (child processes) ---------------------------------------------------------------


def _coaps_clients(port: int, cert: str, key: str, inflight: int, seconds: float, out: Any) -> None:
    from coaps_fixtures import run_load

    completed, elapsed, _ = run_load(
        port, Path(cert), Path(key), 10**9, inflight, request=True, timeout=seconds
    )
    out.send((completed, elapsed))


def _https_clients(
    port: int, cert: str, key: str, ca: str, inflight: int, seconds: float, out: Any
) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.maximum_version = ssl.TLSVersion.TLSv1_2  # like for like with DTLS 1.2
    context.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    context.load_cert_chain(cert, key)
    context.load_verify_locations(ca)
    context.check_hostname = False
    request = b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    counts = [0] * inflight
    begin = time.monotonic()

    def worker(index: int) -> None:
        while time.monotonic() - begin < seconds:
            with socket.create_connection(("127.0.0.1", port)) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(request)
                    answer = b""
                    while chunk := tls.recv(65536):
                        answer += chunk
            if answer.startswith(b"HTTP/1.1 200"):
                counts[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(inflight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.send((sum(counts), time.monotonic() - begin))


def _c_clients(
    binary: Path, kind: str, port: int, device: Any, inflight: int, seconds: float
) -> subprocess.Popen[str]:
    if kind == "coaps":
        import aiocoap
        from coaps_fixtures import coap_request

        request = coap_request(aiocoap.GET, "whoami").encode()
    else:
        request = b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    mode = "dtls" if kind == "coaps" else "tls"
    args = [str(binary), mode, "127.0.0.1", str(port), str(device.cert), str(device.key),
            str(seconds), str(inflight), request.hex()]  # fmt: skip
    return subprocess.Popen(args, stdout=subprocess.PIPE, text=True)


# -- driver ----------------------------------------------------------------------------------


def _receive(pipe: Any, seconds: float, failure: str) -> Any:
    """The next message on ``pipe``; SystemExit after ``seconds`` (the benchmark stays bounded)."""
    if not pipe.poll(seconds):
        for child in mp.active_children():
            child.terminate()
        raise SystemExit(f"benchmark: {failure}")
    return pipe.recv()


def _phase(kind: str, data_dir: Path, devices: list[Any], ca: Path, args: Any) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    servers: list[Any] = []
    port = 0
    for _ in range(args.server_procs):  # the first binds an ephemeral port, the rest share it
        port_in, port_out = ctx.Pipe(duplex=False)
        process = ctx.Process(target=_serve, args=(kind, str(data_dir), port, port_out, stop))
        process.start()
        port = _receive(port_in, 60, f"{kind} server did not start")
        servers.append(process)
    inflight = max(1, args.clients // args.client_procs)
    if args.c_client is not None:
        time.sleep(0.3)
        cpu_before = sum(_cpu_seconds(p.pid) for p in servers)
        running = [
            _c_clients(args.c_client, kind, port, devices[i % len(devices)], inflight, args.seconds)
            for i in range(args.client_procs)
        ]
        results = []
        client_cpu = 0.0
        for process in running:
            out, _ = process.communicate(timeout=args.seconds + 60)
            done, _failed, elapsed, _retransmits, used = out.split()
            results.append((int(done), float(elapsed)))
            client_cpu += float(used)
        cpu = sum(_cpu_seconds(p.pid) for p in servers) - cpu_before
        row = _finish_phase(servers, stop, results, cpu)
        row["client_ms"] = client_cpu / row["completed"] * 1000 if row["completed"] else 0.0
        return row
    pipes, clients = [], []
    for index in range(args.client_procs):
        device = devices[index % len(devices)]
        receive, send = ctx.Pipe(duplex=False)
        if kind == "coaps":
            target: Any = _coaps_clients
            client_args: tuple[Any, ...] = (port, str(device.cert), str(device.key))
        else:
            target = _https_clients
            client_args = (port, str(device.cert), str(device.key), str(ca))
        process = ctx.Process(target=target, args=(*client_args, inflight, args.seconds, send))
        pipes.append(receive)
        clients.append(process)
    time.sleep(0.5)  # let the clients' interpreters start before the clock
    cpu_before = sum(_cpu_seconds(p.pid) for p in servers)
    for process in clients:
        process.start()
    results = [_receive(pipe, args.seconds + 60, f"{kind} client failed") for pipe in pipes]
    cpu = sum(_cpu_seconds(p.pid) for p in servers) - cpu_before
    for process in clients:
        process.join()
    return _finish_phase(servers, stop, results, cpu)


def _finish_phase(
    servers: list[Any], stop: Any, results: list[tuple[int, float]], cpu: float
) -> dict[str, float]:
    stop.set()
    for process in servers:
        process.join(10)
    completed = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    per_handshake = cpu / completed if completed else float("inf")
    return {
        "completed": completed,
        "rate": completed / elapsed,
        "cpu_ms": per_handshake * 1000,
        "per_core": 1 / per_handshake if completed else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64, help="handshakes in flight in total")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--server-procs", type=int, default=1, help="SO_REUSEPORT processes")
    parser.add_argument(
        "--python-clients",
        action="store_true",
        help="pyOpenSSL/ssl clients instead of the compiled C client (loadclient.c)",
    )
    args = parser.parse_args()

    from coaps_fixtures import Pki, pem

    from fleetpki.platform.app import Platform

    with tempfile.TemporaryDirectory(prefix="fleetpki-bench-") as tmp:
        base = Path(tmp)
        args.c_client = None if args.python_clients else build_c_client(base)
        pki = Pki(base / "pki", "bench")
        with Platform.open(base / "data") as platform:
            platform.store.create_project("acme", "Acme")
            platform.store.upload_ca("acme", pem(pki.root.certificate), "root")
            platform.store.upload_ca("acme", pem(pki.ca.certificate), "intermediate")
            ca = platform.server_ca_file
        devices = [pki.device(f"bench-{i}", chain=False) for i in range(args.client_procs)]
        print(
            f"{os.cpu_count()} CPUs; {args.clients} handshakes in flight from "
            f"{args.client_procs} {'C' if args.c_client else 'Python'} client processes; "
            f"{args.server_procs} server process(es); {args.seconds:.0f} s per endpoint"
        )
        rows = {}
        for kind in ("https", "coaps"):
            rows[kind] = _phase(kind, base / "data", devices, ca, args)
            row = rows[kind]
            print(
                f"{kind:6} {row['completed']:7.0f} handshakes+requests  {row['rate']:7.0f}/s  "
                f"server {row['cpu_ms']:.2f} ms CPU each = {row['per_core']:.0f}/s per core"
                + (f" (clients {row['client_ms']:.2f} ms)" if "client_ms" in row else "")
            )
        ratio = rows["coaps"]["rate"] / rows["https"]["rate"] if rows["https"]["rate"] else 0
        per_core = (
            rows["coaps"]["per_core"] / rows["https"]["per_core"]
            if rows["https"]["per_core"]
            else 0
        )
        print(f"ratio CoAPS/mTLS: {ratio:.2f}x measured rate, {per_core:.2f}x per server core")


if __name__ == "__main__":
    main()
