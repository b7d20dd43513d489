"""Detect and convert PEM/DER (certificates, CSRs, CRLs, keys); PKCS#12 export; inspect.

Conversion re-armours the same DER bytes (it never re-encodes), so ``convert --to der`` is
byte-identical to ``openssl x509|req|ec -outform DER`` and back.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from fleetpki.der import der_bounds, pem_armor, pem_spans
from fleetpki.errors import InputError
from fleetpki.keys import PrivateKey, is_encrypted_key, key_type_of
from fleetpki.naming import read_subject

MAX_INPUT_BYTES = 1 << 20


class Kind(enum.StrEnum):
    CERTIFICATE = "certificate"
    CSR = "csr"
    CRL = "crl"
    PRIVATE_KEY = "private key"
    PUBLIC_KEY = "public key"


# PEM labels and the kind each one holds.
LABELS: dict[str, Kind] = {
    "CERTIFICATE": Kind.CERTIFICATE,
    "TRUSTED CERTIFICATE": Kind.CERTIFICATE,
    "CERTIFICATE REQUEST": Kind.CSR,
    "NEW CERTIFICATE REQUEST": Kind.CSR,
    "X509 CRL": Kind.CRL,
    "PRIVATE KEY": Kind.PRIVATE_KEY,
    "ENCRYPTED PRIVATE KEY": Kind.PRIVATE_KEY,
    "EC PRIVATE KEY": Kind.PRIVATE_KEY,
    "RSA PRIVATE KEY": Kind.PRIVATE_KEY,
    "PUBLIC KEY": Kind.PUBLIC_KEY,
}


@dataclass(frozen=True, slots=True)
class Block:
    """One DER object with its PEM label."""

    label: str
    der: bytes

    @property
    def kind(self) -> Kind:
        return LABELS[self.label]

    def pem(self) -> bytes:
        """PEM text as openssl writes it (64-column base64)."""
        return pem_armor(self.label, self.der)


def is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data[:4096] or data.lstrip()[:11] == b"-----BEGIN "


def pem_blocks(data: bytes) -> list[Block]:
    """All PEM blocks in ``data`` (text around them is ignored); raises InputError."""
    blocks = []
    for raw_label, text in pem_spans(data):
        label = raw_label.decode()
        if label not in LABELS:
            raise InputError(f"unsupported PEM block {label[:40]!r}")
        body = re.sub(rb"\s+", b"", text)
        if b"Proc-Type:" in text:
            raise InputError("legacy OpenSSL-encrypted PEM keys are not supported: use PKCS#8")
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f"corrupt PEM block {label!r} (bad base64)") from None
        blocks.append(Block(label, der))
    if not blocks:
        if b"-----BEGIN " in data:
            raise InputError("truncated or malformed PEM (no complete BEGIN/END block)")
        raise InputError("no PEM block found")
    return blocks


def _der_key_label(der: bytes) -> str | None:
    """The PEM label of a DER private/public key, from its ASN.1 shape; None if not a key."""
    try:
        start, end = der_bounds(der, 0, len(der))
        if der[0] != 0x30 or end != len(der):
            return None
        s1, e1 = der_bounds(der, start, end)
        t1, t2 = der[start], der[e1]
        version = int.from_bytes(der[s1:e1], "big") if t1 == 0x02 else None
    except (IndexError, ValueError):
        return None
    if t1 == 0x30 and t2 == 0x04:
        return "ENCRYPTED PRIVATE KEY"
    if t1 == 0x30 and t2 == 0x03:
        return "PUBLIC KEY"
    if t1 == 0x02 and version == 1 and t2 == 0x04:
        return "EC PRIVATE KEY"
    if t1 == 0x02 and version in (0, 1) and t2 == 0x30:
        return "PRIVATE KEY"
    if t1 == 0x02 and version == 0 and t2 == 0x02:
        return "RSA PRIVATE KEY"
    return None


def identify_der(der: bytes) -> Block:
    """Name a DER object (certificate, CSR, CRL or key); raises InputError if it is none."""
    for label, loader in (
        ("CERTIFICATE", x509.load_der_x509_certificate),
        ("CERTIFICATE REQUEST", x509.load_der_x509_csr),
        ("X509 CRL", x509.load_der_x509_crl),
    ):
        try:
            loader(der)
        except ValueError:
            continue
        return Block(label, der)
    key_label = _der_key_label(der)
    if key_label in ("PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"):
        try:
            serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError):
            key_label = None
    if key_label is not None:
        return Block(key_label, der)
    raise InputError("not a certificate, CSR, CRL or key in PEM or DER form")


def read_blocks(data: bytes) -> list[Block]:
    """Every object in ``data``, PEM (one or many blocks) or DER (one object); raises InputError."""
    if not data.strip():
        raise InputError("the file is empty")
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"input is too large ({len(data)} bytes, at most {MAX_INPUT_BYTES})")
    if is_pem(data):
        return pem_blocks(data)
    return [identify_der(data)]


def _only(data: bytes, kind: Kind) -> Block:
    blocks = [b for b in read_blocks(data) if b.kind is kind]
    if not blocks:
        found = ", ".join(sorted({b.kind.value for b in read_blocks(data)}))
        raise InputError(f"expected a {kind.value}, found {found}")
    return blocks[0]


def load_certificate(data: bytes) -> x509.Certificate:
    """The first certificate in ``data`` (PEM or DER); raises InputError."""
    return load_certificates(data)[0]


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in ``data`` (a PEM bundle or one DER); raises InputError."""
    blocks = [b for b in read_blocks(data) if b.kind is Kind.CERTIFICATE]
    if not blocks:
        found = ", ".join(sorted({b.kind.value for b in read_blocks(data)}))
        raise InputError(f"expected a certificate, found {found}")
    certs = []
    for block in blocks:
        try:
            certs.append(x509.load_der_x509_certificate(block.der))
        except ValueError as exc:
            raise InputError(f"malformed certificate ({_short(exc)})") from None
    return certs


def load_csr(data: bytes) -> x509.CertificateSigningRequest:
    """The CSR in ``data`` (PEM or DER); raises InputError."""
    block = _only(data, Kind.CSR)
    try:
        return x509.load_der_x509_csr(block.der)
    except ValueError as exc:
        raise InputError(f"malformed CSR ({_short(exc)})") from None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """The CRL in ``data`` (PEM or DER); raises InputError."""
    block = _only(data, Kind.CRL)
    try:
        return x509.load_der_x509_crl(block.der)
    except ValueError as exc:
        raise InputError(f"malformed CRL ({_short(exc)})") from None


def _short(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    # cryptography's ASN.1 errors append a Rust debug dump ("ParseError { kind: ... }"): noise.
    return lines[0].split(" {")[0].split(". ")[0][:120] if lines else type(exc).__name__


def check_block(block: Block) -> None:
    """Raise InputError unless the block's DER parses as what its label says."""
    kind = block.kind
    try:
        if kind is Kind.CERTIFICATE:
            x509.load_der_x509_certificate(block.der)
        elif kind is Kind.CSR:
            x509.load_der_x509_csr(block.der)
        elif kind is Kind.CRL:
            x509.load_der_x509_crl(block.der)
        elif kind is Kind.PUBLIC_KEY:
            serialization.load_der_public_key(block.der)
        elif block.label == "ENCRYPTED PRIVATE KEY":
            if _der_key_label(block.der) != "ENCRYPTED PRIVATE KEY":
                raise ValueError("not an EncryptedPrivateKeyInfo")
        else:
            serialization.load_der_private_key(block.der, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise InputError(f"malformed {kind.value} in the input ({_short(exc)})") from None


def convert(data: bytes, to: str) -> bytes:
    """Re-armour ``data`` as PEM or DER without re-encoding; raises InputError.

    DER output holds one object: a PEM bundle of several cannot become one DER file.
    """
    if to not in ("pem", "der"):
        raise InputError(f"unknown format {to!r}: use pem or der")
    blocks = read_blocks(data)
    for block in blocks:
        check_block(block)
    if to == "pem":
        return b"".join(block.pem() for block in blocks)
    if len(blocks) > 1:
        raise InputError(f"the input holds {len(blocks)} objects; DER holds one (split it first)")
    return blocks[0].der


def certificate_bytes(cert: x509.Certificate, der: bool = False) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def fingerprint(cert: x509.Certificate) -> str:
    """Lowercase hex SHA-256 fingerprint of the DER."""
    return cert.fingerprint(hashes.SHA256()).hex()


def export_pkcs12(
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    chain: list[x509.Certificate],
    passphrase: bytes,
    kdf_rounds: int = 600_000,
) -> bytes:
    """PKCS#12 with AES-256 + PBKDF2 (``kdf_rounds``) protecting key and certificates."""
    if not passphrase:
        raise InputError("a PKCS#12 export needs a passphrase")
    encryption = (
        serialization.PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(kdf_rounds)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(passphrase)
    )
    return pkcs12.serialize_key_and_certificates(name.encode(), key, cert, chain, encryption)


# --- inspect ---------------------------------------------------------------------------------


def _public_key_text(key: Any) -> str:
    try:
        return {"p256": "EC P-256", "p384": "EC P-384"}.get(key_type_of(key).value) or (
            f"RSA {key.key_size}"
        )
    except InputError as exc:
        return str(exc)


def _time(value: Any) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}"


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    """The fields a user checks, as plain JSON-ready values."""
    extensions: dict[str, Any] = {}
    for ext in cert.extensions:
        value = ext.value
        name = ext.oid._name if hasattr(ext.oid, "_name") else ext.oid.dotted_string
        if isinstance(value, x509.BasicConstraints):
            shown: Any = {"ca": value.ca, "pathLength": value.path_length}
        elif isinstance(value, x509.KeyUsage):
            shown = key_usage_names(value)
        elif isinstance(value, x509.ExtendedKeyUsage):
            shown = [oid._name for oid in value]
        elif isinstance(value, x509.SubjectKeyIdentifier):
            shown = value.digest.hex()
        elif isinstance(value, x509.AuthorityKeyIdentifier):
            shown = value.key_identifier.hex() if value.key_identifier else None
        else:
            shown = str(value)
        extensions[name] = {"critical": ext.critical, "value": shown}
    return {
        "type": "certificate",
        "version": cert.version.name,
        "subject": read_subject(cert).rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serialNumber": f"{cert.serial_number:x}",
        "notBefore": _time(cert.not_valid_before_utc),
        "notAfter": _time(cert.not_valid_after_utc),
        "publicKey": _public_key_text(cert.public_key()),
        "signatureAlgorithm": cert.signature_algorithm_oid._name,
        "sha256Fingerprint": fingerprint(cert),
        "selfSigned": cert.subject == cert.issuer,
        "extensions": extensions,
    }


def key_usage_names(usage: x509.KeyUsage) -> list[str]:
    names = []
    for attr in (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
    ):
        if getattr(usage, attr):
            names.append(attr)
    if usage.key_agreement:
        names += [a for a in ("encipher_only", "decipher_only") if getattr(usage, a)]
    return names


def describe(data: bytes) -> list[dict[str, Any]]:
    """Describe every object in ``data``; raises InputError."""
    out: list[dict[str, Any]] = []
    for block in read_blocks(data):
        check_block(block)
        if block.kind is Kind.CERTIFICATE:
            out.append(describe_certificate(x509.load_der_x509_certificate(block.der)))
        elif block.kind is Kind.CSR:
            csr = x509.load_der_x509_csr(block.der)
            out.append(
                {
                    "type": "csr",
                    "subject": read_subject(csr).rfc4514_string(),
                    "publicKey": _public_key_text(csr.public_key()),
                    "signatureValid": csr.is_signature_valid,
                    "signatureAlgorithm": csr.signature_algorithm_oid._name,
                }
            )
        elif block.kind is Kind.CRL:
            crl = x509.load_der_x509_crl(block.der)
            out.append(
                {
                    "type": "crl",
                    "issuer": crl.issuer.rfc4514_string(),
                    "lastUpdate": _time(crl.last_update_utc),
                    "nextUpdate": _time(crl.next_update_utc) if crl.next_update_utc else None,
                    "revoked": [f"{r.serial_number:x}" for r in crl],
                }
            )
        elif block.kind is Kind.PRIVATE_KEY:
            encrypted = is_encrypted_key(block.der) or block.label == "ENCRYPTED PRIVATE KEY"
            entry: dict[str, Any] = {
                "type": "private key",
                "encrypted": encrypted,
                "format": block.label,
            }
            if not encrypted:
                key = serialization.load_der_private_key(block.der, password=None)
                entry["publicKey"] = _public_key_text(key.public_key())
            out.append(entry)
        else:
            public = serialization.load_der_public_key(block.der)
            out.append({"type": "public key", "publicKey": _public_key_text(public)})
    return out
