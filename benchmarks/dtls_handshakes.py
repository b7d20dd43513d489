"""DTLS handshakes + one CoAP request per second, against the mTLS endpoint in the same run.

    .venv/bin/python benchmarks/dtls_handshakes.py [--seconds 5] [--clients 64] [--client-procs 2]
                                                   [--workers 0] [--python-clients] [--smoke]

Each phase starts the real ``fleetpki serve`` on loopback (SQLite, the whole auth pipeline, auth
events recorded; ``--workers`` as serve's, CoAP/DTLS in every process) and client processes that
each keep ``clients/client-procs`` handshakes in flight; a client completes a full handshake
with a P-256 device certificate and one request (CoAP GET whoami, confirmable / HTTP GET
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

sys.path.insert(0, str(HERE))
from _common import (  # noqa: E402  (benchmarks/ is not a package)
    WHOAMI,
    build_c_client,
    cpu_seconds,
    free_udp_port,
    make_device_pki,
    start_serve,
)

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
    request = WHOAMI
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
        request = WHOAMI
    mode = "dtls" if kind == "coaps" else "tls"
    args = [str(binary), mode, "127.0.0.1", str(port), device[0], device[1],
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
    served = start_serve(
        data_dir, args.workers, coaps_port=free_udp_port() if kind == "coaps" else None
    )
    port = served.coaps_port if kind == "coaps" else served.https_port
    servers = served.pids()
    inflight = max(1, args.clients // args.client_procs)
    try:
        if args.c_client is not None:
            time.sleep(0.3)
            cpu_before = cpu_seconds(servers)
            running = [
                _c_clients(
                    args.c_client, kind, port, devices[i % len(devices)], inflight, args.seconds
                )
                for i in range(args.client_procs)
            ]
            results = []
            client_cpu = 0.0
            for process in running:
                out, _ = process.communicate(timeout=args.seconds + 60)
                done, _failed, elapsed, _retransmits, used = out.split()
                results.append((int(done), float(elapsed)))
                client_cpu += float(used)
            row = _finish_phase(results, cpu_seconds(servers) - cpu_before)
            row["client_ms"] = client_cpu / row["completed"] * 1000 if row["completed"] else 0.0
            return row
        ctx = mp.get_context("spawn")
        pipes, clients = [], []
        for index in range(args.client_procs):
            cert, key = devices[index % len(devices)]
            receive, send = ctx.Pipe(duplex=False)
            if kind == "coaps":
                target: Any = _coaps_clients
                client_args: tuple[Any, ...] = (port, cert, key)
            else:
                target = _https_clients
                client_args = (port, cert, key, str(ca))
            process = ctx.Process(target=target, args=(*client_args, inflight, args.seconds, send))
            pipes.append(receive)
            clients.append(process)
        time.sleep(0.5)  # let the clients' interpreters start before the clock
        cpu_before = cpu_seconds(servers)
        for process in clients:
            process.start()
        results = [_receive(pipe, args.seconds + 60, f"{kind} client failed") for pipe in pipes]
        cpu = cpu_seconds(servers) - cpu_before
        for process in clients:
            process.join()
        return _finish_phase(results, cpu)
    finally:
        served.stop()


def _finish_phase(results: list[tuple[int, float]], cpu: float) -> dict[str, float]:
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
    parser.add_argument(
        "--workers", type=int, default=0, help="serve --workers (0: one process serves all)"
    )
    parser.add_argument(
        "--python-clients",
        action="store_true",
        help="pyOpenSSL/ssl clients instead of the compiled C client (loadclient.c)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds, tiny sizes (CI: the script works)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.client_procs = 0.5, 4, 1

    from fleetpki.platform.app import Platform

    with tempfile.TemporaryDirectory(prefix="fleetpki-bench-") as tmp:
        base = Path(tmp)
        args.c_client = None if args.python_clients else build_c_client(base)
        pki = make_device_pki(base / "pki", args.client_procs, "acme", intermediate=True)
        with Platform.open(base / "data") as platform:
            platform.store.create_project("acme", "Acme")
            for path, cert_type in pki.uploads:
                platform.store.upload_ca("acme", path.read_bytes(), cert_type)
            ca = platform.server_ca_file
        processes = f"serve --workers {args.workers}"
        print(
            f"{os.cpu_count()} CPUs; {args.clients} handshakes in flight from "
            f"{args.client_procs} {'C' if args.c_client else 'Python'} client processes; "
            f"{processes}; {args.seconds:g} s per endpoint"
        )
        rows = {}
        for kind in ("https", "coaps"):
            rows[kind] = _phase(kind, base / "data", pki.pairs, ca, args)
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
