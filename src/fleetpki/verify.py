"""Chain building and device policy checks, shared by ``fleetpki verify`` and the platform.

cryptography's verifier cannot be used here: it rejects the seed recipe's v1 device certificates,
and has no revocation. This builder is small, explicit and gives a precise reason for a refusal.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetpki.errors import VerificationError
from fleetpki.naming import parse_device_subject

MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class VerifiedPath:
    """A checked path: ``certificates[0]`` is the leaf, ``certificates[-1]`` the trust anchor."""

    certificates: tuple[x509.Certificate, ...]

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certificates[-1]


def describe(cert: x509.Certificate) -> str:
    """A short human name for a certificate (its subject)."""
    return cert.subject.rfc4514_string() or f"serial {cert.serial_number:x}"


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_validity(cert: x509.Certificate, at: dt.datetime, role: str = "certificate") -> None:
    """Raise VerificationError when ``cert`` is expired or not yet valid at ``at``."""
    if at < cert.not_valid_before_utc:
        raise VerificationError(
            f"{role} not yet valid (notBefore {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ})"
        )
    if at > cert.not_valid_after_utc:
        raise VerificationError(
            f"{role} expired (notAfter {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
        )


def check_ca_certificate(cert: x509.Certificate, *, anchor: bool) -> None:
    """Raise VerificationError unless ``cert`` may issue certificates.

    Intermediates need CA:TRUE. A trust anchor without basicConstraints (a v1 root) is accepted,
    as RFC 5280 allows; one that says CA:FALSE is not.
    """
    constraints = _basic_constraints(cert)
    if constraints is None:
        if not anchor:
            raise VerificationError(f"issuer {describe(cert)} is not a CA (no basicConstraints)")
    elif not constraints.ca:
        raise VerificationError(f"issuer {describe(cert)} is not a CA (CA:FALSE)")
    usage = _key_usage(cert)
    if usage is not None and not usage.key_cert_sign:
        raise VerificationError(f"issuer {describe(cert)} keyUsage lacks keyCertSign")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        # A device-sent certificate whose key cannot be loaded signs nothing.
        return False
    return True


def build_path(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Iterable[x509.Certificate],
    *,
    at: dt.datetime | None = None,
) -> VerifiedPath:
    """Build and check a path from ``leaf`` through ``intermediates`` to one of ``anchors``.

    Checks signatures, validity of every certificate, CA flags, keyCertSign and path lengths.
    Raises VerificationError with the most specific reason found.
    """
    at = at or dt.datetime.now(dt.UTC)
    anchor_list = list(anchors)
    check_validity(leaf, at, "leaf certificate")
    path = [leaf]
    current = leaf
    available = list(intermediates)
    reason = "no path to a trusted CA certificate (issuer not found)"
    for _ in range(MAX_DEPTH):
        for anchor in anchor_list:
            if anchor.subject == current.issuer and _signed_by(current, anchor):
                check_ca_certificate(anchor, anchor=True)
                check_validity(anchor, at, f"CA certificate {describe(anchor)}")
                path.append(anchor)
                _check_path_lengths(path)
                return VerifiedPath(tuple(path))
        candidates = [c for c in available if c.subject == current.issuer and c is not current]
        nxt = None
        for candidate in candidates:
            if _signed_by(current, candidate):
                nxt = candidate
                break
        if nxt is None:
            if any(a.subject == current.issuer for a in anchor_list) or candidates:
                reason = f"signature of {describe(current)} does not verify with its issuer"
            break
        check_ca_certificate(nxt, anchor=False)
        check_validity(nxt, at, f"intermediate {describe(nxt)}")
        available.remove(nxt)
        path.append(nxt)
        current = nxt
    else:
        reason = "certificate path too long"
    raise VerificationError(reason)


def _check_path_lengths(path: Sequence[x509.Certificate]) -> None:
    # path[0] is the leaf; the CA at index i has i-1 intermediates between it and the leaf.
    for index, cert in enumerate(path[1:], start=1):
        constraints = _basic_constraints(cert)
        if constraints is not None and constraints.path_length is not None:
            below = sum(1 for c in path[1:index] if c.subject != c.issuer)
            if below > constraints.path_length:
                raise VerificationError(
                    f"path length constraint of {describe(cert)} exceeded "
                    f"({below} > {constraints.path_length})"
                )


def check_device_leaf(leaf: x509.Certificate, project_slug: str | None = None) -> None:
    """Device-policy checks on a leaf: not a CA, usable for client auth, right project.

    v1 certificates (no extensions, the seed recipe's) pass: there is nothing in them to forbid.
    """
    constraints = _basic_constraints(leaf)
    if constraints is not None and constraints.ca:
        raise VerificationError("leaf certificate is a CA certificate, not a device certificate")
    usage = _key_usage(leaf)
    if usage is not None and not usage.digital_signature:
        raise VerificationError("leaf keyUsage lacks digitalSignature")
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and not (
        ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku
    ):
        raise VerificationError("leaf extendedKeyUsage does not allow clientAuth")
    if project_slug is not None:
        name = parse_device_subject(leaf.subject)
        if name.project_slug != project_slug:
            raise VerificationError(f"leaf O={name.project_slug!r} is not project {project_slug!r}")


# (id(crl), issuer) -> (crl, signature valid). The CRL itself is kept in the value so its id
# cannot be reused while the entry lives; the platform checks the same few CRLs on every
# handshake, and a signature check costs as much as the rest of the path.
_CRL_SIGNATURES: dict[
    tuple[int, x509.Certificate], tuple[x509.CertificateRevocationList, bool]
] = {}
_CRL_SIGNATURES_MAX = 1024


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = (id(crl), issuer)
    entry = _CRL_SIGNATURES.get(key)
    if entry is not None and entry[0] is crl:
        return entry[1]
    valid = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    if len(_CRL_SIGNATURES) >= _CRL_SIGNATURES_MAX:
        _CRL_SIGNATURES.clear()
    _CRL_SIGNATURES[key] = (crl, valid)
    return valid


def check_revocation(
    path: VerifiedPath,
    crls: Sequence[x509.CertificateRevocationList],
    *,
    at: dt.datetime | None = None,
    require_current: bool = False,
) -> None:
    """Raise VerificationError if a certificate in ``path`` is listed on a CRL of its issuer.

    Each CRL's signature is checked against the issuer it names; a CRL that does not verify is
    an error, not silently ignored. ``require_current`` also refuses a CRL past its nextUpdate,
    as openssl does (the platform keeps using the last CRL uploaded rather than lock devices out).
    """
    at = at or dt.datetime.now(dt.UTC)
    certs = path.certificates
    for cert, issuer in itertools.pairwise(certs):
        for crl in crls:
            if crl.issuer != issuer.subject:
                continue
            if not _crl_signed_by(crl, issuer):
                raise VerificationError(f"CRL of {describe(issuer)} has an invalid signature")
            next_update = crl.next_update_utc
            if require_current and next_update is not None and next_update < at:
                raise VerificationError(
                    f"CRL of {describe(issuer)} is out of date "
                    f"(nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ})"
                )
            revoked = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if revoked is not None:
                raise VerificationError(
                    f"certificate serial {cert.serial_number:x} is revoked "
                    f"(since {revoked.revocation_date_utc:%Y-%m-%dT%H:%M:%SZ})"
                )
