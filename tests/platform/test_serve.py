"""`fleetpki serve` as a real process: API over HTTP, devices over HTTPS in worker processes."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

from platform_testing import PKI, ServeProcess, curl_whoami, issue, pem


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_serve_end_to_end(tmp_path: Path, pki: PKI, db_url: str | None) -> None:
    with ServeProcess(tmp_path / "data", db_url, workers=2) as server:
        assert server.server_ca.exists()
        assert server.api("GET", "/v1/projects", key="nope").status_code == 401
        assert server.api("POST", "/v1/projects", {"id": "acme"}).status_code == 201
        key = server.api("POST", "/v1/projects/acme/apikeys").json()["data"]["key"]
        body = {
            "certFile": base64.b64encode(pem(pki.root_a.certificate)).decode(),
            "certType": "root",
        }
        created = server.api("POST", "/v1/projects/acme/certificates", body, key=key)
        assert created.status_code == 201, created.text
        ca_id = created.json()["data"]["id"]
        files = issue(pki.root_a, "acme", "served-1").write(tmp_path)
        status, text = curl_whoami(server, files)
        assert status == 200, text
        assert json.loads(text)["certificateId"] == "served-1"
        # Disabled through the API (parent process): refused by the HTTPS workers soon after.
        server.api("PATCH", f"/v1/projects/acme/certificates/{ca_id}", {"enabled": False}, key=key)
        assert wait_for(lambda: curl_whoami(server, files)[0] == 403)

        def reasons() -> list[str]:
            listed = server.api("GET", "/v1/projects/acme/auth-events", key=key).json()["list"]
            return [e["reason"] for e in listed]

        # Workers write events in batches: poll, asking again while a stale worker answers.
        assert wait_for(
            lambda: (
                curl_whoami(server, files)[0] == 403 and any("is disabled" in r for r in reasons())
            )
        )
        events = server.api("GET", "/v1/projects/acme/auth-events", key=key).json()["list"]
        assert any(e["outcome"] == "accepted" for e in events)
        devices = server.api("GET", "/v1/projects/acme/devices", key=key).json()
        assert devices["total"] == 1 and devices["list"][0]["lastSeen"] is not None


def test_serve_with_coaps_endpoint(tmp_path: Path) -> None:
    """--coaps starts the CoAP/DTLS endpoint next to the others (the CoAP module's own tests
    cover what it serves)."""
    import socket
    import sys

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    exe = str(Path(sys.executable).with_name("fleetpki"))
    proc = subprocess.Popen(
        [
            exe,
            "serve",
            "--data",
            str(tmp_path / "d"),
            "--api",
            "127.0.0.1:0",
            "--https",
            "127.0.0.1:0",
            "--coaps",
            f"127.0.0.1:{port}",
            "--workers",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "FLEETPKI_ADMIN_KEY": ServeProcess.ADMIN_KEY},
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        assert f"device CoAP/DTLS  coaps://127.0.0.1:{port}" in lines, (lines, proc.stderr)
    finally:
        proc.terminate()
        proc.wait(10)


def _udp_sockets_on(port: int) -> int:
    """How many UDP sockets are bound to 127.0.0.1:``port`` (from /proc, no tools needed)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        return sum(1 for line in table.readlines()[1:] if line.split()[1] == wanted)


def test_serve_coaps_in_every_worker(tmp_path: Path, pki: PKI) -> None:
    """With workers, each one serves CoAP/DTLS on the same port (SO_REUSEPORT): handshakes use
    every core, and each device's cookie exchange and session stay in one process."""
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    with ServeProcess(tmp_path / "data", workers=2, coaps_port=port) as server:
        assert server.api("POST", "/v1/projects", {"id": "acme"}).status_code == 201
        body = {"certFile": base64.b64encode(pem(pki.root_a.certificate)).decode(),
                "certType": "root"}  # fmt: skip
        assert server.api("POST", "/v1/projects/acme/certificates", body).status_code == 201
        cert, key = issue(pki.root_a, "acme", "coap-many").write(tmp_path)
        assert wait_for(lambda: _udp_sockets_on(port) == 3)  # the main process + 2 workers
        answers = []
        for _ in range(8):  # each run dials from a new source port: spread over the sockets
            out = subprocess.run(
                ["coap-client-openssl", "-B", "10", "-c", str(cert), "-j", str(key),
                 "-C", str(server.server_ca), f"coaps://127.0.0.1:{port}/whoami"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            answers.append(out.stdout.strip())
        assert all(json.loads(a)["certificateId"] == "coap-many" for a in answers), answers


def _serve_cmd(data: Path, *extra: str) -> list[str]:
    import sys

    exe = str(Path(sys.executable).with_name("fleetpki"))
    return [exe, "serve", "--data", str(data), "--api", "127.0.0.1:0", "--https", "127.0.0.1:0",
            *extra]  # fmt: skip


def test_coaps_address_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        out = subprocess.run(
            _serve_cmd(tmp_path / "d", "--coaps", f"127.0.0.1:{port}", "--workers", "0"),
            capture_output=True, text=True, timeout=60,
            env={"PATH": "/usr/bin:/bin", "FLEETPKI_ADMIN_KEY": ServeProcess.ADMIN_KEY},
        )  # fmt: skip
    finally:
        taken.close()
    assert out.returncode == 1 and "ready" not in out.stdout
    expected = f"error: cannot serve CoAP/DTLS on coaps://127.0.0.1:{port}: [Errno 98] Address"
    assert out.stderr.strip() == expected + " already in use"


def test_serve_stops_when_every_https_worker_died(tmp_path: Path) -> None:
    import os
    import signal

    with ServeProcess(tmp_path / "d", workers=2) as server:
        children = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True
        ).stdout.split()
        assert len(children) == 2
        for pid in children:
            os.kill(int(pid), signal.SIGKILL)
        assert server.proc.wait(15) == 1
        stderr = server.proc.stderr.read()  # type: ignore[union-attr]
        assert "HTTPS worker" in stderr and "error: every HTTPS worker process has exited" in stderr
