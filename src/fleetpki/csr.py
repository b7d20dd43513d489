"""Create a CSR; check one against the signing policy (proof of possession, subject rules)."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import SignatureAlgorithmOID

from fleetpki.der import P256_SPKI_LENGTH, P256_SPKI_PREFIX, der_bounds
from fleetpki.errors import InputError, PolicyError
from fleetpki.keys import PrivateKey, PublicKey, hash_for, key_type_of
from fleetpki.naming import (
    DeviceName,
    device_subject,
    parse_device_subject,
    parse_simple_device_subject,
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

    project_slug: str
    certificate_id: str
    # The CSR's SubjectPublicKeyInfo DER when it is already the encoding cryptography writes
    # for this key (uncompressed P-256), so a signer can reuse it instead of re-encoding.
    spki: bytes | None = None
    key: PublicKey | None = None  # None: loaded from ``spki`` when asked for

    @property
    def public_key(self) -> PublicKey:
        if self.key is not None:
            return self.key
        if self.spki is None:
            raise ValueError("a CheckedRequest needs its key or its SubjectPublicKeyInfo")
        return serialization.load_der_public_key(self.spki)  # type: ignore[return-value]


# ECDSA signature algorithms checked with the key already loaded (one key load, not two);
# every other algorithm goes through ``is_signature_valid``.
_ECDSA = {
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: ec.ECDSA(hashes.SHA256()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: ec.ECDSA(hashes.SHA384()),
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: ec.ECDSA(hashes.SHA512()),
}


def _signature_valid(
    csr: x509.CertificateSigningRequest, tbs: bytes
) -> tuple[bool, ec.EllipticCurvePublicKey | None]:
    """(proof of possession holds, the public key if it was loaded for that, else None).

    ``tbs`` is ``csr.tbs_certrequest_bytes`` (fetched once: each access copies it).
    """
    algorithm = _ECDSA.get(csr.signature_algorithm_oid)
    if algorithm is not None:
        try:
            public_key = csr.public_key()
        except Exception:  # an unreadable key: is_signature_valid below says no, as before
            public_key = None
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            try:
                public_key.verify(csr.signature, tbs, algorithm)
            except InvalidSignature:
                return False, None
            return True, public_key
    try:
        return csr.is_signature_valid, None
    except Exception:  # unsupported signature algorithms raise from the Rust layer
        return False, None


def _layout(tbs: bytes) -> tuple[int, int, bytes | None] | None:
    """(subject start, subject end, canonical P-256 SPKI or None) of a CertificationRequestInfo.

    None if the DER cannot be walked (the general path then reads it, with its messages).
    """
    try:
        body, end = der_bounds(tbs, 0, len(tbs))
        _, name_start = der_bounds(tbs, body, end)  # skip the version
        _, name_end = der_bounds(tbs, name_start, end)
        _, spki_end = der_bounds(tbs, name_end, end)
    except (IndexError, ValueError):
        return None
    spki: bytes | None = None
    if spki_end - name_end == P256_SPKI_LENGTH and tbs.startswith(P256_SPKI_PREFIX, name_end):
        spki = tbs[name_end:spki_end]  # uncompressed point (65 bytes): as cryptography writes it
    return name_start, name_end, spki


def _subject(
    csr: x509.CertificateSigningRequest, tbs: bytes, layout: tuple[int, int, bytes | None] | None
) -> DeviceName:
    """The device name of the CSR subject.

    The common subject is read from the DER directly (``parse_simple_device_subject``); any
    other goes through ``parse_device_subject`` (its results, its messages). Raises
    InputError or ValueError.
    """
    name = None if layout is None else parse_simple_device_subject(tbs, layout[0], layout[1])
    if name is None:
        name = parse_device_subject(read_subject(csr))
    return name


def check_generated_key(
    public_key: PublicKey, project_slug: str, certificate_id: str, spki: bytes | None = None
) -> CheckedRequest:
    """The policy for a key this process generated itself (``bulk issue``'s development kits).

    The subject rules of ``check_csr`` apply; there is no proof of possession to check, as in
    any server-side key generation: the key never left this process. Raises InputError or
    PolicyError.
    """
    validate_project_slug(project_slug)
    validate_certificate_id(certificate_id)
    key_type_of(public_key)
    return CheckedRequest(project_slug, certificate_id, spki, public_key)


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
        tbs = csr.tbs_certrequest_bytes
    except Exception:  # cannot happen for a parsed CSR; then it does not verify, as before
        tbs = b""
    valid, loaded = _signature_valid(csr, tbs)
    if not valid:
        raise PolicyError("CSR signature does not verify: the request was altered or is corrupt")
    layout = _layout(tbs)
    spki = None if layout is None else layout[2]
    try:
        public_key = loaded if loaded is not None else csr.public_key()
        subject = _subject(csr, tbs, layout)
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
    return CheckedRequest(project_slug, chosen, spki, public_key)
