"""Read every part of an uploaded CA certificate or CRL that the platform will ever use, up front.

cryptography parses lazily: a certificate loads although its subject, issuer, public key or
extensions cannot be read, and the error surfaces later, where it is read (the API's listing,
the trust set, a handshake). So nothing is stored before this module has read all of it, the way
every later reader will (cryptography, and OpenSSL through pyOpenSSL); what fails here is
refused with the part that failed. Stored rows are read through here too, so a row that an older
version stored and that cannot be read is reported as such, and kept out of the trust set.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import crypto

from fleetpki.errors import InputError
from fleetpki.formats import fingerprint, key_usage_names

T = TypeVar("T")
VerifyingKey = (
    ec.EllipticCurvePublicKey
    | rsa.RSAPublicKey
    | dsa.DSAPublicKey
    | ed25519.Ed25519PublicKey
    | ed448.Ed448PublicKey
)


def _time(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}"


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    # cryptography's ASN.1 errors append a Rust debug dump ("ParseError { kind: ... }"): noise.
    text = lines[0].split(" {")[0][:120] if lines else ""
    return text or type(exc).__name__


def _read(what: str, where: str, read: Callable[[], T]) -> T:
    """``read()``, or InputError naming ``what`` could not be read in ``where``."""
    try:
        return read()
    # cryptography's lazy parsers raise ValueError, TypeError, UnsupportedAlgorithm,
    # InvalidVersion, DuplicateExtension, ...; OpenSSL raises crypto.Error. Whatever it is, the
    # input cannot be read, and refusing it is the safe answer.
    except Exception as exc:
        raise InputError(f"{where}: its {what} cannot be read ({_reason(exc)})") from None


def _public_key(cert: x509.Certificate) -> VerifyingKey:
    key = cert.public_key()
    if not isinstance(key, VerifyingKey):
        raise TypeError(f"a {type(key).__name__} cannot verify signatures")
    return key


def public_key_algorithm(key: VerifyingKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    return type(key).__name__.removesuffix("PublicKey")


def _openssl_reads(cert: x509.Certificate) -> None:
    # What OpenSSL's verifier will load: d2i_X509, then the key (decoded lazily there too).
    if crypto.X509.from_cryptography(cert).get_pubkey() is None:
        raise ValueError("OpenSSL cannot load the public key")


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # any failure (a bad signature, an unusable one) means "not self-signed"
        return False
    return True


@dataclass(frozen=True, slots=True)
class InspectedCertificate:
    """A certificate every part of which was read: what the API shows and the checks need."""

    certificate: x509.Certificate
    name: str  # short human name (the subject)
    fingerprint: str
    content: dict[str, Any]  # the API's certificateContent
    constraints: x509.BasicConstraints | None
    self_signed: bool


def inspect_certificate(der: bytes, where: str) -> InspectedCertificate:
    """Read all of the certificate ``der`` (``where`` names it in messages); raises InputError."""
    cert = _read("DER encoding", where, lambda: x509.load_der_x509_certificate(der))
    _read("version", where, lambda: cert.version)
    subject = _read("subject", where, lambda: cert.subject.rfc4514_string())
    issuer = _read("issuer", where, lambda: cert.issuer.rfc4514_string())
    name = subject or f"serial {cert.serial_number:x}"
    where = f"{where} ({name[:200]})"
    extensions = _read("extensions", where, lambda: list(cert.extensions))
    key = _read("public key", where, lambda: _public_key(cert))
    algorithm = _read("signature algorithm", where, lambda: cert.signature_algorithm_oid)
    _read("signature algorithm", where, lambda: cert.signature_hash_algorithm)
    not_before = _read("validity", where, lambda: cert.not_valid_before_utc)
    not_after = _read("validity", where, lambda: cert.not_valid_after_utc)
    _read("encoding (as OpenSSL reads it)", where, lambda: _openssl_reads(cert))
    constraints = usage = None
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints):
            constraints = ext.value
        elif isinstance(ext.value, x509.KeyUsage):
            usage = ext.value
    content = {
        "issuer": issuer,
        "subject": subject,
        "serialNumber": f"{cert.serial_number:x}",
        "notBefore": _time(not_before),
        "notAfter": _time(not_after),
        "publicKeyAlgorithm": public_key_algorithm(key),
        "signatureAlgorithm": getattr(algorithm, "_name", algorithm.dotted_string),
        "keyUsages": key_usage_names(usage) if usage is not None else [],
    }
    return InspectedCertificate(
        cert, name, fingerprint(cert), content, constraints, _is_self_signed(cert)
    )


@dataclass(frozen=True, slots=True)
class InspectedCrl:
    """A CRL every part of which was read."""

    crl: x509.CertificateRevocationList
    issuer: str
    revoked: int


def inspect_crl(der: bytes, where: str = "the CRL") -> InspectedCrl:
    """Read all of the CRL ``der``; raises InputError."""
    crl = _read("DER encoding", where, lambda: x509.load_der_x509_crl(der))
    issuer = _read("issuer", where, lambda: crl.issuer.rfc4514_string())
    _read("extensions", where, lambda: list(crl.extensions))
    _read("signature algorithm", where, lambda: crl.signature_hash_algorithm)
    _read("update times", where, lambda: (crl.last_update_utc, crl.next_update_utc))

    def entries() -> int:
        count = 0
        for entry in crl:
            _ = entry.serial_number, entry.revocation_date_utc, list(entry.extensions)
            count += 1
        return count

    revoked = _read("revoked certificate entries", where, entries)
    _read("encoding (as OpenSSL reads it)", where, lambda: crypto.X509Store().add_crl(crl))
    return InspectedCrl(crl, issuer, revoked)


def crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    """Whether ``issuer`` (an inspected certificate) signed ``crl``; False when it cannot tell."""
    if crl.issuer != issuer.subject:
        return False
    try:
        return crl.is_signature_valid(_public_key(issuer))  # type: ignore[arg-type]
    except Exception:  # a signature of a kind this key cannot check is not its signature
        return False
