"""The fast path is the DEVICE profile: TBS bytes identical to profiles.DEVICE.builder output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.fastsign import DeviceTemplate, FastCertificate, device_csr_der, subject_text
from fleetpki.inventory import IssuedRecord
from fleetpki.keys import generate_private_key
from fleetpki.naming import device_subject
from fleetpki_testing import LINT_PKIX_CERT

IDS = ["a", "dev-000001", "A.b_c-d:e@f", "x" * 64, "0" * 63, "sensor:12@plant-3", "Z" * 40]


def _hierarchy(key_type: str) -> CertificateAuthority:
    root, _ = CertificateAuthority.create_root("root", key_type=key_type)
    intermediate, _ = root.create_intermediate("factory")
    return intermediate


@pytest.mark.parametrize("ca_key", ["p256", "p384", "rsa2048"])
@pytest.mark.parametrize("device_key", ["p256", "p384", "rsa2048"])
def test_tbs_is_byte_identical_to_the_profile_builder(ca_key: str, device_key: str) -> None:
    ca = _hierarchy(ca_key)
    now = profiles.utcnow()
    key = generate_private_key(device_key)
    for days in (None, 1, 365, 100_000):  # 100k days: clamped to the CA's notAfter
        template = DeviceTemplate(ca, days=days, now=now)
        for certificate_id in IDS:
            request = check_csr(create_csr(key, "acme-42", certificate_id), "acme-42")
            serial = profiles.new_serial_number()
            fast = template.issue(request, serial_number=serial)
            reference = ca.issue(request, days=days, serial_number=serial, now=now)
            cert = x509.load_der_x509_certificate(fast.der)
            assert cert.tbs_certificate_bytes == reference.tbs_certificate_bytes
            assert cert.signature_algorithm_oid == reference.signature_algorithm_oid
            cert.verify_directly_issued_by(ca.certificate)
            assert (fast.not_before, fast.not_after) == (
                reference.not_valid_before_utc,
                reference.not_valid_after_utc,
            )


def test_times_from_2050_use_generalized_time() -> None:
    root, _ = CertificateAuthority.create_root("long-lived", days=40_000)
    request = check_csr(create_csr(generate_private_key(), "acme", "d1"), "acme")
    now = profiles.utcnow()
    template = DeviceTemplate(root, days=365 * 30, now=now)
    fast = template.issue(request, serial_number=7)
    reference = root.issue(request, days=365 * 30, serial_number=7, now=now)
    assert fast.not_after.year >= 2050
    assert x509.load_der_x509_certificate(fast.der).tbs_certificate_bytes == (
        reference.tbs_certificate_bytes
    )


def test_fast_csr_matches_create_csr_and_verifies() -> None:
    for certificate_id in IDS:
        key = generate_private_key()
        fast = x509.load_der_x509_csr(device_csr_der(key, "acme", certificate_id))  # type: ignore[arg-type]
        reference = create_csr(key, "acme", certificate_id)
        assert fast.tbs_certrequest_bytes == reference.tbs_certrequest_bytes
        assert fast.is_signature_valid
        assert check_csr(fast, "acme").certificate_id == certificate_id


def test_subject_text_and_record_match_the_slow_path() -> None:
    ca = _hierarchy("p256")
    template = DeviceTemplate(ca, now=profiles.utcnow())
    for certificate_id in IDS:
        assert subject_text("acme", certificate_id) == (
            device_subject("acme", certificate_id).rfc4514_string()
        )
        request = check_csr(create_csr(generate_private_key(), "acme", certificate_id), "acme")
        fast = template.issue(request)
        cert = x509.load_der_x509_certificate(fast.der)
        again = FastCertificate.from_der(fast.der)
        assert again == fast
        record = IssuedRecord.from_certificate(cert, kind="device", issuer_ca="factory")
        assert record.fingerprint_sha256 == fast.fingerprint()
        assert record.serial == fast.serial_hex
        assert record.subject == subject_text("acme", certificate_id)


def test_pkilint_finds_nothing_in_fast_certificates(tmp_path: Path) -> None:
    for key_type in ("p256", "rsa2048"):
        ca = _hierarchy(key_type)
        template = DeviceTemplate(ca, now=profiles.utcnow())
        request = check_csr(create_csr(generate_private_key(), "acme", "lint-me"), "acme")
        path = tmp_path / f"{key_type}.crt.pem"
        cert = x509.load_der_x509_certificate(template.issue(request).der)
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        result = subprocess.run(
            [LINT_PKIX_CERT, "lint", "-s", "WARNING", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
