"""Keys, CSRs and certificates made by the fleetpki CLI are accepted by openssl."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleetpki_testing import TEST_PASSPHRASE, Hierarchy, Openssl, RunCli


@pytest.mark.parametrize(
    ("key_type", "der", "check"),
    [
        ("p256", False, "ec"),
        ("p256", True, "ec"),
        ("p384", False, "ec"),
        ("rsa2048", True, "rsa"),
    ],
)
def test_generated_keys_and_csrs_pass_openssl(
    key_type: str, der: bool, check: str, tmp_path: Path, run_cli: RunCli, openssl: Openssl
) -> None:
    key = tmp_path / ("device.key.der" if der else "device.key.pem")
    extra = ["--der"] if der else []
    rc, _, err = run_cli("key", "generate", key, "--key-type", key_type, *extra)
    assert rc == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    form = ["-inform", "DER"] if der else []
    result = openssl(check, "-check", "-noout", "-in", key, *form)
    assert ("EC Key valid." if check == "ec" else "RSA key ok") in (result.stdout + result.stderr)
    csr = tmp_path / "device.csr"
    rc, _, err = run_cli(
        "csr", "create", "--key", key, "--project", "acme", "--id", "dev-1", "--out", csr, *extra
    )
    assert rc == 0, err
    verified = openssl("req", "-verify", "-noout", "-in", csr, *form)
    assert "verify OK" in verified.stdout + verified.stderr
    subject = openssl("req", "-noout", "-subject", "-in", csr, *form).stdout.strip()
    assert subject == "subject=O = acme, CN = dev-1"


def test_issued_certificates_pass_openssl_verify(
    hierarchy: Hierarchy, tmp_path: Path, run_cli: RunCli, openssl: Openssl
) -> None:
    key, csr, cert = tmp_path / "k.pem", tmp_path / "r.pem", tmp_path / "c.pem"
    assert run_cli("key", "generate", key)[0] == 0
    assert run_cli("csr", "create", "--key", key, "--project", "acme", "--id", "ossl-1",
                   "--out", csr)[0] == 0  # fmt: skip
    rc, _, err = run_cli(
        "sign", csr, "--ca", "factory", "--project", "acme", "--out", cert, home=hierarchy.path
    )
    assert rc == 0, err
    openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", hierarchy.chain_file,
            cert)  # fmt: skip
    for ca in ("root", "factory"):
        openssl("verify", "-x509_strict", "-CAfile", hierarchy.chain_file,
                hierarchy.path / "cas" / ca / "ca.crt.pem")  # fmt: skip
    # the key in the certificate is the device's own
    pub_cert = openssl("x509", "-noout", "-pubkey", "-in", cert).stdout
    pub_key = openssl("pkey", "-pubout", "-in", key).stdout
    assert pub_cert == pub_key


def test_encrypted_ca_key_opens_with_openssl(
    tmp_path: Path, run_cli: RunCli, openssl: Openssl, pki_home: Path
) -> None:
    passphrase_file = tmp_path / "pw.txt"
    passphrase_file.write_text("file-passphrase\n")
    rc, _, err = run_cli(
        "ca", "init", "--name", "root", "--key-type", "p384",
        "--passphrase-file", passphrase_file, passphrase=None,
    )  # fmt: skip
    assert rc == 0, err
    key = pki_home / "cas" / "root" / "ca.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    openssl("ec", "-check", "-noout", "-in", key, "-passin", "pass:file-passphrase")
    wrong = openssl("pkey", "-noout", "-in", key, "-passin", f"pass:{TEST_PASSPHRASE}", check=False)
    assert wrong.returncode != 0
    pub_key = openssl("pkey", "-pubout", "-in", key, "-passin", "pass:file-passphrase").stdout
    pub_cert = openssl("x509", "-noout", "-pubkey", "-in", key.with_name("ca.crt.pem")).stdout
    assert pub_key == pub_cert
    # an encrypted device key (key generate --encrypt) opens the same way
    device_key = tmp_path / "d.key.pem"
    rc, _, err = run_cli("key", "generate", device_key, "--encrypt")
    assert rc == 0, err
    openssl("ec", "-check", "-noout", "-in", device_key, "-passin", f"pass:{TEST_PASSPHRASE}")


def test_no_passphrase_must_be_explicit(tmp_path: Path, run_cli: RunCli, pki_home: Path) -> None:
    rc, _, err = run_cli("ca", "init", "--name", "root", passphrase=None)
    assert rc == 1
    assert err.startswith("error: a passphrase is needed") and err.count("\n") == 1
    assert not (pki_home / "cas" / "root").exists()
    rc, _, err = run_cli("ca", "init", "--name", "root", "--no-passphrase", passphrase=None)
    assert rc == 0, err
    key = (pki_home / "cas" / "root" / "ca.key.pem").read_text()
    assert key.startswith("-----BEGIN PRIVATE KEY-----")
