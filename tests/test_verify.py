"""Chain building and device policy: the checks `fleetpki verify` and the platform share."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import VerificationError
from fleetpki.keys import KeyFileSigner, generate_private_key
from fleetpki.verify import build_path, check_device_leaf, check_revocation

NOW = dt.datetime.now(dt.UTC)


def _request(project: str = "acme", certificate_id: str = "dev-1") -> object:
    return check_csr(create_csr(generate_private_key(), project, certificate_id), project)


@pytest.fixture(scope="module")
def pki() -> dict[str, CertificateAuthority]:
    root, _ = CertificateAuthority.create_root("root")
    inter, _ = root.create_intermediate("factory")
    other_root, _ = CertificateAuthority.create_root("root")  # same name, other key
    return {"root": root, "inter": inter, "other": other_root}


def test_device_to_intermediate_to_root(pki: dict[str, CertificateAuthority]) -> None:
    leaf = pki["inter"].issue(_request())  # type: ignore[arg-type]
    path = build_path(leaf, [pki["inter"].certificate], [pki["root"].certificate])
    assert path.certificates == (leaf, pki["inter"].certificate, pki["root"].certificate)
    assert path.anchor == pki["root"].certificate and path.leaf == leaf
    check_device_leaf(leaf, "acme")
    # an intermediate may be the anchor itself
    assert len(build_path(leaf, [], [pki["inter"].certificate]).certificates) == 2


def test_missing_intermediate_and_wrong_root(pki: dict[str, CertificateAuthority]) -> None:
    leaf = pki["inter"].issue(_request())  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="issuer not found"):
        build_path(leaf, [], [pki["root"].certificate])
    direct = pki["root"].issue(_request())  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="does not verify"):
        build_path(direct, [], [pki["other"].certificate])


def test_expired_and_not_yet_valid(pki: dict[str, CertificateAuthority]) -> None:
    old = pki["inter"].issue(_request(), days=1, now=NOW - dt.timedelta(days=30))  # type: ignore[arg-type]
    chain = [pki["inter"].certificate]
    with pytest.raises(VerificationError, match="leaf certificate expired"):
        build_path(old, chain, [pki["root"].certificate])
    future = pki["inter"].issue(_request(), now=NOW + dt.timedelta(days=2))  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="not yet valid"):
        build_path(future, chain, [pki["root"].certificate])
    # the 5-minute backdate tolerates a device clock a little behind
    fresh = pki["inter"].issue(_request())  # type: ignore[arg-type]
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=3)
    build_path(fresh, chain, [pki["root"].certificate], at=at)


def test_intermediate_not_yet_valid(pki: dict[str, CertificateAuthority]) -> None:
    root = pki["root"]
    key = generate_private_key()
    # Leaves are clamped to their issuer's notAfter, so an issuer's validity window is probed
    # with one that starts in the future.
    cert = profiles.INTERMEDIATE.builder(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "later")]),
        public_key=key.public_key(),
        issuer=root.certificate,
        now=NOW + dt.timedelta(days=2),
    ).sign(root.signer.builder_key(), hashes.SHA256())
    later = CertificateAuthority("later", cert, KeyFileSigner(key))
    leaf = later.issue(_request())  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="intermediate CN=later not yet valid"):
        build_path(leaf, [cert], [root.certificate])


def test_wrong_project(pki: dict[str, CertificateAuthority]) -> None:
    leaf = pki["inter"].issue(_request("other"))  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="O='other' is not project 'acme'"):
        check_device_leaf(leaf, "acme")
    check_device_leaf(leaf, "other")


def test_leaf_signing_a_leaf_is_refused(pki: dict[str, CertificateAuthority]) -> None:
    # A device key signs another "device" certificate: leaf -> leaf -> CA must not verify.
    device_key = generate_private_key()
    request = check_csr(create_csr(device_key, "acme", "dev-a"), "acme")
    first = pki["inter"].issue(request)
    rogue_ca = CertificateAuthority("rogue", first, KeyFileSigner(device_key))
    second = rogue_ca.issue(_request("acme", "dev-b"))  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="is not a CA \\(CA:FALSE\\)"):
        build_path(second, [first, pki["inter"].certificate], [pki["root"].certificate])


def test_path_length_zero_is_enforced(pki: dict[str, CertificateAuthority]) -> None:
    inter = pki["inter"]
    sub_key = generate_private_key()
    # What create_intermediate refuses to do, done by hand: a CA under a pathlen:0 CA.
    sub_cert = profiles.INTERMEDIATE.builder(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sub")]),
        public_key=sub_key.public_key(),
        issuer=inter.certificate,
    ).sign(inter.signer.builder_key(), hashes.SHA256())
    sub = CertificateAuthority("sub", sub_cert, KeyFileSigner(sub_key))
    leaf = sub.issue(_request())  # type: ignore[arg-type]
    with pytest.raises(VerificationError, match="path length constraint of CN=factory exceeded"):
        build_path(leaf, [sub_cert, inter.certificate], [pki["root"].certificate])


def test_ca_as_leaf_and_wrong_usage_refused(pki: dict[str, CertificateAuthority]) -> None:
    with pytest.raises(VerificationError, match="is a CA certificate"):
        check_device_leaf(pki["inter"].certificate)
    key = generate_private_key()
    server = profiles.SERVER.builder(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "srv")]),
        public_key=key.public_key(),
        issuer=pki["inter"].certificate,
    ).sign(pki["inter"].signer.builder_key(), hashes.SHA256())
    with pytest.raises(VerificationError, match="does not allow clientAuth"):
        check_device_leaf(server)


def test_seed_style_v1_leaf_is_accepted(pki: dict[str, CertificateAuthority]) -> None:
    key = generate_private_key()
    root = pki["root"]
    v1 = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acme"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "seed-1"),
                ]
            )
        )
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(root.signer.builder_key(), hashes.SHA256())
    )
    build_path(v1, [], [root.certificate])
    check_device_leaf(v1, "acme")


def test_crl_revocation(pki: dict[str, CertificateAuthority]) -> None:
    inter, root = pki["inter"], pki["root"]
    leaf = inter.issue(_request())  # type: ignore[arg-type]
    other = inter.issue(_request("acme", "dev-2"))  # type: ignore[arg-type]
    path = build_path(leaf, [inter.certificate], [root.certificate])
    crl = inter.sign_crl([(leaf.serial_number, NOW, "keyCompromise")], crl_number=1)
    with pytest.raises(VerificationError, match=f"serial {leaf.serial_number:x} is revoked"):
        check_revocation(path, [crl])
    check_revocation(build_path(other, [inter.certificate], [root.certificate]), [crl])
    # a CRL naming the right issuer but signed by another key is an error, not ignored
    forged_ca = CertificateAuthority("f", inter.certificate, KeyFileSigner(generate_private_key()))
    forged = forged_ca.sign_crl([], crl_number=1)
    with pytest.raises(VerificationError, match="invalid signature"):
        check_revocation(path, [forged])
    # the root's CRL revoking the intermediate revokes the whole path
    root_crl = root.sign_crl([(inter.certificate.serial_number, NOW, "cACompromise")], crl_number=1)
    with pytest.raises(VerificationError, match="is revoked"):
        check_revocation(path, [root_crl])


def test_crl_past_next_update(pki: dict[str, CertificateAuthority]) -> None:
    inter, root = pki["inter"], pki["root"]
    leaf = inter.issue(_request("acme", "dev-stale"))  # type: ignore[arg-type]
    path = build_path(leaf, [inter.certificate], [root.certificate])
    crl = inter.sign_crl([], crl_number=7, next_update_days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    check_revocation(path, [crl], at=later)  # the platform keeps using the last CRL it has
    with pytest.raises(VerificationError, match=r"CRL of CN=.* is out of date"):
        check_revocation(path, [crl], at=later, require_current=True)
    check_revocation(path, [crl], require_current=True)  # current: fine


def test_crl_signature_verdict_is_remembered_per_issuer(
    pki: dict[str, CertificateAuthority],
) -> None:
    inter, root = pki["inter"], pki["root"]
    leaf = inter.issue(_request("acme", "dev-cache"))  # type: ignore[arg-type]
    path = build_path(leaf, [inter.certificate], [root.certificate])
    forged_ca = CertificateAuthority("f", inter.certificate, KeyFileSigner(generate_private_key()))
    forged = forged_ca.sign_crl([], crl_number=1)
    for _ in range(3):  # a cached verdict never turns a forged CRL into a good one
        with pytest.raises(VerificationError, match="invalid signature"):
            check_revocation(path, [forged])
    good = inter.sign_crl([(leaf.serial_number, NOW, "keyCompromise")], crl_number=2)
    for _ in range(3):
        with pytest.raises(VerificationError, match="is revoked"):
            check_revocation(path, [good])
