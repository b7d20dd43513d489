"""Authenticated device connections per second: new mTLS connection + GET whoami, each time.

    .venv/bin/python benchmarks/auth_connections.py [--seconds 6] [--clients 32]
        [--client-procs 2] [--workers 2] [--devices 200] [--lookup-devices 1000000]
        [--python-clients-only] [--smoke]

Baseline: a bare asyncio server with the stdlib ``ssl`` module (mutual TLS, the same CA and P-256
server certificate, a fixed answer, one process). Then ``fleetpki serve`` (SQLite, ``--workers``
HTTPS processes, the whole auth pipeline, auth events recorded). Both get the same load:
- Python clients (stdlib ``ssl``, threads in ``--client-procs`` processes): full TLS 1.3
  handshakes with ``--devices`` device certificates, GET whoami, check 200, close, start over; gives
  connections/s and p50/p99 latency; a second fleetpki pass has the devices resume sessions;
- the C client benchmarks/loadclient.c (compiled here; needs cc + libssl-dev; TLS 1.2,
  ``--client-procs`` processes with ``--clients`` connections in flight each), which costs the
  shared cores far less CPU.
Printed: connections/s, latency, the server's and the clients' CPU per connection, ratios to the
baseline. Clients share the machine with the server: the server CPU per connection is the figure
that carries over to a dedicated server. Last, the per-device lookup (rule a, indexed
certificate ID) at 1k and ``--lookup-devices`` devices. Bounded: about 5 x seconds + 20 s, plus
~15 s to insert 1M devices.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing as mp
import os
import random
import resource
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import WHOAMI as REQUEST  # noqa: E402  (benchmarks/ is not a package)
from _common import (  # noqa: E402
    build_c_client,
    cpu_seconds,
    make_device_pki,
    start_serve,
)

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
    cpu_before = cpu_seconds(pids)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    clients_before = usage.ru_utime + usage.ru_stime
    started = time.monotonic()
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.seconds + 60) for _ in procs]
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pids) - cpu_before
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


# -- C clients -------------------------------------------------------------------------------


def c_load(
    binary: Path, port: int, pair: tuple[str, str], args: Any, pids: list[int]
) -> dict[str, float]:
    """The C client (TLS 1.2): ``--client-procs`` processes, ``--clients`` in flight each."""
    before = cpu_seconds(pids)
    procs = [
        subprocess.Popen(
            [
                str(binary),
                "tls",
                "127.0.0.1",
                str(port),
                pair[0],
                pair[1],
                str(args.seconds),
                str(args.clients),
                REQUEST.hex(),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.client_procs)
    ]
    outputs = [proc.communicate(timeout=args.seconds + 60)[0].split() for proc in procs]
    cpu = cpu_seconds(pids) - before
    count = sum(int(out[0]) for out in outputs)
    seconds = max(float(out[2]) for out in outputs)
    client_cpu = sum(float(out[4]) for out in outputs)
    return {
        "rate": count / seconds,
        "errors": sum(int(out[1]) for out in outputs),
        "cpu_ms": cpu / count * 1000 if count else float("nan"),
        "client_ms": client_cpu / count * 1000 if count else float("nan"),
    }


# -- main -------------------------------------------------------------------------------------


def _line(label: str, result: dict[str, float]) -> str:
    text = f"{label:<40} {result['rate']:6.0f} conn/s  "
    if "p50" in result:
        text += f"p50 {result['p50']:6.1f} ms  p99 {result['p99']:6.1f} ms  "
    return (
        text + f"server CPU {result['cpu_ms']:.2f} ms/conn (clients {result['client_ms']:.2f})"
        f"  errors {result['errors']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--devices", type=int, default=200, help="device certificates in use")
    parser.add_argument("--lookup-devices", type=int, default=1_000_000)
    parser.add_argument("--python-clients-only", action="store_true")
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds, tiny sizes (CI: the script works)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.clients, args.client_procs = 0.5, 4, 1
        args.devices, args.lookup_devices = 8, 2000

    from fleetpki.platform.app import Platform

    with tempfile.TemporaryDirectory(prefix="fleetpki-bench-") as tmp:
        folder = Path(tmp)
        pki = make_device_pki(folder / "pki", args.devices)
        root_file, pairs = pki.root_file, pki.pairs
        binary = None if args.python_clients_only else build_c_client(folder)
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
            f"{os.cpu_count()} CPUs, clients on the same machine; {args.seconds:g} s per phase; "
            f"Python clients: {args.clients} in {args.client_procs} processes; "
            + (
                f"C client: {args.client_procs} x {args.clients} in flight"
                if binary
                else "no C client (cc?)"
            )
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
            base_c = c_load(binary, port, pairs[0], args, [baseline.pid]) if binary else None
        finally:
            baseline.terminate()
            baseline.join()
        print(_line("baseline asyncio+ssl, 1 process", base))

        served = start_serve(data, args.workers)
        try:
            warm = argparse.Namespace(**{**vars(args), "seconds": min(1.0, args.seconds)})
            load(served.https_port, ca, pairs, warm, lambda: [])  # creates the devices
            pids = served.pids()
            plat = load(served.https_port, ca, pairs, args, lambda: pids)
            resumed = load(served.https_port, ca, pairs, args, lambda: pids, resume=True)
            plat_c = c_load(binary, served.https_port, pairs[0], args, pids) if binary else None
        finally:
            served.stop()
        print(_line(f"fleetpki serve, {args.workers} HTTPS workers", plat))
        print(_line("  same, devices resuming TLS sessions", resumed))
        print(
            f"ratio fleetpki / baseline (Python clients): {plat['rate'] / base['rate']:.2f}x "
            f"connections/s; per server core at the measured CPU cost: "
            f"{1000 / plat['cpu_ms']:.0f} vs {1000 / base['cpu_ms']:.0f} conn/s"
        )
        if base_c is not None and plat_c is not None:
            print(_line("C client, TLS 1.2: baseline", base_c))
            print(_line(f"C client, TLS 1.2: fleetpki, {args.workers} workers", plat_c))
            print(
                f"ratio fleetpki / baseline (C client): {plat_c['rate'] / base_c['rate']:.2f}x "
                "connections/s"
            )

        sizes = sorted({1000, args.lookup_devices})
        costs = lookup_cost(folder, sizes, samples=300 if args.smoke else 3000)
        for size, micros in costs:
            print(f"device lookup by certificate ID, {size:>9,} devices: {micros:6.1f} µs")
        print(f"ratio lookup cost {sizes[-1]:,} / 1,000 devices: {costs[-1][1] / costs[0][1]:.2f}x")


if __name__ == "__main__":
    main()
