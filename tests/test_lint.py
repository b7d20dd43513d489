"""pkilint (the independent `lint_pkix_cert` tool): no finding >= WARNING on what we issue."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import InputError
from fleetpki.keys import generate_private_key
from fleetpki.lint import lint_certificate
from fleetpki_testing import LINT_PKIX_CERT, Openssl


def _pkilint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_PKIX_CERT, "lint", "-s", "WARNING", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hierarchy(ca_key: str, device_key: str) -> dict[str, x509.Certificate]:
    root, _ = CertificateAuthority.create_root("root", common_name="Lint Root", key_type=ca_key)
    intermediate, _ = root.create_intermediate("factory", common_name="Lint Factory")
    request = check_csr(create_csr(generate_private_key(device_key), "acme", "dev-1"), "acme")
    return {
        "root": root.certificate,
        "intermediate": intermediate.certificate,
        "device": intermediate.issue(request),
    }


@pytest.mark.parametrize(
    ("ca_key", "device_key"),
    [("p256", "p256"), ("p384", "p384"), ("rsa2048", "rsa2048"), ("rsa3072", "p256")],
)
def test_pkilint_finds_nothing(tmp_path: Path, ca_key: str, device_key: str) -> None:
    for profile, cert in _hierarchy(ca_key, device_key).items():
        path = tmp_path / f"{profile}.crt.der"
        path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
        result = _pkilint(path)
        # exit code = number of findings at WARNING or above
        assert result.returncode == 0, f"{profile} ({ca_key}): {result.stdout}"
        assert lint_certificate(cert.public_bytes(serialization.Encoding.DER)) == []


def test_linter_sees_the_seed_recipe_v1_certificate(tmp_path: Path, openssl: Openssl) -> None:
    # The control: the seed's plain openssl device certificate does have findings, so a zero
    # above is a real result, not a linter that says nothing.
    run = openssl
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", tmp_path / "ca.key")
    run(
        "req", "-x509", "-new", "-nodes", "-key", tmp_path / "ca.key", "-sha256",
        "-subj", "/CN=Root CA", "-days", "30", "-out", tmp_path / "ca.crt",
    )  # fmt: skip
    run("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", tmp_path / "d.key")
    run(
        "req",
        "-new",
        "-key",
        tmp_path / "d.key",
        "-subj",
        "/O=acme/CN=d1",
        "-out",
        tmp_path / "d.csr",
    )
    run(
        "x509", "-req", "-in", tmp_path / "d.csr", "-CA", tmp_path / "ca.crt",
        "-CAkey", tmp_path / "ca.key", "-CAcreateserial", "-days", "30", "-sha256",
        "-out", tmp_path / "d.crt",
    )  # fmt: skip
    result = _pkilint(tmp_path / "d.crt")
    assert result.returncode >= 2
    assert "certificate_version_is_not_v3" in result.stdout
    codes = {f.code for f in lint_certificate(_der(tmp_path / "d.crt"))}
    assert "pkix.certificate_version_is_not_v3" in codes


def _der(path: Path) -> bytes:
    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def test_lint_library_refuses_garbage() -> None:
    with pytest.raises(InputError, match="pkilint cannot decode"):
        lint_certificate(b"\x30\x03\x02\x01\x00")


def test_crls_lint_clean(tmp_path: Path) -> None:
    import datetime as dt

    lint_crl = str(Path(LINT_PKIX_CERT).with_name("lint_crl"))
    root, _ = CertificateAuthority.create_root("root", common_name="Lint Root")
    intermediate, _ = root.create_intermediate("factory")
    device = intermediate.issue(
        check_csr(create_csr(generate_private_key(), "acme", "dev-1"), "acme")
    )
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    lists = {
        "CRL": intermediate.sign_crl([(device.serial_number, now, "keyCompromise")], crl_number=7),
        "ARL": root.sign_crl([], crl_number=1),  # a root's list of revoked CAs
    }
    for crl_type, crl in lists.items():
        path = tmp_path / f"{crl_type}.crl.der"
        path.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        result = subprocess.run(
            [lint_crl, "lint", "-t", crl_type, "-p", "PKIX", "-s", "WARNING", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, f"{crl_type}: {result.stdout}"
