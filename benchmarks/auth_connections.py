"""Authenticated device connections per second: new mTLS connection + GET whoami, each time.

    .venv/bin/python benchmarks/auth_connections.py [--seconds 8] [--clients 32]
        [--client-procs 2] [--workers 2] [--lookup-devices 1000000]

Phase 1, baseline: a bare asyncio server with the stdlib ``ssl`` module (mutual TLS, the same CA
and P-256 server certificate, fixed answer, one process), the same clients.
Phase 2: ``fleetpki serve`` (SQLite, ``--workers`` HTTPS processes, the whole auth pipeline, auth
events recorded) with the same clients. Each client does a full handshake (no resumption) with
one of 200 device certificates, GET /v1/device/whoami, checks 200, closes, starts over.
Reported: connections/s, p50/p99 latency, server CPU per connection, the ratio to the baseline.
Clients run on the same machine and take CPU from the server: the per-connection server CPU is
the figure that transfers to a dedicated server.
Phase 3: the per-device lookup (rule a, indexed certificate ID) at 1k devices and at
``--lookup-devices`` devices. Bounded: about 2 x (seconds + 4) s plus the bulk insert.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import random
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REQUEST = b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
ADMIN_KEY = "benchmark-admin-key-0123456789"


def _cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


# -- setup ------------------------------------------------------------------------------------


def make_pki(folder: Path, count: int) -> tuple[Path, list[tuple[str, str]]]:
    """A root CA (PEM file) and ``count`` device certificate/key file pairs for project bench."""
    from cryptography.hazmat.primitives import serialization

    from fleetpki.ca import CertificateAuthority
    from fleetpki.csr import CheckedRequest
    from fleetpki.keys import generate_private_key

    root, _ = CertificateAuthority.create_root("bench", common_name="Bench Root")
    root_file = folder / "root.pem"
    root_file.write_bytes(root.certificate.public_bytes(serialization.Encoding.PEM))
    pairs = []
    for index in range(count):
        key = generate_private_key()
        cert = root.issue(CheckedRequest(key.public_key(), "bench", f"bench-{index:05d}"))
        cert_file, key_file = folder / f"d{index}.crt", folder / f"d{index}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pairs.append((str(cert_file), str(key_file)))
    return root_file, pairs


# -- clients ----------------------------------------------------------------------------------


def _client_process(
    port: int,
    ca_file: str,
    pairs: list[tuple[str, str]],
    threads: int,
    seconds: float,
    out: Any,
    resume: bool = False,
) -> None:
    contexts = []
    for cert_file, key_file in pairs:
        context = ssl.create_default_context(cafile=ca_file)
        context.load_cert_chain(cert_file, key_file)
        contexts.append(context)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def run(offset: int) -> None:
        mine: list[float] = []
        failed = 0
        index = offset
        sessions: dict[int, ssl.SSLSession] = {}
        while time.monotonic() < deadline:
            slot = index % len(contexts)
            context = contexts[slot]
            index += threads
            start = time.perf_counter()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                    session = sessions.get(slot) if resume else None
                    with context.wrap_socket(
                        raw, server_hostname="localhost", session=session
                    ) as tls:
                        tls.sendall(REQUEST)
                        data = b""
                        try:
                            while chunk := tls.recv(4096):
                                data += chunk
                        except ssl.SSLEOFError:
                            pass  # closed without close_notify: the answer is complete
                        if resume and tls.session is not None:
                            sessions[slot] = tls.session
                if not data.startswith(b"HTTP/1.1 200"):
                    if not failed and os.environ.get("BENCH_DEBUG"):
                        print("client got:", data[:200], file=sys.stderr)
                    failed += 1
                    continue
            except OSError as exc:
                if not failed and os.environ.get("BENCH_DEBUG"):
                    print("client error:", repr(exc), file=sys.stderr)
                failed += 1
                continue
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    out.put((latencies, errors[0]))


def load(
    port: int,
    ca_file: Path,
    pairs: list[tuple[str, str]],
    args: Any,
    server_pids: Any,
    resume: bool = False,
) -> dict[str, float]:
    """Run the clients for ``args.seconds``; return rate, latencies and server CPU."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    per_proc = max(1, args.clients // args.client_procs)
    procs = [
        ctx.Process(
            target=_client_process,
            args=(
                port,
                str(ca_file),
                pairs[i :: args.client_procs],
                per_proc,
                args.seconds,
                out,
                resume,
            ),
        )
        for i in range(args.client_procs)
    ]
    pids = server_pids()
    cpu_before = _cpu_seconds(pids)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients_before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.seconds + 60) for _ in procs]
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(pids) - cpu_before
    for proc in procs:
        proc.join()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients_cpu = usage.ru_utime + usage.ru_stime - clients_before
    latencies = sorted(x for lat, _ in results for x in lat)
    errors = sum(e for _, e in results)
    count = len(latencies)
    return {
        "rate": count / args.seconds,
        "p50": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "p99": latencies[int(count * 0.99)] * 1000 if latencies else float("nan"),
        "errors": errors,
        "count": count,
        "cpu_ms": cpu / count * 1000 if count else float("nan"),
        "client_ms": clients_cpu / count * 1000 if count else float("nan"),
        "elapsed": elapsed,
    }


# -- baseline: bare asyncio + ssl -------------------------------------------------------------


def _baseline_server(cert: str, key: str, device_ca: str, port_out: Any) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(device_ca)
    context.verify_mode = ssl.CERT_REQUIRED
    body = b'{"projectId":"bench","deviceId":"x","name":"x","certificateId":"x"}'
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, backlog=1024)
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


# -- per-device lookup ------------------------------------------------------------------------


def lookup_cost(folder: Path, sizes: list[int], samples: int = 3000) -> list[tuple[int, float]]:
    """µs per rule-a lookup (indexed certificate ID) as the device table grows."""
    import sqlalchemy as sa

    from fleetpki.platform.app import Platform
    from fleetpki.platform.provisioning import find_device
    from fleetpki.platform.store.schema import devices

    platform = Platform.open(folder / "lookup", credentials=False)
    platform.store.create_project("lookup")
    now = dt.datetime.now(dt.UTC)
    have = 0
    results = []
    for size in sizes:
        with platform.store.engine.begin() as conn:
            batch = 50_000
            while have < size:
                rows = [
                    {
                        "id": f"{n:032x}",
                        "project_id": "lookup",
                        "name": f"dev-{n}",
                        "certificate_id": f"dev-{n}",
                        "enabled": True,
                        "created_at": now,
                    }
                    for n in range(have, min(size, have + batch))
                ]
                conn.execute(devices.insert(), rows)
                have += len(rows)
        probes = [f"dev-{random.randrange(size)}" for _ in range(samples)]
        with platform.store.engine.connect() as conn:
            for probe in probes[:200]:
                find_device(conn, "lookup", probe)
            start = time.perf_counter()
            for probe in probes:
                assert find_device(conn, "lookup", probe) is not None
            elapsed = time.perf_counter() - start
        results.append((size, elapsed / samples * 1e6))
        conn_check = sa.select(sa.func.count()).select_from(devices)
        with platform.store.engine.connect() as conn:
            assert conn.execute(conn_check).scalar() == size
    platform.close()
    return results


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--lookup-devices", type=int, default=1_000_000)
    args = parser.parse_args()

    from fleetpki.platform.app import Platform

    with tempfile.TemporaryDirectory(prefix="fleetpki-bench-") as tmp:
        folder = Path(tmp)
        root_file, pairs = make_pki(folder, 200)
        data = folder / "data"
        with Platform.open(data) as platform:
            platform.store.create_project("bench")
            platform.store.upload_ca("bench", root_file.read_bytes(), "root")
            cert, key, ca = (
                platform.server_cert_file,
                platform.server_key_file,
                platform.server_ca_file,
            )
        print(
            f"{os.cpu_count()} CPUs; {args.clients} concurrent clients in "
            f"{args.client_procs} processes; {args.seconds:.0f} s per phase"
        )

        ctx = mp.get_context("fork")
        port_out = ctx.Queue()
        baseline = ctx.Process(
            target=_baseline_server, args=(str(cert), str(key), str(root_file), port_out)
        )
        baseline.daemon = True
        baseline.start()
        try:
            port = port_out.get(timeout=10)
            base = load(port, ca, pairs, args, lambda: [baseline.pid])
        finally:
            baseline.terminate()
            baseline.join()
        print(
            f"baseline  asyncio+ssl, 1 process : {base['rate']:7.0f} conn/s  "
            f"p50 {base['p50']:6.1f} ms  p99 {base['p99']:6.1f} ms  "
            f"server CPU {base['cpu_ms']:.2f} ms/conn  (clients {base['client_ms']:.2f})  "
            f"errors {base['errors']}"
        )

        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
        env["FLEETPKI_ADMIN_KEY"] = ADMIN_KEY
        exe = str(Path(sys.executable).with_name("fleetpki"))
        serve = subprocess.Popen(
            [
                exe,
                "serve",
                "--data",
                str(data),
                "--api",
                "127.0.0.1:0",
                "--https",
                "127.0.0.1:0",
                "--no-coaps",
                "--workers",
                str(args.workers),
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert serve.stdout is not None
        https_port = 0
        for line in serve.stdout:
            if line.strip().startswith("device HTTPS"):
                https_port = int(line.split()[2].rsplit(":", 1)[1])
            if line.strip() == "ready":
                break
        try:
            warm = argparse.Namespace(**{**vars(args), "seconds": 1.0})
            load(https_port, ca, pairs, warm, lambda: [])  # creates the 200 devices
            pids = [serve.pid, *_children(serve.pid)]
            plat = load(https_port, ca, pairs, args, lambda: pids)
            resumed = load(https_port, ca, pairs, args, lambda: pids, resume=True)
        finally:
            serve.send_signal(signal.SIGTERM)
            serve.wait(15)
        print(
            f"fleetpki serve, {args.workers} HTTPS workers: {plat['rate']:7.0f} conn/s  "
            f"p50 {plat['p50']:6.1f} ms  p99 {plat['p99']:6.1f} ms  "
            f"server CPU {plat['cpu_ms']:.2f} ms/conn  (clients {plat['client_ms']:.2f})  "
            f"errors {plat['errors']}"
        )
        print(
            f"  same, devices resuming TLS sessions:    {resumed['rate']:7.0f} conn/s  "
            f"p50 {resumed['p50']:6.1f} ms  p99 {resumed['p99']:6.1f} ms  "
            f"server CPU {resumed['cpu_ms']:.2f} ms/conn  (clients {resumed['client_ms']:.2f})  "
            f"errors {resumed['errors']}"
        )
        print(
            f"ratio fleetpki / baseline: {plat['rate'] / base['rate']:.2f}x connections/s; "
            f"one server core at fleetpki's CPU cost: {1000 / plat['cpu_ms']:.0f} conn/s "
            f"(baseline {1000 / base['cpu_ms']:.0f})"
        )

        sizes = sorted({1000, args.lookup_devices})
        costs = lookup_cost(folder, sizes)
        for size, micros in costs:
            print(f"device lookup by certificate ID, {size:>9,} devices: {micros:6.1f} µs")
        print(f"lookup cost ratio {sizes[-1]:,} / 1,000 devices: {costs[-1][1] / costs[0][1]:.2f}x")


if __name__ == "__main__":
    main()
