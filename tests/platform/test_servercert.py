"""The platform's TLS credentials: made on first start, reused, re-issued, or from a given CA."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from platform_testing import key_pem, pem

from fleetpki.ca import CertificateAuthority
from fleetpki.formats import load_certificate
from fleetpki.platform.servercert import ensure_server_credentials
from fleetpki_testing import LINT_PKIX_CERT, run_openssl


def alt_names(path: Path) -> list[str]:
    cert = load_certificate(path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return sorted(str(name.value) for name in san)


def test_made_reused_reissued(tmp_path: Path) -> None:
    names = ["platform.example.com", "127.0.0.1", "::1"]
    files = ensure_server_credentials(tmp_path, names)
    assert alt_names(files.cert_file) == ["127.0.0.1", "::1", "platform.example.com"]
    assert files.key_file.stat().st_mode & 0o077 == 0
    assert (tmp_path / "server-ca.key.pem").stat().st_mode & 0o077 == 0
    run_openssl("verify", "-purpose", "sslserver", "-CAfile", files.ca_file, files.cert_file)
    lint = subprocess.run(
        [LINT_PKIX_CERT, "lint", "-s", "WARNING", str(files.cert_file)],
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout
    first = files.cert_file.read_bytes()
    assert ensure_server_credentials(tmp_path, names).cert_file.read_bytes() == first
    ensure_server_credentials(tmp_path, [*names, "edge.example.com"])
    assert "edge.example.com" in alt_names(files.cert_file)
    run_openssl("verify", "-CAfile", files.ca_file, files.cert_file)


def test_operator_supplied_ca(tmp_path: Path) -> None:
    ca, key = CertificateAuthority.create_root("ops", common_name="Ops Server CA")
    (tmp_path / "ops.crt").write_bytes(pem(ca.certificate))
    (tmp_path / "ops.key").write_bytes(key_pem(key))
    data = tmp_path / "data"
    data.mkdir()
    files = ensure_server_credentials(
        data, ["localhost"], (tmp_path / "ops.crt", tmp_path / "ops.key")
    )
    assert files.ca_file.read_bytes() == pem(ca.certificate)
    assert load_certificate(files.cert_file.read_bytes()).issuer == ca.certificate.subject
    assert not (data / "server-ca.key.pem").exists()
