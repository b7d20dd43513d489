"""What several benchmarks share: a device PKI made through the public API, `fleetpki serve` in
a child process, CPU accounting of processes, the compiled C load client.

Not a benchmark itself (the leading underscore keeps it out of tests/test_benchmarks.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import create_csr
from fleetpki.keys import generate_private_key

HERE = Path(__file__).resolve().parent
FLEETPKI = str(Path(sys.executable).with_name("fleetpki"))
ADMIN_KEY = "benchmark-admin-key-0123456789"
WHOAMI = b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class DevicePki:
    """CA files to upload (path, certType) and device (certificate, key) file pairs."""

    uploads: list[tuple[Path, str]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def root_file(self) -> Path:
        return self.uploads[0][0]


def make_device_pki(
    folder: Path, count: int, project: str = "bench", *, intermediate: bool = False
) -> DevicePki:
    """A root (and an intermediate that signs the devices, when asked) and ``count`` devices,
    each a fresh P-256 key, a CSR and a certificate signed under the device policy."""
    folder.mkdir(parents=True, exist_ok=True)
    root, _ = CertificateAuthority.create_root("bench-root", common_name="Bench Root")
    pki = DevicePki()
    (folder / "root.pem").write_bytes(pem(root.certificate))
    pki.uploads.append((folder / "root.pem", "root"))
    issuer = root
    if intermediate:
        issuer, _ = root.create_intermediate("bench-int", common_name="Bench Factory")
        (folder / "intermediate.pem").write_bytes(pem(issuer.certificate))
        pki.uploads.append((folder / "intermediate.pem", "intermediate"))
    for index in range(count):
        key = generate_private_key()
        cert = issuer.sign_csr(create_csr(key, project, f"bench-{index:05d}"), project)
        cert_file, key_file = folder / f"d{index}.crt", folder / f"d{index}.key"
        cert_file.write_bytes(pem(cert))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        pki.pairs.append((str(cert_file), str(key_file)))
    return pki


def free_udp_port() -> int:
    """A UDP port free right now on 127.0.0.1 (serve's CoAP workers need a fixed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[str]
    https_port: int = 0
    coaps_port: int = 0
    api_port: int = 0

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _port(line: str) -> int:
    return int(line.split()[2].rsplit(":", 1)[1])


def start_serve(data: Path, workers: int, *, coaps_port: int | None = None) -> Served:
    """`fleetpki serve` on loopback (SQLite in ``data``), returned once it printed "ready"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
    env["FLEETPKI_ADMIN_KEY"] = ADMIN_KEY
    args = [FLEETPKI, "serve", "--data", str(data), "--api", "127.0.0.1:0",
            "--https", "127.0.0.1:0", "--workers", str(workers)]  # fmt: skip
    args += ["--coaps", f"127.0.0.1:{coaps_port}"] if coaps_port is not None else ["--no-coaps"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    served = Served(process)
    for line in process.stdout:
        text = line.strip()
        if text.startswith("device HTTPS"):
            served.https_port = _port(text)
        elif text.startswith("device CoAP/DTLS"):
            served.coaps_port = _port(text)
        elif text.startswith("management API"):
            served.api_port = _port(text)
        elif text == "ready":
            return served
    raise SystemExit(f"fleetpki serve exited before it was ready (code {process.wait()})")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds used so far by ``pids`` (those still alive)."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def build_c_client(folder: Path) -> Path | None:
    """Compile benchmarks/loadclient.c (cc + libssl-dev); None when that is not possible."""
    binary = folder / "loadclient"
    try:
        subprocess.run(
            ["cc", "-O2", "-o", str(binary), str(HERE / "loadclient.c"), "-lssl", "-lcrypto"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return binary
