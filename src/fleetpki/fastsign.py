"""Device certificates at signature speed: the DEVICE profile as a DER template, signed raw.

cryptography's ``CertificateBuilder`` + ``sign`` costs about twice the raw signature. Here the
template is cut from a certificate that ``profiles.DEVICE.builder`` itself made for the same
issuer, lifetime and time, so every field but serial, subject, public key and subject key
identifier comes from the one profile code. ``DeviceTemplate`` checks that at construction (one
reference certificate rebuilt both ways, TBS compared byte for byte) and tests/test_bulk_fastsign.py
does it for many keys, IDs and CA types; when the comparison fails, ``TemplateError`` is raised
and callers use the builder instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import CheckedRequest
from fleetpki.der import (
    OID_COMMON_NAME,
    OID_ORGANIZATION,
    P256_SPKI_LENGTH,
    P256_SPKI_PREFIX,
    UTF8_STRING,
    der_bounds,
    tlv,
)
from fleetpki.errors import FleetPKIError
from fleetpki.keys import KeyFileSigner, PublicKey, Signer
from fleetpki.naming import device_subject, parse_device_subject

_OID_SKI = bytes.fromhex("0603551d0e")  # 2.5.29.14
_ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")  # AlgorithmIdentifier, no parameters
# IDs of these characters need no RFC 4514 escaping (naming.CERTIFICATE_ID_CHARS).
_PLAIN_SUBJECT = re.compile(r"[A-Za-z0-9._:@-]+")


class TemplateError(FleetPKIError):
    """The profile produced something the template cannot reproduce; use the builder."""


def _children(data: bytes) -> list[bytes]:
    """The encoded child elements of the constructed DER element ``data``."""
    try:
        pos, stop = der_bounds(data, 0, len(data))
        out = []
        while pos < stop:
            _start, end = der_bounds(data, pos, stop)
            out.append(data[pos:end])
            pos = end
    except (IndexError, ValueError):
        raise TemplateError("malformed DER in the reference certificate") from None
    if stop != len(data):
        raise TemplateError("malformed DER in the reference certificate")
    return out


def _content(element: bytes) -> bytes:
    start, end = der_bounds(element, 0, len(element))
    return element[start:end]


@functools.lru_cache(maxsize=64)
def _organization_rdn(project_slug: str) -> bytes:
    return tlv(0x31, tlv(0x30, OID_ORGANIZATION + tlv(UTF8_STRING, project_slug.encode())))


def subject_der(project_slug: str, certificate_id: str) -> bytes:
    """DER of ``O=<slug>, CN=<id>`` as ``naming.device_subject`` encodes it (UTF8String)."""
    cn = tlv(0x31, tlv(0x30, OID_COMMON_NAME + tlv(UTF8_STRING, certificate_id.encode())))
    return tlv(0x30, _organization_rdn(project_slug) + cn)


def subject_text(project_slug: str, certificate_id: str) -> str:
    """RFC 4514 text of the device subject, as ``x509.Name.rfc4514_string`` writes it."""
    if _PLAIN_SUBJECT.fullmatch(certificate_id):
        return f"CN={certificate_id},O={project_slug}"
    return device_subject(project_slug, certificate_id).rfc4514_string()


def spki_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_identifier(spki: bytes) -> bytes:
    """SHA-1 of the subjectPublicKey bits: what ``SubjectKeyIdentifier.from_public_key`` yields."""
    if len(spki) == P256_SPKI_LENGTH and spki.startswith(P256_SPKI_PREFIX):
        bits = spki[len(P256_SPKI_PREFIX) - 1 :]  # 04 || X || Y, the common case, unparsed
    else:
        bits = _content(_children(spki)[1])[1:]
    return hashlib.sha1(bits, usedforsecurity=False).digest()


def device_csr_der(
    key: ec.EllipticCurvePrivateKey,
    project_slug: str,
    certificate_id: str,
    spki: bytes | None = None,
) -> bytes:
    """A P-256 device CSR as ``csr.create_csr`` makes it (same signed bytes), without a builder.

    ``spki`` is the key's SubjectPublicKeyInfo DER when the caller has it already.
    """
    info = b"".join(
        (
            b"\x02\x01\x00",  # version 1
            subject_der(project_slug, certificate_id),
            spki if spki is not None else spki_der(key.public_key()),
            b"\xa0\x00",  # no attributes
        )
    )
    info = tlv(0x30, info)
    signature = key.sign(info, ec.ECDSA(hashes.SHA256()))
    return tlv(0x30, info + _ECDSA_SHA256 + tlv(0x03, b"\x00" + signature))


@dataclass(frozen=True, slots=True)
class FastCertificate:
    """One issued certificate: DER and what the inventory needs, without parsing it again."""

    der: bytes
    serial_number: int
    certificate_id: str
    project_slug: str
    not_before: dt.datetime
    not_after: dt.datetime
    spki: bytes

    @classmethod
    def from_der(cls, der: bytes) -> FastCertificate:
        """Describe a device certificate already issued (e.g. read back from the inventory)."""
        cert = x509.load_der_x509_certificate(der)
        name = parse_device_subject(cert.subject)
        return cls(
            der=der,
            serial_number=cert.serial_number,
            certificate_id=name.certificate_id or "",
            project_slug=name.project_slug or "",
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            spki=spki_der(cert.public_key()),  # type: ignore[arg-type]
        )

    @property
    def serial_hex(self) -> str:
        return f"{self.serial_number:x}"

    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _raw_signer(signer: Signer) -> Callable[[bytes], bytes]:
    """``signer.sign``, with the algorithm objects made once for an in-memory EC key.

    ``Signer.sign`` works out the hash and padding on every call (~10% of a certificate here).
    """
    if isinstance(signer, KeyFileSigner):
        key = signer.builder_key()
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = ec.ECDSA(signer.hash_algorithm())
            return lambda data: key.sign(data, algorithm)
    return signer.sign


class DeviceTemplate:
    """The DEVICE profile for one CA, lifetime and issuance time, as DER pieces to splice."""

    def __init__(self, ca: CertificateAuthority, *, days: int | None = None, now: dt.datetime):
        self.ca = ca
        self.days = days
        self.now = now
        signer = ca.signer
        self._sign = _raw_signer(signer)
        reference_key = signer.public_key()
        reference = profiles.DEVICE.builder(
            subject=device_subject("template", "template"),
            public_key=reference_key,
            issuer=ca.certificate,
            days=days,
            serial_number=profiles.new_serial_number(),
            now=now,
        ).sign(signer.builder_key(), signer.hash_algorithm())
        self.not_before = reference.not_valid_before_utc
        self.not_after = reference.not_valid_after_utc
        tbs = reference.tbs_certificate_bytes
        parts = _children(tbs)
        if len(parts) != 8 or parts[0][0] != 0xA0 or parts[7][0] != 0xA3:
            raise TemplateError("the device profile's TBS has an unexpected shape")
        version, _serial, algorithm, issuer, validity, _subject, _spki, extensions = parts
        self._head = version
        self._middle = algorithm + issuer + validity
        self._algorithm = algorithm
        before, after, ski_prefix = [], [], b""
        found = False
        for ext in _children(_content(extensions)):
            if ext[2 : 2 + len(_OID_SKI)] == _OID_SKI and ext[1] < 0x80:
                ski_prefix, found = ext[:-20], True
            elif found:
                after.append(ext)
            else:
                before.append(ext)
        if not found or ext_len_mismatch(ski_prefix):
            raise TemplateError("the device profile has no 20-byte subject key identifier")
        # The extensions have a fixed length (the SKI is always 20 bytes): their [3] and
        # SEQUENCE headers are computed once, the SKI bytes spliced between two constants.
        ext_before, ext_after = b"".join(before), b"".join(after)
        block = tlv(0xA3, tlv(0x30, ext_before + ski_prefix + bytes(20) + ext_after))
        self._ext_head = block[: len(block) - len(ext_after) - 20]
        self._ext_tail = ext_after
        # The self-check: rebuild the reference through the template, compare byte for byte.
        mine = self.tbs(reference.serial_number, "template", "template", spki_der(reference_key))
        if mine != tbs:
            raise TemplateError("the template does not reproduce the device profile")

    def tbs(self, serial_number: int, project_slug: str, certificate_id: str, spki: bytes) -> bytes:
        """The TBSCertificate DER for these variable fields."""
        serial = serial_number.to_bytes(serial_number.bit_length() // 8 + 1, "big")
        body = b"".join(
            (
                self._head,
                tlv(0x02, serial),
                self._middle,
                subject_der(project_slug, certificate_id),
                spki,
                self._ext_head,
                key_identifier(spki),
                self._ext_tail,
            )
        )
        return tlv(0x30, body)

    def issue(self, request: CheckedRequest, serial_number: int | None = None) -> FastCertificate:
        """Sign a checked request into a device certificate (DER), as ``ca.issue`` would."""
        serial_number = serial_number if serial_number is not None else profiles.new_serial_number()
        spki = request.spki or spki_der(request.public_key)
        tbs = self.tbs(serial_number, request.project_slug, request.certificate_id, spki)
        signature = self._sign(tbs)
        der = tlv(0x30, tbs + self._algorithm + tlv(0x03, b"\x00" + signature))
        return FastCertificate(
            der=der,
            serial_number=serial_number,
            certificate_id=request.certificate_id,
            project_slug=request.project_slug,
            not_before=self.not_before,
            not_after=self.not_after,
            spki=spki,
        )


def ext_len_mismatch(ski_prefix: bytes) -> bool:
    """Whether the SKI extension found is not the expected OCTET STRING { OCTET STRING(20) }."""
    return not ski_prefix.endswith(b"\x04\x16\x04\x14")
