"""PEM/DER detection and conversion, PKCS#12 export, inspect."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from fleetpki import formats
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import create_csr
from fleetpki.der import pem_armor
from fleetpki.errors import InputError
from fleetpki.keys import generate_private_key, serialize_private_key
from fleetpki_testing import Openssl

DER, PEM = serialization.Encoding.DER, serialization.Encoding.PEM


@pytest.fixture(scope="module")
def objects() -> dict[str, bytes]:
    """DER of one of each kind, keyed by its PEM label."""
    root, _ = CertificateAuthority.create_root("root")
    key = generate_private_key()
    csr = create_csr(key, "acme", "d1")
    return {
        "CERTIFICATE": root.certificate.public_bytes(DER),
        "CERTIFICATE REQUEST": csr.public_bytes(DER),
        "X509 CRL": root.sign_crl([], crl_number=1).public_bytes(DER),
        "PRIVATE KEY": serialize_private_key(key, None, der=True),
        "EC PRIVATE KEY": key.private_bytes(
            DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
        "RSA PRIVATE KEY": generate_private_key("rsa2048").private_bytes(
            DER, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
        "ENCRYPTED PRIVATE KEY": serialize_private_key(key, b"pw", der=True, iterations=1000),
        "PUBLIC KEY": key.public_key().public_bytes(
            DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }


@pytest.mark.parametrize(
    "label",
    [
        "CERTIFICATE",
        "CERTIFICATE REQUEST",
        "X509 CRL",
        "PRIVATE KEY",
        "EC PRIVATE KEY",
        "RSA PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
        "PUBLIC KEY",
    ],
)
def test_detect_and_convert_round_trip(objects: dict[str, bytes], label: str) -> None:
    der = objects[label]
    assert formats.identify_der(der).label == label
    pem = formats.convert(der, "pem")
    assert pem.startswith(f"-----BEGIN {label}-----\n".encode())
    assert all(len(line) <= 64 for line in pem.splitlines())
    assert formats.convert(pem, "der") == der
    assert formats.convert(pem, "pem") == pem
    assert [b.label for b in formats.read_blocks(pem)] == [label]


def test_loaders_accept_pem_and_der(objects: dict[str, bytes]) -> None:
    for data in (objects["CERTIFICATE"], formats.convert(objects["CERTIFICATE"], "pem")):
        assert isinstance(formats.load_certificate(data), x509.Certificate)
    for data in (
        objects["CERTIFICATE REQUEST"],
        formats.convert(objects["CERTIFICATE REQUEST"], "pem"),
    ):
        assert formats.load_csr(data).is_signature_valid
    for data in (objects["X509 CRL"], formats.convert(objects["X509 CRL"], "pem")):
        assert len(formats.load_crl(data)) == 0


def test_bundles(objects: dict[str, bytes]) -> None:
    cert_pem = formats.convert(objects["CERTIFICATE"], "pem")
    bundle = b"subject=whatever openssl prints\n" + cert_pem + b"\n" + cert_pem
    assert len(formats.load_certificates(bundle)) == 2
    with pytest.raises(InputError, match="DER holds one"):
        formats.convert(bundle, "der")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"hello world, not a certificate", "not a certificate, CSR, CRL or key"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB", "truncated"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "bad base64"),
        (b"-----BEGIN PKCS7-----\nAAAA\n-----END PKCS7-----\n", "unsupported PEM block"),
        (b"\x30" + b"\x00" * 40, "not a certificate"),
        (b"x" * ((1 << 20) + 1), "too large"),
    ],
)
def test_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        formats.read_blocks(data)
    assert "\n" not in str(info.value)


def test_wrong_kind(objects: dict[str, bytes]) -> None:
    with pytest.raises(InputError, match="expected a csr, found certificate"):
        formats.load_csr(objects["CERTIFICATE"])
    with pytest.raises(InputError, match="expected a certificate, found csr"):
        formats.load_certificate(objects["CERTIFICATE REQUEST"])
    with pytest.raises(InputError, match="unknown format"):
        formats.convert(objects["CERTIFICATE"], "p7b")


def test_corrupt_der_inside_pem() -> None:
    pem = pem_armor("CERTIFICATE", b"\x30\x03\x02\x01\x00")
    with pytest.raises(InputError, match="malformed certificate"):
        formats.load_certificate(pem)


def test_pkcs12_export(tmp_path: Path, openssl: Openssl) -> None:
    root, _ = CertificateAuthority.create_root("root")
    key = generate_private_key()
    cert = root.sign_csr(create_csr(key, "acme", "d1"), "acme")
    blob = formats.export_pkcs12("d1", key, cert, [root.certificate], b"p12pass", kdf_rounds=2048)
    loaded = pkcs12.load_pkcs12(blob, b"p12pass")
    assert loaded.cert is not None and loaded.cert.certificate == cert
    assert loaded.key is not None and loaded.key.public_key() == key.public_key()
    assert [c.certificate for c in loaded.additional_certs] == [root.certificate]
    path = tmp_path / "d1.p12"
    path.write_bytes(blob)
    info = openssl("pkcs12", "-info", "-in", path, "-passin", "pass:p12pass", "-noenc")
    assert "subject=O = acme, CN = d1" in info.stdout
    assert "PBES2" in info.stderr and "AES-256-CBC" in info.stderr
    bad = openssl("pkcs12", "-info", "-in", path, "-passin", "pass:nope", "-noenc", check=False)
    assert bad.returncode != 0
    with pytest.raises(InputError, match="needs a passphrase"):
        formats.export_pkcs12("d1", key, cert, [], b"")


def test_describe_everything(objects: dict[str, bytes]) -> None:
    cert = formats.describe(objects["CERTIFICATE"])[0]
    assert cert["type"] == "certificate" and cert["version"] == "v3"
    assert cert["extensions"]["basicConstraints"] == {
        "critical": True,
        "value": {"ca": True, "pathLength": None},
    }
    assert cert["extensions"]["keyUsage"]["value"] == ["key_cert_sign", "crl_sign"]
    assert len(cert["sha256Fingerprint"]) == 64 and cert["selfSigned"] is True
    csr = formats.describe(objects["CERTIFICATE REQUEST"])[0]
    assert csr == {
        "type": "csr",
        "subject": "CN=d1,O=acme",
        "publicKey": "EC P-256",
        "signatureValid": True,
        "signatureAlgorithm": "ecdsa-with-SHA256",
    }
    crl = formats.describe(objects["X509 CRL"])[0]
    assert crl["type"] == "crl" and crl["revoked"] == []
    enc = formats.describe(objects["ENCRYPTED PRIVATE KEY"])[0]
    assert enc["encrypted"] is True and "publicKey" not in enc
    plain = formats.describe(objects["RSA PRIVATE KEY"])[0]
    assert plain == {
        "type": "private key",
        "encrypted": False,
        "format": "RSA PRIVATE KEY",
        "publicKey": "RSA 2048",
    }
    assert formats.describe(objects["PUBLIC KEY"])[0]["publicKey"] == "EC P-256"
