"""Root, intermediate and device certificate profiles: validity and extensions, in one place.

Every profile yields certificates that pass pkilint's RFC 5280 linter with no finding at WARNING
or above (asserted in tests/test_lint.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from fleetpki.errors import InputError, PolicyError
from fleetpki.keys import PublicKey

BACKDATE = dt.timedelta(minutes=5)  # tolerate device clocks a little behind the CA's
SERIAL_BYTES = 20


def new_serial_number() -> int:
    """A positive serial that DER-encodes in exactly 20 octets, with 158 bits from the CSPRNG."""
    value = int.from_bytes(os.urandom(SERIAL_BYTES), "big") >> 1
    return value | (1 << (8 * SERIAL_BYTES - 2))


def utcnow() -> dt.datetime:
    """Now, UTC, whole seconds (X.509 times have no fractions)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class Profile:
    """What a kind of certificate looks like: default lifetime and its extension set."""

    name: str
    default_days: int
    is_ca: bool
    path_length: int | None
    extended_key_usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.CLIENT_AUTH

    def key_usage(self) -> x509.KeyUsage:
        """keyCertSign + cRLSign for CAs, digitalSignature for devices."""
        return x509.KeyUsage(
            digital_signature=not self.is_ca,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=self.is_ca,
            crl_sign=self.is_ca,
            encipher_only=False,
            decipher_only=False,
        )

    def builder(
        self,
        *,
        subject: x509.Name,
        public_key: PublicKey,
        issuer: x509.Certificate | None,
        days: int | None = None,
        serial_number: int | None = None,
        now: dt.datetime | None = None,
    ) -> x509.CertificateBuilder:
        """A CertificateBuilder with this profile's fields; ``issuer=None`` means self-signed.

        notAfter is clamped to the issuer's notAfter: a certificate must not outlive its CA.
        Raises InputError for a lifetime under one day or past the year 9999, PolicyError when
        the issuer has expired.
        """
        now = now or utcnow()
        chosen = days if days is not None else self.default_days
        if chosen < 1:
            raise InputError(f"invalid lifetime of {chosen} days: at least 1")
        not_before = now - BACKDATE
        try:
            not_after = now + dt.timedelta(days=chosen)
        except OverflowError:
            raise InputError(f"a lifetime of {chosen} days ends after the year 9999") from None
        if issuer is not None:
            if issuer.not_valid_after_utc <= not_before:
                raise PolicyError(
                    f"the issuing CA {issuer.subject.rfc4514_string()} expired "
                    f"({issuer.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}): it cannot issue"
                )
            not_after = min(not_after, issuer.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject if issuer is not None else subject)
            .public_key(public_key)
            .serial_number(serial_number if serial_number is not None else new_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(
                x509.BasicConstraints(ca=self.is_ca, path_length=self.path_length), critical=True
            )
            .add_extension(self.key_usage(), critical=True)
        )
        if not self.is_ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([self.extended_key_usage]), critical=False
            )
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        if issuer is not None:
            builder = builder.add_extension(authority_key_identifier(issuer), critical=False)
        return builder


def authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """AKI (key identifier only) from the issuer's SKI, or computed when the issuer has none."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        public_key = issuer.public_key()
        return x509.AuthorityKeyIdentifier(
            key_identifier=x509.SubjectKeyIdentifier.from_public_key(public_key).digest,  # type: ignore[arg-type]
            authority_cert_issuer=None,
            authority_cert_serial_number=None,
        )


ROOT = Profile(name="root", default_days=7300, is_ca=True, path_length=None)
INTERMEDIATE = Profile(name="intermediate", default_days=3650, is_ca=True, path_length=0)
DEVICE = Profile(name="device", default_days=3650, is_ca=False, path_length=None)
# The platform's own TLS server certificate; callers add server_alt_names() to the builder.
SERVER = Profile(
    name="server",
    default_days=397,
    is_ca=False,
    path_length=None,
    extended_key_usage=ExtendedKeyUsageOID.SERVER_AUTH,
)


def server_alt_names(names: Iterable[str]) -> x509.SubjectAlternativeName:
    """subjectAltName for a server: IP addresses as iPAddress, everything else as dNSName."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)
