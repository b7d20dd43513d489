"""Project slug and certificate-ID grammar, device subject build/parse."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetpki.errors import InputError
from fleetpki.naming import (
    device_subject,
    parse_device_subject,
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
