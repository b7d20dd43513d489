"""`fleetpki sign` says when a certificate's lifetime was cut to its CA's."""

from __future__ import annotations

import json
from pathlib import Path

from fleetpki_testing import Hierarchy, RunCli, write_csr


def test_lifetime_past_the_ca_is_cut_and_said(
    run_cli: RunCli, hierarchy: Hierarchy, tmp_path: Path
) -> None:
    csr = tmp_path / "long.csr"
    write_csr(csr, "acme", "long-lived")
    out = tmp_path / "long.crt"
    rc, stdout, stderr = run_cli("sign", csr, "--ca", "factory", "--project", "acme",
                                 "--days", "20000", "--out", out, home=hierarchy.path)  # fmt: skip
    assert rc == 0, stderr
    ca_end = hierarchy.intermediate.certificate.not_valid_after_utc
    assert f"note: notAfter cut to the CA's own notAfter, {ca_end:%Y-%m-%d}" in stdout

    csr2 = tmp_path / "short.csr"
    write_csr(csr2, "acme", "short-lived")
    rc, stdout, stderr = run_cli("sign", csr2, "--ca", "factory", "--project", "acme",
                                 "--days", "30", "--out", tmp_path / "short.crt", "--json",
                                 home=hierarchy.path)  # fmt: skip
    assert rc == 0, stderr
    assert json.loads(stdout)["clampedToCA"] is False
