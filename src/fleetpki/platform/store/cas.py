"""CA certificate uploads: parse, refuse what is not an acceptable CA, describe for the API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from fleetpki.errors import InputError
from fleetpki.formats import Kind, fingerprint, key_usage_names, read_blocks
from fleetpki.verify import describe

MAX_UPLOAD_BYTES = 256 * 1024
CERT_TYPES = ("root", "intermediate")


@dataclass(frozen=True, slots=True)
class UploadedCA:
    """One CA certificate accepted for upload, with the type it is stored as."""

    certificate: x509.Certificate
    cert_type: str
    fingerprint: str


def _time(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}"


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # any failure means "not self-signed"
        return False
    return True


def _check_one(cert: x509.Certificate, wanted: str | None, at: dt.datetime) -> UploadedCA:
    shown = describe(cert)
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    except ValueError:
        raise InputError(f"{shown}: malformed extensions") from None
    if constraints is None or not constraints.ca:
        raise InputError(
            f"{shown} is not a CA certificate (needs basicConstraints CA:TRUE); "
            "upload the root or intermediate CA that signs your devices, not a device certificate"
        )
    if at > cert.not_valid_after_utc:
        raise InputError(f"{shown} is expired (notAfter {_time(cert.not_valid_after_utc)})")
    if at < cert.not_valid_before_utc:
        raise InputError(f"{shown} is not yet valid (notBefore {_time(cert.not_valid_before_utc)})")
    actual = "root" if _is_self_signed(cert) else "intermediate"
    if wanted is not None and wanted != actual:
        why = "it is self-signed" if actual == "root" else "it is not self-signed"
        raise InputError(f"{shown} is a {actual} CA certificate ({why}), not {wanted!r}")
    return UploadedCA(cert, actual, fingerprint(cert))


def parse_ca_upload(
    data: bytes, cert_type: str | None, *, at: dt.datetime | None = None
) -> list[UploadedCA]:
    """The CA certificates in an upload (PEM bundle or one DER); raises InputError saying why not.

    ``cert_type`` (root|intermediate) must match the first certificate; the others of a bundle
    are typed by shape. A private key anywhere refuses the whole upload, and the message never
    quotes it.
    """
    if cert_type is not None and cert_type not in CERT_TYPES:
        raise InputError(f"certType must be 'root' or 'intermediate', not {cert_type[:20]!r}")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"upload too large ({len(data)} bytes, at most {MAX_UPLOAD_BYTES})")
    try:
        blocks = read_blocks(data)
    except InputError as exc:
        text = str(exc)
        if "PRIVATE KEY" in text:
            raise InputError(
                "the upload contains a private key: it was not stored; upload only the CA "
                "certificate, and keep the key secret"
            ) from None
        raise InputError(f"not a certificate in PEM or DER form ({text})") from None
    kinds = {block.kind for block in blocks}
    if Kind.PRIVATE_KEY in kinds:
        raise InputError(
            "the upload contains a private key: it was not stored; upload only the CA "
            "certificate, and keep the key secret"
        )
    if kinds != {Kind.CERTIFICATE}:
        found = ", ".join(sorted(k.value for k in kinds if k is not Kind.CERTIFICATE))
        raise InputError(f"expected CA certificates only, found {found}")
    at = at or dt.datetime.now(dt.UTC)
    uploaded: list[UploadedCA] = []
    for index, block in enumerate(blocks):
        try:
            cert = x509.load_der_x509_certificate(block.der)
        except ValueError:
            raise InputError(f"certificate {index + 1} of the upload is malformed") from None
        uploaded.append(_check_one(cert, cert_type if index == 0 else None, at))
    seen = set()
    for item in uploaded:
        if item.fingerprint in seen:
            raise InputError(f"{describe(item.certificate)} appears twice in the upload")
        seen.add(item.fingerprint)
    return uploaded


def _public_key_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return type(key).__name__.removesuffix("PublicKey")
    return type(key).__name__


def certificate_content(cert: x509.Certificate) -> dict[str, Any]:
    """The ``certificateContent`` object of the management API."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        key_usages = key_usage_names(usage)
    except x509.ExtensionNotFound:
        key_usages = []
    return {
        "issuer": cert.issuer.rfc4514_string(),
        "subject": cert.subject.rfc4514_string(),
        "serialNumber": f"{cert.serial_number:x}",
        "notBefore": _time(cert.not_valid_before_utc),
        "notAfter": _time(cert.not_valid_after_utc),
        "publicKeyAlgorithm": _public_key_algorithm(cert),
        "signatureAlgorithm": cert.signature_algorithm_oid._name,
        "keyUsages": key_usages,
    }
