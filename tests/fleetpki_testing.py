"""Helpers for tests: the real CLI and openssl, CA hierarchies built via the library.

Imported by tests/conftest.py (which wraps them in fixtures) and by test modules directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.ca import CertificateAuthority
from fleetpki.home import Home
from fleetpki.keys import PrivateKey, generate_private_key

# The console script installed next to the interpreter running the tests (the venv's).
FLEETPKI = str(Path(sys.executable).with_name("fleetpki"))
LINT_PKIX_CERT = str(Path(sys.executable).with_name("lint_pkix_cert"))
TEST_PASSPHRASE = "correct horse battery staple"

CliResult = tuple[int, str, str]
RunCli = Callable[..., CliResult]
Openssl = Callable[..., "subprocess.CompletedProcess[str]"]


def run_fleetpki(
    *args: str | os.PathLike[str],
    home: Path | None = None,
    passphrase: str | None = TEST_PASSPHRASE,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> CliResult:
    """Run the real ``fleetpki`` console script; returns (returncode, stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
    if home is not None:
        full_env["FLEETPKI_HOME"] = str(home)
    if passphrase is not None:
        full_env["FLEETPKI_PASSPHRASE"] = passphrase
    full_env.update(env or {})
    proc = subprocess.run(
        [FLEETPKI, *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_openssl(
    *args: str | os.PathLike[str],
    check: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``openssl``; raises AssertionError with its stderr when ``check`` fails."""
    proc = subprocess.run(
        ["openssl", *map(str, args)],
        capture_output=True,
        input=input,
        cwd=cwd,
        timeout=60,
    )
    result = subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Hierarchy:
    """A PKI home holding root CA ``root`` and intermediate ``factory`` (keys unencrypted)."""

    home: Home
    root: CertificateAuthority
    intermediate: CertificateAuthority
    root_file: Path  # root certificate, PEM
    chain_file: Path  # intermediate + root, PEM (an openssl -CAfile bundle)

    @property
    def path(self) -> Path:
        return self.home.path


def make_hierarchy(base: Path, key_type: str = "p256") -> Hierarchy:
    """Build root + intermediate via the library (fast: no subprocess, no KDF)."""
    home = Home(base / "home")
    root = home.init_root("root", common_name="Test Root CA", key_type=key_type, passphrase=None)
    intermediate = home.create_intermediate(
        "factory", parent="root", parent_passphrase=None, passphrase=None
    )
    pem = serialization.Encoding.PEM
    root_file = base / "root.crt.pem"
    root_file.write_bytes(root.certificate.public_bytes(pem))
    chain_file = base / "chain.pem"
    chain_file.write_bytes(
        intermediate.certificate.public_bytes(pem) + root.certificate.public_bytes(pem)
    )
    return Hierarchy(home, root, intermediate, root_file, chain_file)


def write_csr(
    path: Path,
    project: str,
    certificate_id: str,
    key: PrivateKey | None = None,
    *,
    der: bool = False,
) -> Path:
    """Write a CSR with subject O=project, CN=certificate_id (no validation: any string)."""
    import warnings

    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = key or generate_private_key()
    warnings.filterwarnings("ignore", "Attribute's length", UserWarning)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, project, _validate=False),
                    x509.NameAttribute(NameOID.COMMON_NAME, certificate_id, _validate=False),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    path.write_bytes(csr.public_bytes(encoding))
    return path


def inventory_rows(home: Path) -> int:
    """Row count of the home's inventory (0 when it does not exist yet)."""
    import sqlite3

    database = home / "inventory.sqlite3"
    if not database.exists():
        return 0
    with sqlite3.connect(database) as conn:
        return int(conn.execute("SELECT count(*) FROM certificates").fetchone()[0])


def seed_root(where: Path, subject: str = "/CN=Root CA") -> tuple[Path, Path]:
    """The seed's root CA by its two openssl commands: (ca.key.pem, ca.crt.pem) in ``where``."""
    key, cert = where / "ca.key.pem", where / "ca.crt.pem"
    run_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    run_openssl(
        "req", "-x509", "-new", "-nodes", "-key", key, "-sha256", "-subj", subject,
        "-days", "3650", "-out", cert,
    )  # fmt: skip
    return key, cert


def seed_device_csr(where: Path, project: str, certificate_id: str) -> tuple[Path, Path]:
    """The seed recipe's device half: a P-256 key and a CSR by openssl, (key, csr) in ``where``."""
    key, csr = where / "device.key.pem", where / "device.csr.pem"
    run_openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    run_openssl(
        "req", "-new", "-key", key, "-subj", f"/O={project}/CN={certificate_id}", "-out", csr
    )  # fmt: skip
    return key, csr
