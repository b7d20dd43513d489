"""The CA and the PKI home: create, import, name rules, file modes, CRLs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.ca import CertificateAuthority, ca_subject
from fleetpki.csr import create_csr
from fleetpki.errors import ConflictError, InputError, NotFoundError, PassphraseError, PolicyError
from fleetpki.home import Home, resolve_home, validate_ca_name
from fleetpki.keys import generate_private_key, serialize_private_key

PW = b"test-pass"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_encrypted_root_layout_and_modes(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    ca = home.init_root("root", common_name="Acme Root", passphrase=PW)
    folder = home.ca_dir("root")
    assert _mode(home.path) == 0o700
    assert _mode(folder / "ca.key.pem") == 0o600
    assert _mode(home.path / "inventory.sqlite3") == 0o600
    assert (folder / "ca.key.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    meta = json.loads((folder / "ca.json").read_text())
    assert meta["kind"] == "root" and meta["encrypted"] is True
    assert ca.certificate.subject == ca_subject("Acme Root")
    loaded = home.load_ca("root", PW)
    assert loaded.signer.public_key() == ca.certificate.public_key()
    with pytest.raises(PassphraseError):
        home.load_ca("root", b"wrong")
    assert [r["kind"] for r in home.inventory.list()] == ["root"]
    assert home.ca_names() == ["root"]
    assert not [p for p in home.cas_dir.iterdir() if p.name.startswith(".")]  # no temp folders


def test_intermediate_under_root_and_pathlen(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    home.init_root("root", passphrase=None)
    inter = home.create_intermediate(
        "factory", parent="root", parent_passphrase=None, passphrase=None, key_type="p384"
    )
    assert home.ca_info("factory").parent == "root"
    assert [c.subject for c in home.ca_chain("factory")] == [
        inter.certificate.subject,
        home.ca_info("root").certificate.subject,
    ]
    with pytest.raises(PolicyError, match="pathlen 0"):
        home.create_intermediate("sub", parent="factory", parent_passphrase=None, passphrase=None)
    with pytest.raises(ConflictError, match="already exists"):
        home.init_root("root", passphrase=None)
    with pytest.raises(NotFoundError, match="unknown CA 'nope'"):
        home.load_ca("nope", None)
    assert home.ca_names() == ["factory", "root"]


@pytest.mark.parametrize("name", ["", "-x", "a/b", "..", "a" * 65, "a b"])
def test_invalid_ca_names(name: str) -> None:
    with pytest.raises(InputError, match="invalid CA name"):
        validate_ca_name(name)


def test_resolve_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEETPKI_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "x") == tmp_path / "x"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("FLEETPKI_HOME")
    assert resolve_home(None) == Path.home() / ".fleetpki"


def test_import_openssl_style_root_and_intermediate(tmp_path: Path) -> None:
    # A v1-ish root made elsewhere: no extensions besides what openssl req -x509 adds
    source, source_key = CertificateAuthority.create_root("elsewhere", common_name="Root CA")
    inter, inter_key = source.create_intermediate("inter", common_name="Inter CA")
    home = Home(tmp_path / "h")
    pem = serialization.Encoding.PEM
    home.import_ca(
        "seed-root",
        cert_data=source.certificate.public_bytes(serialization.Encoding.DER),
        key_data=serialize_private_key(source_key, b"old", der=True, iterations=1000),
        key_passphrase=b"old",
        passphrase=PW,
    )
    adopted = home.import_ca(
        "seed-inter",
        cert_data=inter.certificate.public_bytes(pem),
        key_data=serialize_private_key(inter_key, None),
        key_passphrase=None,
        passphrase=None,
    )
    assert home.ca_info("seed-inter").parent == "seed-root"  # issuer found by signature
    assert home.ca_info("seed-inter").imported
    assert adopted.chain == (source.certificate,)
    cert = adopted.sign_csr(create_csr(generate_private_key(), "acme", "d1"), "acme")
    cert.verify_directly_issued_by(inter.certificate)


def test_import_refusals(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    root, root_key = CertificateAuthority.create_root("r")
    device = root.sign_csr(create_csr(generate_private_key(), "acme", "d1"), "acme")
    with pytest.raises(InputError, match="not a CA"):
        home.import_ca(
            "x",
            cert_data=device.public_bytes(serialization.Encoding.PEM),
            key_data=serialize_private_key(generate_private_key(), None),
            key_passphrase=None,
            passphrase=None,
        )
    with pytest.raises(InputError, match="does not belong"):
        home.import_ca(
            "x",
            cert_data=root.certificate.public_bytes(serialization.Encoding.PEM),
            key_data=serialize_private_key(generate_private_key(), None),
            key_passphrase=None,
            passphrase=None,
        )
    with pytest.raises(InputError):
        home.import_ca(
            "x", cert_data=b"garbage", key_data=b"garbage", key_passphrase=None, passphrase=None
        )
    assert home.ca_names() == []
    assert home.inventory.count() == 0
    del root_key


def test_crl_numbers_and_entries(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    ca = home.init_root("root", passphrase=None)
    cert = home.sign(ca, create_csr(generate_private_key(), "acme", "d1"), project_slug="acme")
    first = home.crl(ca)
    assert len(first) == 0
    home.inventory.revoke(f"{cert.serial_number:x}", "keyCompromise")
    second = home.crl(ca, next_update_days=7)
    assert second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 1
    entry = second.get_revoked_certificate_by_serial_number(cert.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert second.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert second.next_update_utc is not None
    assert (second.next_update_utc - second.last_update_utc).days == 7


def test_ca_common_name_rules() -> None:
    with pytest.raises(InputError):
        ca_subject("")
    with pytest.raises(InputError):
        ca_subject("x" * 65)
    with pytest.raises(InputError):
        ca_subject("bad\nname")


def test_expired_ca_cannot_issue_nor_be_imported(tmp_path: Path) -> None:
    import datetime as dt

    from cryptography.hazmat.primitives import hashes

    from fleetpki import profiles
    from fleetpki.keys import KeyFileSigner

    key = generate_private_key()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert = profiles.ROOT.builder(
        subject=ca_subject("Old"), public_key=key.public_key(), issuer=None, days=2, now=past
    ).sign(key, hashes.SHA256())
    old = CertificateAuthority("old", cert, KeyFileSigner(key))
    with pytest.raises(PolicyError, match="expired"):
        old.sign_csr(create_csr(generate_private_key(), "acme", "d1"), "acme")
    with pytest.raises(InputError, match="expired"):
        Home(tmp_path / "h").import_ca(
            "old",
            cert_data=cert.public_bytes(serialization.Encoding.PEM),
            key_data=serialize_private_key(key, None),
            key_passphrase=None,
            passphrase=None,
        )
    with pytest.raises(InputError, match="at least 1"):
        profiles.DEVICE.builder(
            subject=ca_subject("x"), public_key=key.public_key(), issuer=None, days=0
        )
