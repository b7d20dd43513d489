"""`fleetpki convert` is byte-identical to openssl's -outform DER, and back to PEM."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetpki_testing import Hierarchy, Openssl, RunCli

NO_PASSPHRASE = {"passphrase": None}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, hierarchy: Hierarchy) -> dict[str, Path]:
    """A key, CSR and certificate made by openssl (signed by the hierarchy's CA)."""
    from fleetpki.formats import certificate_bytes, load_csr
    from fleetpki_testing import run_openssl as openssl

    where = tmp_path_factory.mktemp("convert")
    key, csr, cert = where / "k.pem", where / "r.pem", where / "c.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    openssl("req", "-new", "-key", key, "-subj", "/O=acme/CN=conv-1", "-out", csr)
    issued = hierarchy.home.sign(
        hierarchy.intermediate, load_csr(csr.read_bytes()), project_slug="acme"
    )
    cert.write_bytes(certificate_bytes(issued))
    return {"x509": cert, "ec": key, "req": csr}


@pytest.mark.parametrize("kind", ["x509", "ec", "req"])
def test_der_identical_to_openssl_and_back(
    kind: str, inputs: dict[str, Path], tmp_path: Path, run_cli: RunCli, openssl: Openssl
) -> None:
    source = inputs[kind]
    ours, theirs = tmp_path / "ours.der", tmp_path / "theirs.der"
    rc, _, err = run_cli("convert", source, "--to", "der", "--out", ours, **NO_PASSPHRASE)
    assert rc == 0, err
    openssl(kind, "-in", source, "-outform", "DER", "-out", theirs)
    assert ours.read_bytes() == theirs.read_bytes()
    back = tmp_path / "back.pem"
    rc, _, err = run_cli("convert", ours, "--to", "pem", "--out", back, **NO_PASSPHRASE)
    assert rc == 0, err
    assert back.read_bytes() == source.read_bytes()
    pem_by_openssl = openssl(kind, "-inform", "DER", "-in", theirs).stdout
    assert back.read_text() == pem_by_openssl
    if kind == "ec":
        assert back.stat().st_mode & 0o077 == 0  # a private key stays private


def test_convert_to_stdout_and_pem_to_pem(inputs: dict[str, Path], run_cli: RunCli) -> None:
    rc, out, _ = run_cli("convert", inputs["x509"], "--to", "pem", **NO_PASSPHRASE)
    assert rc == 0 and out == inputs["x509"].read_text()


def test_pkcs12_export_opens_with_openssl(
    hierarchy: Hierarchy, tmp_path: Path, run_cli: RunCli, openssl: Openssl
) -> None:
    rc, _, err = run_cli(
        "device", "issue", "--ca", "factory", "--project", "acme", "--id", "p12-dev",
        "--out-dir", tmp_path / "kit", home=hierarchy.path,
    )  # fmt: skip
    assert rc == 0, err
    kit = tmp_path / "kit"
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes((kit / "device.crt.pem").read_bytes() + hierarchy.chain_file.read_bytes())
    p12 = tmp_path / "device.p12"
    rc, _, err = run_cli(
        "convert", bundle, "--to", "p12", "--key", kit / "device.key.der", "--out", p12,
        passphrase="p12-secret",
    )  # fmt: skip
    assert rc == 0, err
    assert p12.stat().st_mode & 0o077 == 0
    info = openssl("pkcs12", "-info", "-in", p12, "-passin", "pass:p12-secret", "-noenc")
    assert info.stdout.count("-----BEGIN CERTIFICATE-----") == 3
    assert "subject=O = acme, CN = p12-dev" in info.stdout
    assert "-----BEGIN PRIVATE KEY-----" in info.stdout
    assert "Iteration 600000" in info.stderr and "AES-256-CBC" in info.stderr
    wrong = openssl("pkcs12", "-info", "-in", p12, "-passin", "pass:nope", "-noenc", check=False)
    assert wrong.returncode != 0
    rc, _, err = run_cli(
        "convert", bundle, "--to", "p12", "--key", hierarchy.path / "cas/root/ca.key.pem",
        "--out", tmp_path / "x.p12", passphrase="p12-secret",
    )  # fmt: skip
    assert (
        rc == 1
        and err
        == f"error: {hierarchy.path / 'cas/root/ca.key.pem'} is not the key of the certificate\n"
    )
    assert not (tmp_path / "x.p12").exists()
