"""`fleetpki verify --crl` refuses a CRL past its nextUpdate, as openssl verify -crl_check does."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fleetpki.csr import create_csr
from fleetpki.keys import generate_private_key
from fleetpki_testing import Hierarchy, Openssl, RunCli


def test_stale_crl_is_refused_like_openssl(
    run_cli: RunCli, openssl: Openssl, hierarchy: Hierarchy, tmp_path: Path
) -> None:
    inter = hierarchy.intermediate
    cert = hierarchy.home.sign(
        inter, create_csr(generate_private_key(), "acme", "stale-crl"), project_slug="acme"
    )
    cert_file = tmp_path / "device.crt.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    now = dt.datetime.now(dt.UTC)
    stale = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(inter.certificate.subject)
        .last_update(now - dt.timedelta(days=10))
        .next_update(now - dt.timedelta(days=1))
        .sign(inter.signer.builder_key(), hashes.SHA256())
    )
    crl_file = tmp_path / "stale.crl.pem"
    crl_file.write_bytes(stale.public_bytes(serialization.Encoding.PEM))

    independent = openssl("verify", "-crl_check", "-CAfile", hierarchy.chain_file,
                          "-CRLfile", crl_file, cert_file, check=False)  # fmt: skip
    assert (
        independent.returncode != 0 and "CRL has expired" in independent.stdout + independent.stderr
    )

    rc, _, stderr = run_cli("verify", cert_file, "--ca-file", hierarchy.chain_file,
                            "--crl", crl_file, home=hierarchy.path)  # fmt: skip
    assert rc == 1
    assert stderr.strip().splitlines() == [
        f"error: CRL of {inter.certificate.subject.rfc4514_string()} is out of date "
        f"(nextUpdate {stale.next_update_utc:%Y-%m-%dT%H:%M:%SZ})"
    ]
