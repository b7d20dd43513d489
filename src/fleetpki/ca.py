"""The CA: create a root or intermediate, adopt one made with openssl, sign CSRs and CRLs.

A CertificateAuthority holds a certificate and a Signer; it never touches files or the
inventory (that is fleetpki.home's job), so HSM-backed signers slot in unchanged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetpki import profiles
from fleetpki.csr import CheckedRequest, check_csr
from fleetpki.errors import InputError, PolicyError
from fleetpki.keys import (
    KeyFileSigner,
    KeyType,
    PrivateKey,
    Signer,
    generate_private_key,
    key_type_of,
)
from fleetpki.naming import device_subject
from fleetpki.verify import check_ca_certificate, check_validity

REVOCATION_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
}


def ca_subject(common_name: str) -> x509.Name:
    """A CA subject ``CN=<common_name>``; raises InputError if the name is unusable."""
    if not common_name or len(common_name) > 64 or not common_name.isprintable():
        raise InputError(f"invalid CA common name {common_name!r}: 1-64 printable characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and the signer for its key; ``chain`` lists its issuers up to the root."""

    name: str
    certificate: x509.Certificate
    signer: Signer = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def create_root(
        cls,
        name: str,
        *,
        common_name: str | None = None,
        key_type: KeyType | str = KeyType.P256,
        days: int | None = None,
        key: PrivateKey | None = None,
    ) -> tuple[CertificateAuthority, PrivateKey]:
        """A new self-signed root (profile ROOT) and its key; raises InputError."""
        key = key or generate_private_key(key_type)
        signer = KeyFileSigner(key)
        subject = ca_subject(common_name or name)
        cert = profiles.ROOT.builder(
            subject=subject, public_key=signer.public_key(), issuer=None, days=days
        ).sign(signer.builder_key(), signer.hash_algorithm())
        return cls(name, cert, signer), key

    def create_intermediate(
        self,
        name: str,
        *,
        common_name: str | None = None,
        key_type: KeyType | str | None = None,
        days: int | None = None,
        key: PrivateKey | None = None,
    ) -> tuple[CertificateAuthority, PrivateKey]:
        """A new intermediate CA (pathlen 0) signed by this CA, and its key; raises InputError."""
        self._check_can_issue_ca()
        key = key or generate_private_key(key_type or key_type_of(self.signer.public_key()))
        cert = profiles.INTERMEDIATE.builder(
            subject=ca_subject(common_name or name),
            public_key=key.public_key(),
            issuer=self.certificate,
            days=days,
        ).sign(self.signer.builder_key(), self.signer.hash_algorithm())
        return CertificateAuthority(
            name, cert, KeyFileSigner(key), (self.certificate, *self.chain)
        ), key

    def _check_can_issue_ca(self) -> None:
        try:
            bc = self.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return
        if bc.path_length == 0:
            raise PolicyError(f"CA {self.name!r} has pathlen 0: it can sign devices, not other CAs")

    @classmethod
    def adopt(
        cls,
        name: str,
        certificate: x509.Certificate,
        signer: Signer,
        chain: Iterable[x509.Certificate] = (),
    ) -> CertificateAuthority:
        """Adopt an existing CA (e.g. made with openssl): checks it is a CA and the key matches.

        Raises InputError.
        """
        from fleetpki.errors import VerificationError

        try:
            check_ca_certificate(certificate, anchor=certificate.subject == certificate.issuer)
        except VerificationError:
            raise InputError(
                "the certificate is not a CA certificate (needs basicConstraints CA:TRUE)"
            ) from None
        if certificate.public_key() != signer.public_key():
            raise InputError("the key does not belong to the certificate")
        try:
            check_validity(certificate, profiles.utcnow(), "the CA certificate")
        except VerificationError as exc:
            raise InputError(f"{exc}: it cannot sign") from None
        return cls(name, certificate, signer, tuple(chain))

    def issue(
        self,
        request: CheckedRequest,
        *,
        days: int | None = None,
        serial_number: int | None = None,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """Sign a checked request into a device certificate (profile DEVICE)."""
        return profiles.DEVICE.builder(
            subject=device_subject(request.project_slug, request.certificate_id),
            public_key=request.public_key,
            issuer=self.certificate,
            days=days,
            serial_number=serial_number,
            now=now,
        ).sign(self.signer.builder_key(), self.signer.hash_algorithm())

    def sign_csr(
        self,
        csr: x509.CertificateSigningRequest,
        project_slug: str,
        *,
        certificate_id: str | None = None,
        days: int | None = None,
    ) -> x509.Certificate:
        """Check ``csr`` against the policy and sign it; raises InputError or PolicyError."""
        return self.issue(check_csr(csr, project_slug, certificate_id), days=days)

    def sign_crl(
        self,
        revoked: Iterable[tuple[int, dt.datetime, str]],
        *,
        crl_number: int,
        next_update_days: int = 30,
    ) -> x509.CertificateRevocationList:
        """A CRL of (serial, revocation time, reason) entries, with CRL number and AKI."""
        now = profiles.utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=next_update_days))
            .add_extension(profiles.authority_key_identifier(self.certificate), critical=False)
            .add_extension(x509.CRLNumber(crl_number), critical=False)
        )
        for serial, when, reason in revoked:
            entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
            flag = REVOCATION_REASONS.get(reason, x509.ReasonFlags.unspecified)
            if flag is not x509.ReasonFlags.unspecified:
                entry = entry.add_extension(x509.CRLReason(flag), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        return builder.sign(self.signer.builder_key(), self.signer.hash_algorithm())
