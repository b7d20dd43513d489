"""CA certificate uploads: parse, refuse what is not an acceptable CA, describe for the API."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from fleetpki.errors import InputError
from fleetpki.formats import MAX_INPUT_BYTES, Kind, read_blocks
from fleetpki.platform.store.inspection import InspectedCertificate, inspect_certificate

MAX_UPLOAD_BYTES = 256 * 1024
MAX_CRL_BYTES = MAX_INPUT_BYTES
CERT_TYPES = ("root", "intermediate")


@dataclass(frozen=True, slots=True)
class UploadedCA:
    """One CA certificate accepted for upload, with the type it is stored as."""

    certificate: x509.Certificate
    cert_type: str
    fingerprint: str
    inspected: InspectedCertificate


def _time(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}"


def _check_one(inspected: InspectedCertificate, wanted: str | None, at: dt.datetime) -> UploadedCA:
    cert, shown = inspected.certificate, inspected.name
    constraints = inspected.constraints
    if constraints is None or not constraints.ca:
        raise InputError(
            f"{shown} is not a CA certificate (needs basicConstraints CA:TRUE); "
            "upload the root or intermediate CA that signs your devices, not a device certificate"
        )
    if at > cert.not_valid_after_utc:
        raise InputError(f"{shown} is expired (notAfter {_time(cert.not_valid_after_utc)})")
    if at < cert.not_valid_before_utc:
        raise InputError(f"{shown} is not yet valid (notBefore {_time(cert.not_valid_before_utc)})")
    actual = "root" if inspected.self_signed else "intermediate"
    if wanted is not None and wanted != actual:
        why = "it is self-signed" if actual == "root" else "it is not self-signed"
        raise InputError(f"{shown} is a {actual} CA certificate ({why}), not {wanted!r}")
    return UploadedCA(cert, actual, inspected.fingerprint, inspected)


def parse_ca_upload(
    data: bytes, cert_type: str | None, *, at: dt.datetime | None = None
) -> list[UploadedCA]:
    """The CA certificates in an upload (PEM bundle or one DER); raises InputError saying why not.

    ``cert_type`` (root|intermediate) must match the first certificate; the others of a bundle
    are typed by shape. Every certificate is read in full first (``inspect_certificate``), and
    one bad certificate refuses the whole upload. A private key anywhere refuses it too, and the
    message never quotes it.
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
        where = "the certificate" if len(blocks) == 1 else f"certificate {index + 1} of the upload"
        inspected = inspect_certificate(block.der, where)
        uploaded.append(_check_one(inspected, cert_type if index == 0 else None, at))
    seen = set()
    for item in uploaded:
        if item.fingerprint in seen:
            raise InputError(f"{item.inspected.name} appears twice in the upload")
        seen.add(item.fingerprint)
    return uploaded


def certificate_content(der: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(the API's ``certificateContent``, None) of stored DER, or (None, why it cannot be read).

    Never raises: a row that an older version stored and that cannot be read is shown with
    ``certificateContent: null`` and ``problem: "<why>"``, can still be deleted, and never
    counts as trust.
    """
    try:
        return inspect_certificate(der, "the stored certificate").content, None
    except InputError as exc:
        return None, str(exc)
