"""Project slug and certificate-ID grammar; building and parsing the device subject."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetpki.der import OID_COMMON_NAME, OID_ORGANIZATION, UTF8_STRING, der_bounds
from fleetpki.errors import InputError

SLUG_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
CERTIFICATE_ID_MAX = 64  # RFC 5280 upper bound for commonName
CERTIFICATE_ID_CHARS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-:@"
)
# Never accepted, whatever a policy widens: they break DN string forms, paths or shells.
FORBIDDEN_CHARS = frozenset('/\\,+="<>;')
# An ID of CERTIFICATE_ID_CHARS only, of allowed length: valid without the per-character loop.
_PLAIN_ID = re.compile(rf"[A-Za-z0-9._:@-]{{1,{CERTIFICATE_ID_MAX}}}")


def validate_project_slug(slug: str) -> str:
    """Return ``slug`` if it is a valid project slug; raise InputError saying why not."""
    if not isinstance(slug, str) or not SLUG_PATTERN.fullmatch(slug):
        raise InputError(
            f"invalid project slug {slug!r}: use 1-63 lowercase letters, digits and '-', "
            "not starting or ending with '-'"
        )
    return slug


def validate_certificate_id(certificate_id: str, extra_chars: str = "") -> str:
    """Return ``certificate_id`` if valid; raise InputError saying why not.

    ``extra_chars`` widens the alphabet (a policy knob); control characters, whitespace at the
    ends and the characters in FORBIDDEN_CHARS are refused regardless.
    """
    if not extra_chars and isinstance(certificate_id, str) and _PLAIN_ID.fullmatch(certificate_id):
        return certificate_id
    shown = repr(certificate_id)
    if not isinstance(certificate_id, str) or certificate_id == "":
        raise InputError("invalid certificate ID: it is empty")
    if len(certificate_id) > CERTIFICATE_ID_MAX:
        raise InputError(
            f"invalid certificate ID {shown[:40]}...: {len(certificate_id)} characters, "
            f"at most {CERTIFICATE_ID_MAX}"
        )
    if certificate_id != certificate_id.strip():
        raise InputError(f"invalid certificate ID {shown}: whitespace at the ends")
    allowed = CERTIFICATE_ID_CHARS | (frozenset(extra_chars) - FORBIDDEN_CHARS)
    for ch in certificate_id:
        if ch in FORBIDDEN_CHARS or not ch.isprintable() or ch not in allowed:
            raise InputError(
                f"invalid certificate ID {shown}: character {ch!r} is not allowed "
                "(use A-Z a-z 0-9 . _ - : @)"
            )
    return certificate_id


def device_subject(project_slug: str, certificate_id: str) -> x509.Name:
    """The device subject ``O=<project slug>, CN=<certificate ID>``; raises InputError."""
    validate_project_slug(project_slug)
    validate_certificate_id(certificate_id)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, project_slug),
            x509.NameAttribute(NameOID.COMMON_NAME, certificate_id),
        ]
    )


@dataclass(frozen=True, slots=True)
class DeviceName:
    """What the platform reads from a device subject: the project (O) and certificate ID (CN)."""

    project_slug: str | None
    certificate_id: str | None


class _HasSubject(Protocol):
    @property
    def subject(self) -> x509.Name: ...


def read_subject(obj: _HasSubject) -> x509.Name:
    """``obj.subject`` of a certificate or CSR, without cryptography's UserWarning for
    out-of-range attribute lengths (an empty or 65-character CN): callers refuse those with a
    one-line error of their own, and a warning on stderr would break that line.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return obj.subject


def _single(name: x509.Name, oid: x509.ObjectIdentifier, label: str) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if not values:
        return None
    if len(values) > 1:
        raise InputError(f"subject has {len(values)} {label} attributes, expected one")
    value = values[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def parse_device_subject(name: x509.Name) -> DeviceName:
    """Read O and CN from a subject (other attributes ignored); raises InputError on duplicates."""
    return DeviceName(
        project_slug=_single(name, NameOID.ORGANIZATION_NAME, "O"),
        certificate_id=_single(name, NameOID.COMMON_NAME, "CN"),
    )


def parse_simple_device_subject(name: bytes, start: int, end: int) -> DeviceName | None:
    """O and CN from the DER Name at ``name[start:end]``, or None for anything unusual.

    The common device subject (single-valued RDNs of O and CN only, each at most once, as
    UTF8String) read without building ``x509.Name`` objects. None means
    "use ``parse_device_subject``": duplicates, other attributes, other string types and bad
    UTF-8 all take that path, so its results and messages stay the only ones.
    """
    try:
        if name[start] != 0x30:
            return None
        pos, stop = der_bounds(name, start, end)
        found: dict[bytes, str] = {}
        while pos < stop:
            if name[pos] != 0x31:
                return None
            atv, rdn_end = der_bounds(name, pos, stop)
            if name[atv] != 0x30:
                return None
            body, atv_end = der_bounds(name, atv, rdn_end)
            oid = name[body : body + 5]
            if atv_end != rdn_end or oid not in (OID_ORGANIZATION, OID_COMMON_NAME) or oid in found:
                return None
            value = body + 5
            if name[value] != UTF8_STRING:
                return None
            text, value_end = der_bounds(name, value, atv_end)
            if value_end != atv_end:
                return None
            found[oid] = name[text:value_end].decode("utf-8")
            pos = rdn_end
        if pos != stop or not found:
            return None
    except (IndexError, ValueError):  # UnicodeDecodeError included
        return None
    return DeviceName(
        project_slug=found.get(OID_ORGANIZATION), certificate_id=found.get(OID_COMMON_NAME)
    )
