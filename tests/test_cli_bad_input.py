"""Bad input: non-zero exit, one line on stderr, no traceback, no output file, no inventory row."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority, ca_subject
from fleetpki.csr import create_csr
from fleetpki.home import Home
from fleetpki.keys import KeyFileSigner, generate_private_key
from fleetpki_testing import Hierarchy, inventory_rows, run_fleetpki, write_csr

LOCKED_PASSPHRASE = "the-right-one"


@dataclass(frozen=True)
class Inputs:
    hierarchy: Hierarchy
    files: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.files[name]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, hierarchy: Hierarchy) -> Inputs:
    where = tmp_path_factory.mktemp("bad-input")
    home = hierarchy.home
    # One encrypted CA for the passphrase cases.
    home.create_intermediate(
        "locked", parent="root", parent_passphrase=None, passphrase=LOCKED_PASSPHRASE.encode()
    )
    _add_expired_ca(home)
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = where / name
        files[name].write_bytes(data)

    good = create_csr(generate_private_key(), "acme", "fresh-1")
    good_pem = good.public_bytes(serialization.Encoding.PEM)
    put("good.csr.pem", good_pem)
    put("garbage.bin", os.urandom(300))
    put("truncated.csr.pem", good_pem[: len(good_pem) // 2])
    put("empty.pem", b"")
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x40  # inside the signature's r/s integers
    put("tampered.csr.der", bytes(der))
    put("tampered.csr.pem", serialization_pem(bytes(der)))
    write_csr(where / "other-project.csr.pem", "other", "dev-1")
    files["other-project.csr.pem"] = where / "other-project.csr.pem"
    for label, cid in BAD_IDS.items():
        write_csr(where / f"cn-{label}.csr.pem", "acme", cid)
        files[f"cn-{label}.csr.pem"] = where / f"cn-{label}.csr.pem"
    taken = create_csr(generate_private_key(), "acme", "taken-1")
    put("taken.csr.pem", taken.public_bytes(serialization.Encoding.PEM))
    cert = home.sign(hierarchy.intermediate, taken, project_slug="acme")
    put("cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    put("cert.der", cert.public_bytes(serialization.Encoding.DER))
    put(
        "key.pem", b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49\n-----END PRIVATE KEY-----\n"
    )
    put(
        "legacy.key.pem",
        generate_private_key("rsa2048").private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"pw"),
        ),
    )
    return Inputs(hierarchy, files)


def _add_expired_ca(home: Home) -> None:
    """A root that expired last week, stored as if it had been made back then."""
    key = generate_private_key()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    cert = profiles.ROOT.builder(
        subject=ca_subject("Expired CA"),
        public_key=key.public_key(),
        issuer=None,
        days=23,
        now=past,
    ).sign(key, hashes.SHA256())
    ca = CertificateAuthority("expired", cert, KeyFileSigner(key))
    home._save_ca(ca, key, kind="root", parent=None, passphrase=None)


def serialization_pem(der: bytes) -> bytes:
    from fleetpki.der import pem_armor

    return pem_armor("CERTIFICATE REQUEST", der)


BAD_IDS = {"slash": "dev/1", "long": "a" * 65, "space": " dev1", "nul": "dev\x001", "empty": ""}

Args = Callable[[Inputs, Path], list[str | Path]]


def corrupt(label: str, command: str) -> Args:
    """A PEM block whose base64 is fine but whose DER is not a {label}."""

    def args(i: Inputs, out: Path) -> list[str | Path]:
        path = i["good.csr.pem"].with_name(f"corrupt-{label.replace(' ', '-')}.pem")
        path.write_text(f"-----BEGIN {label}-----\nMAMCAQA=\n-----END {label}-----\n")
        return [command, path] + (["--to", "der", "--out", out] if command == "convert" else [])

    return args


@dataclass(frozen=True)
class Case:
    name: str
    args: Args
    message: str
    passphrase: str | None = None
    out_exists: bool = False
    env: dict[str, str] = field(default_factory=dict)


def _sign(csr: str, *extra: str, ca: str = "factory") -> Args:
    return lambda i, out: ["sign", i[csr], "--ca", ca, "--project", "acme", "--out", out, *extra]


CASES = [
    Case("garbage", _sign("garbage.bin"), "not a certificate, CSR, CRL or key"),
    Case("truncated-pem", _sign("truncated.csr.pem"), "truncated or malformed PEM"),
    Case("empty-file", _sign("empty.pem"), "the file is empty"),
    Case("certificate-not-csr", _sign("cert.pem"), "expected a csr, found certificate"),
    Case("tampered-csr-der", _sign("tampered.csr.der"), "CSR signature does not verify"),
    Case("tampered-csr-pem", _sign("tampered.csr.pem"), "CSR signature does not verify"),
    Case("csr-o-not-project", _sign("other-project.csr.pem"), "does not match project 'acme'"),
    Case("id-differs-from-cn", _sign("good.csr.pem", "--id", "fresh-2"), "differs from the CSR"),
    Case(
        "missing-csr",
        lambda i, out: [
            "sign",
            i["good.csr.pem"].with_name("nope.pem"),
            "--ca",
            "factory",
            "--project",
            "acme",
            "--out",
            out,
        ],
        "no such file",
    ),
    Case(
        "bad-project",
        lambda i, out: [
            "sign",
            i["good.csr.pem"],
            "--ca",
            "factory",
            "--project",
            "Acme",
            "--out",
            out,
        ],
        "invalid project slug",
    ),
    *[
        Case(f"option-id-{label}", _sign("good.csr.pem", "--id", cid), "invalid certificate ID")
        for label, cid in BAD_IDS.items()
        if label != "nul"  # argv cannot carry NUL; the CSR cases below can
    ],
    *[
        Case(f"csr-cn-{label}", _sign(f"cn-{label}.csr.pem"), "invalid certificate ID")
        for label in BAD_IDS
        if label != "empty"
    ],
    Case("csr-cn-empty", _sign("cn-empty.csr.pem"), ""),  # refused as invalid or absent ID
    Case(
        "wrong-passphrase",
        _sign("good.csr.pem", ca="locked"),
        "wrong passphrase",
        passphrase="not-it",
    ),
    Case("no-passphrase", _sign("good.csr.pem", ca="locked"), "a passphrase is needed"),
    Case(
        "empty-passphrase-file",
        _sign("good.csr.pem", "--passphrase-file", os.devnull, ca="locked"),
        "is empty",
    ),
    Case("expired-ca", _sign("good.csr.pem", ca="expired"), "expired"),
    Case(
        "expired-ca-intermediate",
        lambda i, out: [
            "ca",
            "intermediate",
            "--name",
            "junk",
            "--parent",
            "expired",
            "--no-passphrase",
        ],
        "it cannot issue",
    ),
    Case("unknown-ca", _sign("good.csr.pem", ca="nope"), "unknown CA 'nope'"),
    Case("invalid-ca-name", _sign("good.csr.pem", ca="../root"), "invalid CA name"),
    Case("out-exists", _sign("good.csr.pem"), "already exists (use --force", out_exists=True),
    Case("same-id-without-renew", _sign("taken.csr.pem"), "use --renew"),
    Case(
        "out-folder-missing",
        lambda i, out: [
            "sign",
            i["good.csr.pem"],
            "--ca",
            "factory",
            "--project",
            "acme",
            "--out",
            out.parent / "missing" / "x.pem",
        ],
        "does not exist",
    ),
    Case("days-past-9999", _sign("good.csr.pem", "--days", "99999999"), "after the year 9999"),
    Case(
        "inspect-legacy-encrypted-pem",
        lambda i, out: ["inspect", i["legacy.key.pem"]],
        "legacy OpenSSL-encrypted PEM",
    ),
    Case("der-with-chain", _sign("good.csr.pem", "--der", "--chain"), "DER holds one"),
    Case(
        "device-issue-bad-id",
        lambda i, out: [
            "device",
            "issue",
            "--ca",
            "factory",
            "--project",
            "acme",
            "--id",
            "dev/1",
            "--out-dir",
            out,
        ],
        "invalid certificate ID",
    ),
    Case(
        "device-issue-taken",
        lambda i, out: [
            "device",
            "issue",
            "--ca",
            "factory",
            "--project",
            "acme",
            "--id",
            "taken-1",
            "--out-dir",
            out,
        ],
        "use --renew",
    ),
    Case(
        "convert-garbage",
        lambda i, out: ["convert", i["garbage.bin"], "--to", "der", "--out", out],
        "not a certificate",
    ),
    Case(
        "convert-bad-format",
        lambda i, out: ["convert", i["cert.pem"], "--to", "p7b", "--out", out],
        "unknown format",
    ),
    *[
        Case(
            f"corrupt-der-in-{label.split()[-1].lower()}-pem", corrupt(label, command), "malformed"
        )
        for label in ("CERTIFICATE", "PRIVATE KEY", "X509 CRL", "CERTIFICATE REQUEST")
        for command in ("inspect", "convert")
    ],
    Case("inspect-truncated", lambda i, out: ["inspect", i["truncated.csr.pem"]], "truncated"),
    Case("lint-garbage", lambda i, out: ["lint", i["garbage.bin"]], "not a certificate"),
    Case(
        "verify-garbage",
        lambda i, out: ["verify", i["cert.pem"], "--ca-file", i["garbage.bin"]],
        "not a certificate",
    ),
    Case(
        "csr-create-bad-key",
        lambda i, out: [
            "csr",
            "create",
            "--key",
            i["key.pem"],
            "--project",
            "acme",
            "--id",
            "d1",
            "--out",
            out,
        ],
        "not a readable private key",
    ),
    Case(
        "csr-create-certificate-as-key",
        lambda i, out: [
            "csr",
            "create",
            "--key",
            i["cert.der"],
            "--project",
            "acme",
            "--id",
            "d1",
            "--out",
            out,
        ],
        "not a readable private key",
    ),
    Case(
        "csr-create-bad-id",
        lambda i, out: [
            "csr",
            "create",
            "--key",
            i["key.pem"],
            "--project",
            "acme",
            "--id",
            " dev1",
            "--out",
            out,
        ],
        "whitespace",
    ),
    Case(
        "import-garbage",
        lambda i, out: [
            "ca",
            "import",
            "--name",
            "junk",
            "--cert",
            i["garbage.bin"],
            "--key",
            i["key.pem"],
            "--no-passphrase",
        ],
        "not a",
    ),
    Case(
        "import-device-cert",
        lambda i, out: [
            "ca",
            "import",
            "--name",
            "junk",
            "--cert",
            i["cert.pem"],
            "--key",
            i["hierarchy-key"],
            "--no-passphrase",
        ],
        "not a CA",
    ),
    Case(
        "ca-init-exists",
        lambda i, out: ["ca", "init", "--name", "root", "--no-passphrase"],
        "already exists",
    ),
    Case("ca-export-unknown", lambda i, out: ["ca", "export", "nope", "--out", out], "unknown CA"),
    Case(
        "revoke-unknown-serial",
        lambda i, out: ["revoke", "--serial", "abcdef"],
        "no certificate with serial",
    ),
    Case(
        "revoke-bad-reason",
        lambda i, out: ["revoke", "--serial", "abcdef", "--reason", "x"],
        "unknown reason",
    ),
    Case(
        "crl-wrong-passphrase",
        lambda i, out: ["crl", "--ca", "locked", "--out", out],
        "wrong passphrase",
        passphrase="not-it",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case: Case, inputs: Inputs, tmp_path: Path) -> None:
    inputs.files.setdefault("hierarchy-key", inputs.hierarchy.path / "cas/root/ca.key.pem")
    home = inputs.hierarchy.path
    out = tmp_path / "out.pem"
    if case.out_exists:
        out.write_bytes(b"keep me")
    before = inventory_rows(home)
    listing = sorted(p.name for p in tmp_path.iterdir())
    rc, stdout, stderr = run_fleetpki(
        *case.args(inputs, out), home=home, passphrase=case.passphrase, env=case.env
    )
    assert rc != 0
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert case.message in stderr
    assert "Traceback" not in stdout + stderr
    assert LOCKED_PASSPHRASE not in stdout + stderr
    if case.out_exists:
        assert out.read_bytes() == b"keep me"
    else:
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no stray files either
    assert inventory_rows(home) == before
    assert "junk" not in inputs.hierarchy.home.ca_names()


def test_der_where_pem_expected_and_vice_versa(inputs: Inputs, tmp_path: Path) -> None:
    home = inputs.hierarchy.path
    key = generate_private_key()
    # DER bytes in a file named .pem, and PEM text in a file named .der: content decides.
    csr = create_csr(key, "acme", "swap-1")
    der_named_pem = tmp_path / "req.pem"
    der_named_pem.write_bytes(csr.public_bytes(serialization.Encoding.DER))
    rc, _, err = run_fleetpki("sign", der_named_pem, "--ca", "factory", "--project", "acme",
                              "--der", "--out", tmp_path / "c.pem", home=home)  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "c.pem").read_bytes()[:1] == b"\x30"  # --der was asked for
    pem_named_der = tmp_path / "cert.der"
    pem_named_der.write_bytes(serialization_pem_cert((tmp_path / "c.pem").read_bytes()))
    rc, out, err = run_fleetpki("verify", pem_named_der, "--ca-file", inputs.hierarchy.chain_file,
                                "--project", "acme", home=home)  # fmt: skip
    assert rc == 0, err
    assert out.startswith("OK: ")


def serialization_pem_cert(der: bytes) -> bytes:
    from fleetpki.der import pem_armor

    return pem_armor("CERTIFICATE", der)
