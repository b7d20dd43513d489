"""Project slug and certificate-ID grammar, device subject build/parse."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from fleetpki.errors import InputError
from fleetpki.naming import (
    device_subject,
    parse_device_subject,
    parse_simple_device_subject,
    validate_certificate_id,
    validate_project_slug,
)


@pytest.mark.parametrize("slug", ["a", "acme", "acme-prod-2", "0", "a" * 63, "a-b"])
def test_valid_slugs(slug: str) -> None:
    assert validate_project_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "-acme", "acme-", "Acme", "ac_me", "a" * 64, "ac me", "acme\n", "é"]
)
def test_invalid_slugs(slug: str) -> None:
    with pytest.raises(InputError, match="invalid project slug"):
        validate_project_slug(slug)


@pytest.mark.parametrize(
    "certificate_id",
    ["a", "dev-0001", "A.b_c-d:e@f", "x" * 64, "00:11:22:33:44:55", "sensor@site.example"],
)
def test_valid_certificate_ids(certificate_id: str) -> None:
    assert validate_certificate_id(certificate_id) == certificate_id


@pytest.mark.parametrize(
    ("certificate_id", "reason"),
    [
        ("", "empty"),
        ("a" * 65, "65 characters"),
        (" dev1", "whitespace"),
        ("dev1 ", "whitespace"),
        ("dev\x001", "not allowed"),
        ("dev\n1", "not allowed"),
        ("dev/1", "'/'"),
        ("dev\\1", "not allowed"),
        ("dev,1", "not allowed"),
        ("dev+1", "not allowed"),
        ("dev=1", "not allowed"),
        ('dev"1', "not allowed"),
        ("dev<1>", "not allowed"),
        ("dev;1", "not allowed"),
        ("dev 1", "not allowed"),
        ("dévice", "not allowed"),
    ],
)
def test_invalid_certificate_ids(certificate_id: str, reason: str) -> None:
    with pytest.raises(InputError, match=reason) as info:
        validate_certificate_id(certificate_id)
    assert "\n" not in str(info.value)


def test_policy_knob_widens_but_never_forbidden_chars() -> None:
    assert validate_certificate_id("dev#1", extra_chars="#") == "dev#1"
    with pytest.raises(InputError):
        validate_certificate_id("dev#1")
    for ch in '/\\,+="<>;':
        with pytest.raises(InputError):
            validate_certificate_id(f"dev{ch}1", extra_chars=ch)
    with pytest.raises(InputError):
        validate_certificate_id("dev\x001", extra_chars="\x00")


def test_device_subject_round_trip() -> None:
    name = device_subject("acme", "dev-0001")
    assert name.rfc4514_string() == "CN=dev-0001,O=acme"
    parsed = parse_device_subject(name)
    assert (parsed.project_slug, parsed.certificate_id) == ("acme", "dev-0001")


def test_device_subject_validates() -> None:
    with pytest.raises(InputError):
        device_subject("ACME", "dev1")
    with pytest.raises(InputError):
        device_subject("acme", "dev/1")


def test_parse_ignores_other_attributes_and_refuses_duplicates() -> None:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
            x509.NameAttribute(NameOID.COMMON_NAME, "dev1"),
        ]
    )
    assert parse_device_subject(name).certificate_id == "dev1"
    missing = parse_device_subject(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
    assert missing.project_slug is None
    doubled = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "a"),
            x509.NameAttribute(NameOID.COMMON_NAME, "b"),
        ]
    )
    with pytest.raises(InputError, match="2 CN"):
        parse_device_subject(doubled)


def _attr(
    oid: x509.ObjectIdentifier, value: str, kind: _ASN1Type = _ASN1Type.UTF8String
) -> x509.NameAttribute[str]:
    # _validate=False: CSRs can carry the empty and over-long CNs the constructor refuses.
    return x509.NameAttribute(oid, value, kind, _validate=False)


@pytest.mark.filterwarnings("ignore::UserWarning")  # reading back the out-of-range CNs
@pytest.mark.parametrize(
    ("rdns", "fast"),
    [
        ([[(NameOID.ORGANIZATION_NAME, "acme")], [(NameOID.COMMON_NAME, "dev-1")]], True),
        ([[(NameOID.COMMON_NAME, "dev-1")], [(NameOID.ORGANIZATION_NAME, "acme")]], True),
        ([[(NameOID.COMMON_NAME, "dév ü")]], True),
        ([[(NameOID.ORGANIZATION_NAME, "acme")]], True),
        ([[(NameOID.COMMON_NAME, "")]], True),
        ([[(NameOID.COMMON_NAME, "x" * 65)]], True),
        ([[(NameOID.COMMON_NAME, "x" * 200)], [(NameOID.ORGANIZATION_NAME, "a" * 140)]], True),
        ([[(NameOID.COMMON_NAME, "a")], [(NameOID.COMMON_NAME, "b")]], False),
        ([[(NameOID.COUNTRY_NAME, "DE")], [(NameOID.COMMON_NAME, "dev1")]], False),
        ([[(NameOID.ORGANIZATION_NAME, "acme"), (NameOID.COMMON_NAME, "dev1")]], False),
        ([[(NameOID.COMMON_NAME, "dev1", _ASN1Type.PrintableString)]], False),
        ([], False),
    ],
)
def test_simple_subject_parse_agrees_or_defers(rdns: list[list[Any]], fast: bool) -> None:
    """The DER fast path gives parse_device_subject's result, or None (use the slow path)."""
    name = x509.Name([x509.RelativeDistinguishedName([_attr(*a) for a in rdn]) for rdn in rdns])
    der = b"\x00" + name.public_bytes() + b"\x30\x00"  # offsets inside a larger buffer
    got = parse_simple_device_subject(der, 1, len(der) - 2)
    if not fast:
        assert got is None
        return
    assert got == parse_device_subject(name)


def test_simple_subject_parse_defers_on_bad_der() -> None:
    good = device_subject("acme", "dev1").public_bytes()
    for bad in (good[:-1], good[:5], b"\x30\x05\x31\x03\x30\x01\x06", b"\x31\x00"):
        assert parse_simple_device_subject(bad, 0, len(bad)) is None
    bad_utf8 = good.replace(b"dev1", b"de\xff1")
    assert parse_simple_device_subject(bad_utf8, 0, len(bad_utf8)) is None
