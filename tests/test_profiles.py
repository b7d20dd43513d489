"""The root, intermediate and device profiles carry exactly the extensions DESIGN.md lists."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.keys import generate_private_key


@pytest.fixture(scope="module")
def issued() -> dict[str, x509.Certificate]:
    root, _ = CertificateAuthority.create_root("root", common_name="Root CA")
    intermediate, _ = root.create_intermediate("factory")
    request = check_csr(create_csr(generate_private_key(), "acme", "dev-1"), "acme")
    return {
        "root": root.certificate,
        "intermediate": intermediate.certificate,
        "device": intermediate.issue(request),
    }


def _ext(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_oid(oid)


def _usages(usage: x509.KeyUsage) -> set[str]:
    names = ("digital_signature", "key_cert_sign", "crl_sign", "key_encipherment")
    names += ("content_commitment", "data_encipherment", "key_agreement")
    return {n for n in names if getattr(usage, n)}


def test_root_profile(issued: dict[str, x509.Certificate]) -> None:
    cert = issued["root"]
    assert cert.version is x509.Version.v3
    assert cert.subject == cert.issuer
    cert.verify_directly_issued_by(cert)
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca and bc.value.path_length is None  # type: ignore[attr-defined]
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    assert ku.critical and _usages(ku.value) == {"key_cert_sign", "crl_sign"}  # type: ignore[arg-type]
    _ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    oids = {e.oid for e in cert.extensions}
    assert oids == {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
    }


def test_intermediate_profile(issued: dict[str, x509.Certificate]) -> None:
    cert, root = issued["intermediate"], issued["root"]
    cert.verify_directly_issued_by(root)
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0  # type: ignore[attr-defined]
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    assert _usages(ku.value) == {"key_cert_sign", "crl_sign"}  # type: ignore[arg-type]
    aki = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    ski = _ext(root, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert aki.key_identifier == ski.digest  # type: ignore[attr-defined]
    assert cert.not_valid_after_utc <= root.not_valid_after_utc


def test_device_profile(issued: dict[str, x509.Certificate]) -> None:
    cert, issuer = issued["device"], issued["intermediate"]
    cert.verify_directly_issued_by(issuer)
    assert cert.subject.rfc4514_string() == "CN=dev-1,O=acme"
    bc = _ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and not bc.value.ca  # type: ignore[attr-defined]
    ku = _ext(cert, ExtensionOID.KEY_USAGE)
    assert ku.critical and _usages(ku.value) == {"digital_signature"}  # type: ignore[arg-type]
    eku = _ext(cert, ExtensionOID.EXTENDED_KEY_USAGE)
    assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # type: ignore[call-overload]
    aki = _ext(cert, ExtensionOID.AUTHORITY_KEY_IDENTIFIER).value
    ski = _ext(issuer, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert aki.key_identifier == ski.digest  # type: ignore[attr-defined]
    own_ski = _ext(cert, ExtensionOID.SUBJECT_KEY_IDENTIFIER).value
    assert own_ski == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]


def test_device_serial_and_validity(issued: dict[str, x509.Certificate]) -> None:
    cert = issued["device"]
    serial_der = cert.tbs_certificate_bytes  # serial is the 2nd TBS element: 02 14 <20 bytes>
    assert b"\x02\x14" + cert.serial_number.to_bytes(20, "big") in serial_der
    assert cert.serial_number > 0 and cert.serial_number.bit_length() >= 64
    now = dt.datetime.now(dt.UTC)
    backdate = now - cert.not_valid_before_utc
    assert dt.timedelta(minutes=4) < backdate < dt.timedelta(minutes=10)
    assert cert.not_valid_after_utc - now > dt.timedelta(days=3600)


def test_serials_are_random_20_octets() -> None:
    serials = {profiles.new_serial_number() for _ in range(2000)}
    assert len(serials) == 2000
    for serial in serials:
        assert 0 < serial and serial.bit_length() == 159  # top bit clear: positive in 20 octets


def test_not_after_clamped_to_issuer() -> None:
    root, _ = CertificateAuthority.create_root("short", days=10)
    request = check_csr(create_csr(generate_private_key(), "acme", "dev-1"), "acme")
    device = root.issue(request, days=365)
    assert device.not_valid_after_utc == root.certificate.not_valid_after_utc


@pytest.mark.parametrize("key_type", ["p384", "rsa2048"])
def test_signature_hash_follows_the_ca_key(key_type: str) -> None:
    root, _ = CertificateAuthority.create_root("r", key_type=key_type)
    expected = "sha384" if key_type == "p384" else "sha256"
    assert root.certificate.signature_hash_algorithm.name == expected  # type: ignore[union-attr]
