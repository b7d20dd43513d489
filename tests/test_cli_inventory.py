"""CLI around the inventory and CA files: device issue, list, inspect, ca export/list/show,
verify, revoke and CRLs (checked with openssl)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki_testing import Hierarchy, Openssl, RunCli, make_hierarchy


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Hierarchy:
    return make_hierarchy(tmp_path_factory.mktemp("cli-inventory"))


@pytest.fixture
def cli(pki: Hierarchy, run_cli: RunCli) -> RunCli:
    """run_cli bound to the module's home (CA keys unencrypted: no passphrase needed)."""

    def run(*args: object, **kwargs: object) -> tuple[int, str, str]:
        kwargs.setdefault("home", pki.path)
        kwargs.setdefault("passphrase", None)
        return run_cli(*args, **kwargs)

    return run


def _issue(cli: RunCli, out_dir: Path, certificate_id: str, *extra: str) -> dict[str, object]:
    rc, out, err = cli(
        "device", "issue", "--ca", "factory", "--project", "acme", "--id", certificate_id,
        "--out-dir", out_dir, "--json", *extra,
    )  # fmt: skip
    assert rc == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_device_issue_kit(cli: RunCli, pki: Hierarchy, tmp_path: Path, openssl: Openssl) -> None:
    kit = tmp_path / "kit"
    result = _issue(cli, kit, "kit-1")
    assert sorted(result["files"]) == sorted(p.name for p in kit.iterdir())  # type: ignore[arg-type]
    for private in ("device.key.pem", "device.key.der"):
        assert stat.S_IMODE((kit / private).stat().st_mode) == 0o600
    openssl("verify", "-CAfile", kit / "ca-chain.pem", kit / "device.crt.pem")
    openssl("ec", "-check", "-noout", "-in", kit / "device.key.der", "-inform", "DER")
    openssl("x509", "-in", kit / "device.crt.pem", "-outform", "DER", "-out", tmp_path / "o.der")
    assert (kit / "device.crt.der").read_bytes() == (tmp_path / "o.der").read_bytes()
    cert = x509.load_der_x509_certificate((kit / "device.crt.der").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=kit-1,O=acme"
    assert f"{cert.serial_number:x}" == result["serialNumber"]
    key = serialization.load_pem_private_key((kit / "device.key.pem").read_bytes(), None)
    assert key.public_key() == cert.public_key()
    # renewing replaces the active certificate; the old row is kept as superseded
    renewed = _issue(cli, kit, "kit-1", "--renew", "--force")
    rows = pki.home.inventory.find(project="acme", certificate_id="kit-1")
    assert {r["serial"]: r["status"] for r in rows} == {
        result["serialNumber"]: "superseded",
        renewed["serialNumber"]: "active",
    }


def test_list_filters_and_json(cli: RunCli, tmp_path: Path) -> None:
    _issue(cli, tmp_path / "a", "list-short", "--days", "10")
    rc, out, err = cli(
        "device", "issue", "--ca", "factory", "--project", "other", "--id", "list-long",
        "--out-dir", tmp_path / "b",
    )  # fmt: skip
    assert rc == 0, err
    rc, out, _ = cli("list", "--json")
    listing = json.loads(out)
    assert listing["total"] == len(listing["list"]) >= 4
    kinds = {r["kind"] for r in listing["list"]}
    assert kinds == {"root", "intermediate", "device"}
    assert all("der" not in r for r in listing["list"])
    rc, out, _ = cli("list", "--project", "other", "--json")
    assert [r["certificate_id"] for r in json.loads(out)["list"]] == ["list-long"]
    rc, out, _ = cli("list", "--expiring-within", "30", "--json")
    expiring = [r["certificate_id"] for r in json.loads(out)["list"]]
    assert "list-short" in expiring and "list-long" not in expiring
    row = next(r for r in json.loads(out)["list"] if r["certificate_id"] == "list-short")
    assert row["not_after"].endswith("Z") and row["status"] == "active"
    rc, out, _ = cli("list", "--project", "nobody")
    assert rc == 0 and out.strip() == "no certificates match"
    rc, out, _ = cli("list", "--project", "other")
    assert rc == 0 and "list-long" in out and "1 certificate(s)" in out
    rc, out, _ = cli("list")  # piped: the table is not cut to 80 columns
    assert "intermediate" in out and "certificate ID" in out


def test_inspect_json(cli: RunCli, pki: Hierarchy, tmp_path: Path) -> None:
    result = _issue(cli, tmp_path / "k", "inspect-1")
    rc, out, err = cli("inspect", tmp_path / "k" / "device.crt.der", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["subject"] == "CN=inspect-1,O=acme"
    assert info["issuer"] == "CN=factory"
    assert info["serialNumber"] == result["serialNumber"]
    assert info["publicKey"] == "EC P-256"
    assert info["extensions"]["basicConstraints"]["critical"] is True
    assert info["extensions"]["extendedKeyUsage"]["value"] == ["clientAuth"]
    rc, out, _ = cli("inspect", tmp_path / "k" / "ca-chain.pem", "--json")
    assert [c["subject"] for c in json.loads(out)] == ["CN=factory", "CN=Test Root CA"]
    rc, out, _ = cli("inspect", tmp_path / "k" / "device.key.pem", "--json")
    assert json.loads(out) == {
        "type": "private key",
        "encrypted": False,
        "format": "PRIVATE KEY",
        "publicKey": "EC P-256",
    }
    rc, out, _ = cli("inspect", tmp_path / "k" / "device.csr.pem")
    assert rc == 0 and "signatureValid: True" in out


def test_ca_list_show_export(cli: RunCli, pki: Hierarchy, tmp_path: Path, openssl: Openssl) -> None:
    rc, out, _ = cli("ca", "list", "--json")
    cas = {c["name"]: c for c in json.loads(out)}
    assert cas["factory"]["parent"] == "root" and cas["factory"]["kind"] == "intermediate"
    assert cas["root"]["keyEncrypted"] is False
    rc, out, _ = cli("ca", "show", "factory", "--json")
    assert json.loads(out)["certificate"]["extensions"]["basicConstraints"]["value"] == {
        "ca": True,
        "pathLength": 0,
    }
    rc, out, _ = cli("ca", "export", "factory")
    assert out.encode() == pki.intermediate.certificate.public_bytes(serialization.Encoding.PEM)
    der = tmp_path / "factory.der"
    assert cli("ca", "export", "factory", "--der", "--out", der)[0] == 0
    assert der.read_bytes() == pki.intermediate.certificate.public_bytes(serialization.Encoding.DER)
    chain = tmp_path / "chain.pem"
    assert cli("ca", "export", "factory", "--chain", "--out", chain)[0] == 0
    assert chain.read_bytes() == pki.chain_file.read_bytes()
    openssl("verify", "-CAfile", chain, chain)  # the intermediate verifies under the root
    rc, _, err = cli("ca", "export", "factory", "--chain", "--der", "--out", tmp_path / "x")
    assert rc == 1 and "DER holds one" in err


def test_verify_cli(cli: RunCli, pki: Hierarchy, tmp_path: Path) -> None:
    _issue(cli, tmp_path / "v", "verify-1")
    cert = tmp_path / "v" / "device.crt.pem"
    rc, out, err = cli("verify", cert, "--ca-file", pki.chain_file, "--project", "acme")
    assert rc == 0, err
    assert out.strip() == "OK: CN=Test Root CA <- CN=factory <- CN=verify-1,O=acme"
    rc, out, err = cli("verify", cert, "--ca-file", pki.chain_file, "--project", "other")
    assert rc == 1 and err == "error: leaf O='acme' is not project 'other'\n"
    rc, out, _ = cli("verify", cert, "--ca-file", pki.root_file, "--json")
    assert rc == 1 and json.loads(out)["valid"] is False
    other = make_hierarchy(tmp_path / "other")
    rc, _, err = cli("verify", cert, "--ca-file", other.chain_file)
    assert rc == 1 and err.startswith("error: ") and err.count("\n") == 1


def test_revoke_and_crl(cli: RunCli, pki: Hierarchy, tmp_path: Path, openssl: Openssl) -> None:
    _issue(cli, tmp_path / "r", "revoke-1")
    keep = _issue(cli, tmp_path / "k", "revoke-2")
    cert = tmp_path / "r" / "device.crt.pem"
    rc, out, err = cli(
        "revoke", "--project", "acme", "--id", "revoke-1", "--reason", "keyCompromise", "--json"
    )
    assert rc == 0, err
    revoked = json.loads(out)
    assert revoked["status"] == "revoked" and revoked["revocation_reason"] == "keyCompromise"
    rc, _, err = cli("revoke", "--serial", revoked["serial"].upper())
    assert rc == 1 and "already revoked" in err
    crl = tmp_path / "factory.crl.pem"
    rc, out, err = cli("crl", "--ca", "factory", "--out", crl, "--json")
    assert rc == 0, err
    assert json.loads(out)["entries"] == 1
    check = openssl("crl", "-in", crl, "-noout", "-verify", "-CAfile", pki.chain_file)
    assert "verify OK" in check.stdout + check.stderr
    text = openssl("crl", "-in", crl, "-noout", "-text").stdout
    assert revoked["serial"].upper() in text.replace(":", "").upper()
    assert "Key Compromise" in text
    # openssl refuses the revoked certificate and accepts the other one
    leaf_only = openssl(
        "verify", "-crl_check", "-CAfile", pki.chain_file, "-CRLfile", crl, cert, check=False
    )
    assert leaf_only.returncode != 0
    assert "certificate revoked" in leaf_only.stdout + leaf_only.stderr
    root_crl = tmp_path / "root.crl.der"
    assert cli("crl", "--ca", "root", "--der", "--out", root_crl)[0] == 0
    root_crl_pem = openssl("crl", "-inform", "DER", "-in", root_crl).stdout
    bundle = tmp_path / "crls.pem"
    bundle.write_text(crl.read_text() + root_crl_pem)
    refused = openssl(
        "verify", "-crl_check_all", "-CAfile", pki.chain_file, "-CRLfile", bundle, cert,
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "certificate revoked" in refused.stdout + refused.stderr
    openssl(
        "verify", "-crl_check_all", "-CAfile", pki.chain_file, "-CRLfile", bundle,
        tmp_path / "k" / "device.crt.pem",
    )  # fmt: skip
    # fleetpki verify --crl agrees, with PEM or DER CRLs
    rc, _, err = cli("verify", cert, "--ca-file", pki.chain_file, "--crl", crl, "--crl", root_crl)
    assert rc == 1 and "is revoked" in err
    rc, _, err = cli(
        "verify", tmp_path / "k" / "device.crt.pem", "--ca-file", pki.chain_file, "--crl", crl
    )
    assert rc == 0, err
    # CRL numbers increase
    second = tmp_path / "again.crl.pem"
    assert cli("crl", "--ca", "factory", "--out", second)[0] == 0
    numbers = [
        x509.load_pem_x509_crl(p.read_bytes())
        .extensions.get_extension_for_class(x509.CRLNumber)
        .value.crl_number
        for p in (crl, second)
    ]
    assert numbers[1] == numbers[0] + 1
    # a revoked ID can be issued again without --renew
    _issue(cli, tmp_path / "r2", "revoke-1")
    assert keep["serialNumber"] != revoked["serial"]


def test_json_outputs_of_key_csr_sign(cli: RunCli, pki: Hierarchy, tmp_path: Path) -> None:
    key, csr, cert = tmp_path / "k.der", tmp_path / "r.pem", tmp_path / "c.pem"
    rc, out, err = cli("key", "generate", key, "--key-type", "p384", "--der", "--json")
    assert rc == 0, err
    assert json.loads(out) == {
        "path": str(key),
        "keyType": "p384",
        "encrypted": False,
        "format": "der",
    }
    rc, out, err = cli(
        "csr", "create", "--key", key, "--project", "acme", "--id", "json-1", "--out", csr, "--json"
    )
    assert rc == 0, err
    assert json.loads(out) == {"path": str(csr), "subject": "CN=json-1,O=acme"}
    rc, out, err = cli(
        "sign", csr, "--ca", "factory", "--project", "acme", "--out", cert, "--json", "--days", "30"
    )
    assert rc == 0, err
    summary = json.loads(out)
    issued = x509.load_pem_x509_certificate(cert.read_bytes())
    assert summary["serialNumber"] == f"{issued.serial_number:x}"
    assert summary["issuer"] == "factory" and summary["subject"] == "CN=json-1,O=acme"
    assert summary["notAfter"] == f"{issued.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    assert len(summary["sha256Fingerprint"]) == 64
    row = pki.home.inventory.find(serial=summary["serialNumber"])[0]
    assert row["fingerprint_sha256"] == summary["sha256Fingerprint"]
