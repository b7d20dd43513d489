"""The seed's openssl recipe, exactly, meets `fleetpki sign` and `fleetpki ca import`."""

from __future__ import annotations

from pathlib import Path

from fleetpki_testing import Openssl, RunCli, inventory_rows, seed_device_csr, seed_root


def _seed_device(openssl: Openssl, where: Path, project: str, certificate_id: str) -> Path:
    """The seed recipe's device half: a P-256 key and a CSR, by openssl."""
    return seed_device_csr(where, project, certificate_id)[1]


def test_seed_csr_signed_by_fleetpki_verifies_with_openssl(
    tmp_path: Path, run_cli: RunCli, openssl: Openssl, pki_home: Path
) -> None:
    # CA keys encrypted (the default): the passphrase comes from $FLEETPKI_PASSPHRASE.
    assert run_cli("ca", "init", "--name", "root", "--cn", "Acme Root CA")[0] == 0
    assert run_cli("ca", "intermediate", "--name", "factory", "--parent", "root")[0] == 0
    csr = _seed_device(openssl, tmp_path, "acme-prod", "dev-0001")
    cert = tmp_path / "device.crt.pem"
    rc, out, err = run_cli("sign", csr, "--ca", "factory", "--project", "acme-prod", "--out", cert)
    assert (rc, err) == (0, ""), err
    assert "serial" in out
    chain = tmp_path / "chain.pem"
    assert run_cli("ca", "export", "factory", "--chain", "--out", chain)[0] == 0
    assert openssl("verify", "-CAfile", chain, cert).stdout.strip() == f"{cert}: OK"
    subject = openssl("x509", "-noout", "-subject", "-in", cert).stdout.strip()
    assert subject == "subject=O = acme-prod, CN = dev-0001"
    # Strict: only the root is trusted, the intermediate travels with the leaf (sign --chain).
    root = tmp_path / "root.pem"
    assert run_cli("ca", "export", "root", "--out", root)[0] == 0
    bundle = tmp_path / "device.chain.pem"
    rc, _, err = run_cli(
        "sign", csr, "--ca", "factory", "--project", "acme-prod", "--id", "dev-0001",
        "--renew", "--chain", "--out", bundle,
    )  # fmt: skip
    assert rc == 0, err
    openssl("verify", "-CAfile", root, "-untrusted", bundle, bundle)
    openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", chain, bundle)
    assert inventory_rows(pki_home) == 4  # root, intermediate, two device certificates


def test_seed_root_imported_and_signing(
    tmp_path: Path, run_cli: RunCli, openssl: Openssl, pki_home: Path
) -> None:
    ca_key, ca_cert = seed_root(tmp_path)
    rc, out, err = run_cli(
        "ca", "import", "--name", "seed-root", "--cert", ca_cert, "--key", ca_key,
        "--no-passphrase",
    )  # fmt: skip
    assert rc == 0, err
    assert "imported CA 'seed-root': CN=Root CA" in out
    csr = _seed_device(openssl, tmp_path, "acme", "sensor-7")
    cert = tmp_path / "device.crt.pem"
    rc, _, err = run_cli("sign", csr, "--ca", "seed-root", "--project", "acme", "--out", cert)
    assert rc == 0, err
    openssl("verify", "-CAfile", ca_cert, cert)
    subject = openssl("x509", "-noout", "-subject", "-in", cert).stdout.strip()
    assert subject == "subject=O = acme, CN = sensor-7"
    assert inventory_rows(pki_home) == 2  # the imported root and the device certificate


def test_seed_root_imported_from_der_with_encrypted_key(
    tmp_path: Path, run_cli: RunCli, openssl: Openssl
) -> None:
    # DER where PEM is usual, and an openssl-encrypted key: both just work.
    ca_key, ca_cert = tmp_path / "ca.key.der", tmp_path / "ca.crt.der"
    openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-aes-256-cbc", "-pass", "pass:old-secret", "-outform", "DER", "-out", ca_key,
    )  # fmt: skip
    openssl(
        "req", "-x509", "-new", "-key", ca_key, "-passin", "pass:old-secret", "-sha256",
        "-subj", "/CN=Root CA", "-days", "30", "-outform", "DER", "-out", ca_cert,
    )  # fmt: skip
    old_pass = tmp_path / "old.txt"
    old_pass.write_text("old-secret\n")
    rc, _, err = run_cli(
        "ca", "import", "--name", "seed", "--cert", ca_cert, "--key", ca_key,
        "--key-passphrase-file", old_pass,
    )  # fmt: skip
    assert rc == 0, err
    rc, _, err = run_cli("ca", "intermediate", "--name", "line-1", "--parent", "seed")
    assert rc == 0, err
    csr = _seed_device(openssl, tmp_path, "acme", "dev-9")
    cert = tmp_path / "device.crt.der"
    rc, _, err = run_cli(
        "sign", csr, "--ca", "line-1", "--project", "acme", "--der", "--out", cert
    )  # fmt: skip
    assert rc == 0, err
    chain = tmp_path / "chain.pem"
    assert run_cli("ca", "export", "line-1", "--chain", "--out", chain)[0] == 0
    pem = tmp_path / "device.crt.pem"
    openssl("x509", "-inform", "DER", "-in", cert, "-out", pem)
    openssl("verify", "-CAfile", chain, pem)
