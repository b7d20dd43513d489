"""Create a CSR; check one against the signing policy (proof of possession, subject rules)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509

from fleetpki.errors import InputError, PolicyError
from fleetpki.keys import PrivateKey, PublicKey, hash_for, key_type_of
from fleetpki.naming import (
    device_subject,
    parse_device_subject,
    read_subject,
    validate_certificate_id,
    validate_project_slug,
)


def create_csr(
    key: PrivateKey, project_slug: str, certificate_id: str
) -> x509.CertificateSigningRequest:
    """A CSR for ``O=<project_slug>, CN=<certificate_id>`` signed by ``key``; raises InputError."""
    subject = device_subject(project_slug, certificate_id)
    return x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hash_for(key))


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A CSR that passed the policy: only its public key and the certificate ID go any further."""

    public_key: PublicKey
    project_slug: str
    certificate_id: str


def check_csr(
    csr: x509.CertificateSigningRequest,
    project_slug: str,
    certificate_id: str | None = None,
) -> CheckedRequest:
    """Check proof of possession and the subject rules; return what may be signed.

    The certificate ID comes from ``certificate_id`` or the CSR's CN (both given and different:
    refused). A CSR ``O`` other than ``project_slug`` is refused. Requested extensions are ignored.
    Raises InputError (malformed) or PolicyError (well-formed but not allowed).
    """
    validate_project_slug(project_slug)
    try:
        valid = csr.is_signature_valid
    except Exception:  # unsupported signature algorithms raise from the Rust layer
        valid = False
    if not valid:
        raise PolicyError("CSR signature does not verify: the request was altered or is corrupt")
    try:
        public_key = csr.public_key()
        subject = parse_device_subject(read_subject(csr))
    except ValueError as exc:
        raise InputError(f"unreadable CSR content ({exc})") from None
    if not isinstance(public_key, PublicKey.__args__):  # type: ignore[attr-defined]
        raise PolicyError(f"unsupported CSR key algorithm {type(public_key).__name__}")
    key_type_of(public_key)
    if subject.project_slug is not None and subject.project_slug != project_slug:
        raise PolicyError(
            f"CSR subject O={subject.project_slug!r} does not match project {project_slug!r}"
        )
    if certificate_id is not None and subject.certificate_id is not None:
        if certificate_id != subject.certificate_id:
            raise PolicyError(
                f"--id {certificate_id!r} differs from the CSR's CN {subject.certificate_id!r}"
            )
    chosen = certificate_id if certificate_id is not None else subject.certificate_id
    if chosen is None:
        raise PolicyError("no certificate ID: the CSR has no CN and none was given (--id)")
    validate_certificate_id(chosen)
    return CheckedRequest(public_key=public_key, project_slug=project_slug, certificate_id=chosen)
