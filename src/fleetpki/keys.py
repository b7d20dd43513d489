"""Key types, generation, load/save (PEM/DER, encrypted at rest), and the Signer interface.

CA keys are written as PKCS#8 EncryptedPrivateKeyInfo with PBES2 (PBKDF2-HMAC-SHA256,
``KDF_ITERATIONS`` rounds, AES-256-CBC): the standard form ``openssl pkey`` reads back. We encode
it ourselves because cryptography's ``BestAvailableEncryption`` fixes PBKDF2 at 2,048 rounds.
"""

from __future__ import annotations

import enum
import os
from abc import ABC, abstractmethod
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from fleetpki.der import pem_armor, tlv
from fleetpki.errors import InputError, PassphraseError

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
HashAlgorithm: TypeAlias = hashes.SHA256 | hashes.SHA384

KDF_ITERATIONS = 600_000
_SALT_BYTES = 16


class KeyType(enum.StrEnum):
    """The key types fleetpki issues for: EC P-256 (default), P-384, RSA 2048/3072."""

    P256 = "p256"
    P384 = "p384"
    RSA2048 = "rsa2048"
    RSA3072 = "rsa3072"


def generate_private_key(key_type: KeyType | str = KeyType.P256) -> PrivateKey:
    """A new private key of ``key_type``; raises InputError for an unknown type."""
    try:
        kind = KeyType(key_type)
    except ValueError:
        choices = ", ".join(k.value for k in KeyType)
        raise InputError(f"unknown key type {key_type!r}: choose one of {choices}") from None
    if kind is KeyType.P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is KeyType.P384:
        return ec.generate_private_key(ec.SECP384R1())
    bits = 2048 if kind is KeyType.RSA2048 else 3072
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    """The KeyType of a key; raises InputError for a key fleetpki does not support."""
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return KeyType.P256
        if isinstance(key.curve, ec.SECP384R1):
            return KeyType.P384
        raise InputError(f"unsupported EC curve {key.curve.name}: use P-256 or P-384")
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        if key.key_size in (2048, 3072):
            return KeyType.RSA2048 if key.key_size == 2048 else KeyType.RSA3072
        if key.key_size > 3072:
            return KeyType.RSA3072  # accepted on import; signs with SHA-256
        raise InputError(f"RSA key of {key.key_size} bits is too small: use 2048 or more")
    raise InputError(f"unsupported key algorithm {type(key).__name__}: use EC or RSA")


def hash_for(key: PrivateKey | PublicKey) -> HashAlgorithm:
    """The signature hash a key signs with: SHA-384 for P-384, SHA-256 otherwise."""
    return hashes.SHA384() if key_type_of(key) is KeyType.P384 else hashes.SHA256()


# --- the Signer interface --------------------------------------------------------------------


class Signer(ABC):
    """A CA signing key. Issuance code sees only this, so a PKCS#11 token can stand in for a file.

    ``builder_key()`` is the object handed to cryptography's builders: a real private key here, or
    an ``ec.EllipticCurvePrivateKey`` subclass whose ``sign()`` calls the token.
    """

    @abstractmethod
    def public_key(self) -> PublicKey:
        """The public half."""

    @abstractmethod
    def builder_key(self) -> PrivateKey:
        """The key object cryptography's certificate/CRL builders sign with."""

    def hash_algorithm(self) -> HashAlgorithm:
        """The hash this CA signs with."""
        return hash_for(self.public_key())

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` with this CA's algorithm (ECDSA or RSA PKCS#1 v1.5) and hash."""
        key = self.builder_key()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(self.hash_algorithm()))
        return key.sign(data, asym_padding.PKCS1v15(), self.hash_algorithm())


class KeyFileSigner(Signer):
    """A signer over a private key held in memory (loaded from a file)."""

    __slots__ = ("_key",)

    def __init__(self, key: PrivateKey) -> None:
        key_type_of(key)  # refuse unsupported keys at once
        self._key = key

    def public_key(self) -> PublicKey:
        return self._key.public_key()

    def builder_key(self) -> PrivateKey:
        return self._key


# --- serialization ---------------------------------------------------------------------------


def _oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    out = bytearray([40 * parts[0] + parts[1]])
    for part in parts[2:]:
        chunk = [part & 0x7F]
        part >>= 7
        while part:
            chunk.append(0x80 | (part & 0x7F))
            part >>= 7
        out.extend(reversed(chunk))
    return tlv(0x06, bytes(out))


def _int(value: int) -> bytes:
    return tlv(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def encrypt_pkcs8(key: PrivateKey, passphrase: bytes, iterations: int = KDF_ITERATIONS) -> bytes:
    """DER EncryptedPrivateKeyInfo (PBES2: PBKDF2-HMAC-SHA256 + AES-256-CBC) for ``key``."""
    if not passphrase:
        raise PassphraseError("an empty passphrase cannot protect a key")
    plain = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(_SALT_BYTES), os.urandom(16)
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=iterations)
    secret = kdf.derive(passphrase)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(padded) + encryptor.finalize()
    pbkdf2_params = _seq(
        tlv(0x04, salt), _int(iterations), _seq(_oid("1.2.840.113549.2.9"), b"\x05\x00")
    )
    algorithm = _seq(
        _oid("1.2.840.113549.1.5.13"),
        _seq(
            _seq(_oid("1.2.840.113549.1.5.12"), pbkdf2_params),
            _seq(_oid("2.16.840.1.101.3.4.1.42"), tlv(0x04, iv)),
        ),
    )
    return _seq(algorithm, tlv(0x04, encrypted))


def serialize_private_key(
    key: PrivateKey,
    passphrase: bytes | None,
    *,
    der: bool = False,
    iterations: int = KDF_ITERATIONS,
) -> bytes:
    """PKCS#8 bytes for ``key``: encrypted (PBES2) when ``passphrase`` is given, else plain.

    Unencrypted EC keys are written as PKCS#8 too, which ``openssl ec`` and ``pkey`` read.
    """
    if passphrase is not None:
        blob = encrypt_pkcs8(key, passphrase, iterations)
        return blob if der else pem_armor("ENCRYPTED PRIVATE KEY", blob)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    return key.private_bytes(
        encoding, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def is_encrypted_key(data: bytes) -> bool:
    """Whether ``data`` (PEM or DER) holds an encrypted private key."""
    if b"-----BEGIN" in data:
        return b"ENCRYPTED" in data
    # DER EncryptedPrivateKeyInfo starts SEQUENCE { SEQUENCE { OID ... } } ; PrivateKeyInfo
    # starts SEQUENCE { INTEGER 0 ... }. The OID matters: a certificate or CRL also starts with
    # two SEQUENCEs, and must not be taken for an encrypted key (and ask for a passphrase).
    try:
        header = 2 + (data[1] & 0x7F if data[1] & 0x80 else 0)
        inner = header + 2 + (data[header + 1] & 0x7F if data[header + 1] & 0x80 else 0)
        return data[0] == 0x30 and data[header] == 0x30 and data[inner] == 0x06
    except IndexError:
        return False


def load_private_key(data: bytes, passphrase: bytes | None = None) -> PrivateKey:
    """Load a private key from PEM or DER (PKCS#8, SEC1, PKCS#1), encrypted or not.

    Raises PassphraseError when a passphrase is needed or wrong, InputError for anything else.
    """
    text = b"-----BEGIN" in data
    if text and b"PRIVATE KEY-----" not in data:
        raise InputError("not a private key (no PRIVATE KEY block found)")
    loader = serialization.load_pem_private_key if text else serialization.load_der_private_key
    encrypted = is_encrypted_key(data)
    try:
        key = loader(data, password=passphrase if encrypted else None)
    except TypeError:
        raise PassphraseError("the key is encrypted: a passphrase is needed") from None
    except ValueError as exc:
        if encrypted:
            raise PassphraseError("wrong passphrase for the encrypted key") from None
        raise InputError(f"not a readable private key ({_first_line(exc)})") from None
    except UnsupportedAlgorithm:
        raise InputError("unsupported private key algorithm") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputError(f"unsupported private key algorithm {type(key).__name__}")
    key_type_of(key)
    return key


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].split(". ")[0][:120] if text else type(exc).__name__
