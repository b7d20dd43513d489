"""Key types, generation, encrypted storage (PBES2, 600k PBKDF2), loading, the Signer interface."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import InputError, PassphraseError
from fleetpki.keys import (
    KDF_ITERATIONS,
    KeyFileSigner,
    KeyType,
    PrivateKey,
    PublicKey,
    Signer,
    generate_private_key,
    hash_for,
    is_encrypted_key,
    key_type_of,
    load_private_key,
    serialize_private_key,
)
from fleetpki_testing import Openssl

FAST = 1000  # KDF rounds for round trips where the cost is not the point


@pytest.mark.parametrize(
    ("key_type", "check"),
    [
        ("p256", lambda k: isinstance(k.curve, ec.SECP256R1)),
        ("p384", lambda k: isinstance(k.curve, ec.SECP384R1)),
        ("rsa2048", lambda k: k.key_size == 2048),
        ("rsa3072", lambda k: k.key_size == 3072),
    ],
)
def test_generate_each_type(key_type: str, check: object) -> None:
    key = generate_private_key(key_type)
    assert check(key)
    assert key_type_of(key) is KeyType(key_type)
    assert key_type_of(key.public_key()) is KeyType(key_type)


def test_default_is_p256_and_hashes() -> None:
    key = generate_private_key()
    assert key_type_of(key) is KeyType.P256
    assert isinstance(hash_for(key), hashes.SHA256)
    assert isinstance(hash_for(generate_private_key("p384")), hashes.SHA384)


def test_unknown_and_unsupported_keys() -> None:
    with pytest.raises(InputError, match="unknown key type 'ed25519'"):
        generate_private_key("ed25519")
    with pytest.raises(InputError, match="unsupported EC curve"):
        key_type_of(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(InputError, match="too small"):
        key_type_of(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize("der", [False, True])
def test_encrypted_round_trip(der: bool) -> None:
    key = generate_private_key()
    blob = serialize_private_key(key, b"pw", der=der, iterations=FAST)
    assert is_encrypted_key(blob)
    if not der:
        assert blob.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    loaded = load_private_key(blob, b"pw")
    assert loaded.private_numbers() == key.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_private_key(blob, b"nope")
    with pytest.raises(PassphraseError, match="passphrase is needed"):
        load_private_key(blob, None)


def test_empty_passphrase_refused() -> None:
    with pytest.raises(PassphraseError):
        serialize_private_key(generate_private_key(), b"")


@pytest.mark.parametrize("der", [False, True])
def test_plain_keys_in_every_format(der: bool) -> None:
    key = generate_private_key()
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        data = key.private_bytes(encoding, fmt, serialization.NoEncryption())
        assert not is_encrypted_key(data)
        assert load_private_key(data).public_key() == key.public_key()
    rsa_key = generate_private_key("rsa2048")
    data = rsa_key.private_bytes(
        encoding, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert load_private_key(data).public_key() == rsa_key.public_key()


@pytest.mark.parametrize(
    "data",
    [
        b"garbage",
        b"\x30\x03\x02\x01\x00",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
)
def test_unreadable_keys(data: bytes) -> None:
    with pytest.raises(InputError):
        load_private_key(data)


def test_kdf_is_pbes2_600k_and_openssl_reads_it(tmp_path: Path, openssl: Openssl) -> None:
    key = generate_private_key()
    path = tmp_path / "ca.key.pem"
    path.write_bytes(serialize_private_key(key, b"s3cret"))
    assert KDF_ITERATIONS >= 600_000
    parsed = openssl("asn1parse", "-in", path).stdout
    assert "PBES2" in parsed and "PBKDF2" in parsed and "hmacWithSHA256" in parsed
    assert "aes-256-cbc" in parsed
    assert f"INTEGER:{KDF_ITERATIONS:06X}" in parsed.replace(" ", "")  # 600000 = 0x0927C0
    out = openssl("pkey", "-in", path, "-passin", "pass:s3cret", "-pubout").stdout
    assert out.encode() == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrong = openssl("pkey", "-in", path, "-passin", "pass:wrong", check=False)
    assert wrong.returncode != 0


class TokenSigner(Signer):
    """A stand-in for a PKCS#11 token: the key is only reachable through sign()."""

    def __init__(self) -> None:
        self._hidden = generate_private_key()
        self.calls = 0

    def public_key(self) -> PublicKey:
        return self._hidden.public_key()

    def builder_key(self) -> PrivateKey:
        signer = self

        class _TokenKey(ec.EllipticCurvePrivateKey):
            # Only what cryptography's builders call; everything else is out of reach.
            curve = ec.SECP256R1()
            key_size = 256

            def sign(self, data: bytes, algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
                signer.calls += 1
                return signer._hidden.sign(data, algorithm)

            def public_key(self) -> ec.EllipticCurvePublicKey:
                return signer._hidden.public_key()

            def exchange(self, *args: object) -> bytes:
                raise NotImplementedError

            def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
                raise NotImplementedError

            def private_bytes(self, *args: object) -> bytes:
                raise NotImplementedError

            def __copy__(self) -> _TokenKey:
                return self

            def __deepcopy__(self, memo: object) -> _TokenKey:
                return self

        return _TokenKey()


def test_issuance_works_through_any_signer() -> None:
    from fleetpki import profiles

    root, _ = CertificateAuthority.create_root("root")
    token = TokenSigner()
    cert = profiles.INTERMEDIATE.builder(
        subject=x509_name("Token CA"), public_key=token.public_key(), issuer=root.certificate
    ).sign(root.signer.builder_key(), root.signer.hash_algorithm())
    ca = CertificateAuthority.adopt("token-ca", cert, token, [root.certificate])
    device = ca.issue(check_csr(create_csr(generate_private_key(), "acme", "dev1"), "acme"))
    device.verify_directly_issued_by(ca.certificate)
    crl = ca.sign_crl([], crl_number=1)
    assert crl.is_signature_valid(token.public_key())  # type: ignore[arg-type]
    assert token.calls == 2


def x509_name(common_name: str) -> x509.Name:
    from fleetpki.ca import ca_subject

    return ca_subject(common_name)


def test_adopt_refuses_a_key_of_another_certificate() -> None:
    root, _ = CertificateAuthority.create_root("root")
    with pytest.raises(InputError, match="does not belong"):
        CertificateAuthority.adopt("x", root.certificate, KeyFileSigner(generate_private_key()))


def test_certificates_are_not_taken_for_encrypted_keys() -> None:
    root, key = CertificateAuthority.create_root("root")
    der = root.certificate.public_bytes(serialization.Encoding.DER)
    assert not is_encrypted_key(der)
    assert not is_encrypted_key(
        root.sign_crl([], crl_number=1).public_bytes(serialization.Encoding.DER)
    )
    assert is_encrypted_key(serialize_private_key(key, b"pw", der=True, iterations=FAST))
    with pytest.raises(InputError, match="not a readable private key"):
        load_private_key(der)
