"""CSR creation and the signing policy: proof of possession, subject rules, no copied extensions."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import InputError, PolicyError
from fleetpki.keys import generate_private_key


def _csr(
    *attrs: tuple[x509.ObjectIdentifier, str], extensions: bool = False
) -> x509.CertificateSigningRequest:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])
    )
    if extensions:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), critical=False)
    return builder.sign(generate_private_key(), hashes.SHA256())


ORG, CN = NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME


def test_create_csr_subject_and_signature() -> None:
    key = generate_private_key("p384")
    csr = create_csr(key, "acme", "dev-1")
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=dev-1,O=acme"
    assert csr.signature_hash_algorithm.name == "sha384"  # type: ignore[union-attr]
    assert csr.public_key() == key.public_key()


def test_create_csr_validates_names() -> None:
    with pytest.raises(InputError):
        create_csr(generate_private_key(), "Acme", "dev-1")
    with pytest.raises(InputError):
        create_csr(generate_private_key(), "acme", "dev/1")


def test_check_takes_id_from_cn_or_option() -> None:
    csr = _csr((ORG, "acme"), (CN, "dev-1"))
    assert check_csr(csr, "acme").certificate_id == "dev-1"
    assert check_csr(csr, "acme", "dev-1").certificate_id == "dev-1"
    no_cn = _csr((ORG, "acme"))
    assert check_csr(no_cn, "acme", "dev-2").certificate_id == "dev-2"
    no_subject = _csr()
    assert check_csr(no_subject, "acme", "dev-3").project_slug == "acme"


def test_check_refusals() -> None:
    with pytest.raises(PolicyError, match="differs from the CSR's CN"):
        check_csr(_csr((ORG, "acme"), (CN, "dev-1")), "acme", "dev-2")
    with pytest.raises(PolicyError, match="does not match project"):
        check_csr(_csr((ORG, "other"), (CN, "dev-1")), "acme")
    with pytest.raises(PolicyError, match="no certificate ID"):
        check_csr(_csr((ORG, "acme")), "acme")
    with pytest.raises(InputError, match="invalid certificate ID"):
        check_csr(_csr((ORG, "acme"), (CN, "dev\x001")), "acme")
    with pytest.raises(InputError, match="invalid project slug"):
        check_csr(_csr((ORG, "acme"), (CN, "dev-1")), "ACME")
    with pytest.raises(InputError, match="2 CN"):
        check_csr(_csr((ORG, "acme"), (CN, "a"), (CN, "b")), "acme")


def test_tampered_csr_refused() -> None:
    csr = create_csr(generate_private_key(), "acme", "dev-1")
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    with pytest.raises(PolicyError, match="signature does not verify"):
        check_csr(x509.load_der_x509_csr(bytes(der)), "acme")
    # swapping in another public key breaks proof of possession too
    other = create_csr(generate_private_key(), "acme", "dev-1")
    mixed = bytearray(csr.public_bytes(serialization.Encoding.DER))
    old_spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    new_spki = other.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mixed = mixed.replace(old_spki, new_spki)
    with pytest.raises(PolicyError):
        check_csr(x509.load_der_x509_csr(bytes(mixed)), "acme")


def test_requested_extensions_and_extra_attributes_are_not_copied() -> None:
    root, _ = CertificateAuthority.create_root("root")
    csr = _csr((NameOID.COUNTRY_NAME, "DE"), (ORG, "acme"), (CN, "dev-1"), extensions=True)
    cert = root.sign_csr(csr, "acme")
    assert cert.subject.rfc4514_string() == "CN=dev-1,O=acme"
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert bc.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert cert.public_key() == csr.public_key()


def test_unsupported_csr_key_refused() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP521R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(ORG, "acme"), x509.NameAttribute(CN, "d")]))
        .sign(key, hashes.SHA512())
    )
    with pytest.raises(InputError, match="unsupported EC curve"):
        check_csr(csr, "acme")


def test_check_generated_key_applies_the_subject_rules() -> None:
    """bulk issue's own keys: no CSR signature to check, the same ID and project rules."""
    from fleetpki.csr import check_generated_key
    from fleetpki.fastsign import spki_der

    key = generate_private_key()
    spki = spki_der(key.public_key())  # type: ignore[arg-type]
    request = check_generated_key(key.public_key(), "acme", "dev-1", spki)
    assert (request.project_slug, request.certificate_id, request.spki) == ("acme", "dev-1", spki)
    assert request.public_key == key.public_key()
    with pytest.raises(InputError, match="invalid certificate ID"):
        check_generated_key(key.public_key(), "acme", "has space")
    with pytest.raises(InputError, match="invalid project slug"):
        check_generated_key(key.public_key(), "Acme", "dev-1")


def test_checked_request_loads_its_key_from_the_spki_when_needed() -> None:
    """A CheckedRequest given only the SPKI (as the bulk template needs) loads the key on use."""
    from fleetpki.csr import CheckedRequest

    key = generate_private_key()
    request = check_csr(create_csr(key, "acme", "dev-1"), "acme")
    assert request.spki is not None and request.public_key == key.public_key()
    bare = CheckedRequest("acme", "dev-1", request.spki)
    assert bare.key is None and bare.public_key == key.public_key()
    with pytest.raises(ValueError, match="needs its key"):
        _ = CheckedRequest("acme", "dev-1").public_key
