"""bulk sign / bulk issue through the library and the CLI: inputs, refusals, manifests, files."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.bulk import BulkRun, Summary
from fleetpki.bulk_inputs import CSRSource, device_ids
from fleetpki.bulk_journal import MANIFEST_FIELDS, Journal
from fleetpki.der import pem_armor
from fleetpki.fastsign import device_csr_der, spki_der
from fleetpki.keys import generate_private_key, load_private_key
from fleetpki_testing import Hierarchy, Openssl, RunCli, make_hierarchy, write_csr

UMASK = os.umask(0o022)
os.umask(UMASK)


def make_csrs(folder: Path, project: str, ids: list[str], *, pem_every: int = 2) -> list[Path]:
    """One CSR file per ID, alternately PEM and DER."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, certificate_id in enumerate(ids):
        der = device_csr_der(generate_private_key(), project, certificate_id)  # type: ignore[arg-type]
        pem = n % pem_every == 0
        path = folder / f"{certificate_id}.csr{'.pem' if pem else '.der'}"
        path.write_bytes(pem_armor("CERTIFICATE REQUEST", der) if pem else der)
        paths.append(path)
    return paths


def run_bulk(h: Hierarchy, source: Path, out: Path, project: str = "acme") -> Summary:
    run = BulkRun(
        inventory=h.home.inventory, ca=h.intermediate, project=project, out=out, mode="sign"
    )
    return run.run(CSRSource(source).items())


def openssl_verify_all(openssl: Openssl, h: Hierarchy, files: list[Path]) -> None:
    result = openssl("verify", "-CAfile", h.chain_file, *files)
    assert result.stdout.count(": OK") == len(files)


@pytest.fixture
def h(tmp_path: Path) -> Hierarchy:
    return make_hierarchy(tmp_path)


def test_folder_of_mixed_pem_der_with_bad_csrs(
    h: Hierarchy, tmp_path: Path, openssl: Openssl
) -> None:
    csrs = tmp_path / "csrs"
    ids = [f"dev-{n:04d}" for n in range(60)]
    make_csrs(csrs, "acme", ids)
    (csrs / "garbage.csr").write_bytes(b"not a CSR at all")
    (csrs / "huge.csr").write_bytes(b"0" * 70_000)
    write_csr(csrs / "wrong-project.csr.pem", "other", "dev-x")
    write_csr(csrs / "bad-id.csr.pem", "acme", "has space")
    tampered = bytearray(device_csr_der(generate_private_key(), "acme", "dev-t"))  # type: ignore[arg-type]
    tampered[40] ^= 0x01  # inside the subject: the signature no longer matches
    (csrs / "tampered.csr.der").write_bytes(bytes(tampered))
    out = tmp_path / "out"

    summary = run_bulk(h, csrs, out)

    assert summary.issued == 60 and summary.total == 65
    reasons = dict(summary.failures)
    assert "too large" in reasons["huge.csr"]
    assert set(reasons) == {
        "garbage.csr",
        "huge.csr",
        "wrong-project.csr.pem",
        "bad-id.csr.pem",
        "tampered.csr.der",
    }
    assert "does not match project" in reasons["wrong-project.csr.pem"]
    assert "not allowed" in reasons["bad-id.csr.pem"]
    assert "signature" in reasons["tampered.csr.der"] or "unreadable" in reasons["tampered.csr.der"]
    # every certificate file has its inventory row, and it is the same certificate
    rows = {r["certificate_id"]: r for r in h.home.inventory.find(project="acme")}
    assert set(rows) == set(ids)
    with open(out / "manifest.csv", newline="") as handle:
        manifest = list(csv.DictReader(handle))
    assert sorted(m["certificate_id"] for m in manifest) == ids
    for entry in manifest:
        der = (out / entry["crt_der"]).read_bytes()
        cert = x509.load_der_x509_certificate(der)
        assert entry["fingerprint_sha256"] == hashlib.sha256(der).hexdigest()
        assert (
            entry["serial"] == f"{cert.serial_number:x}" == rows[entry["certificate_id"]]["serial"]
        )
        assert entry["not_after"] == f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        assert (out / entry["crt_pem"]).read_bytes() == cert.public_bytes(
            serialization.Encoding.PEM
        )
        assert entry["source"].startswith(entry["certificate_id"] + ".csr")
        assert stat.S_IMODE(os.stat(out / entry["crt_der"]).st_mode) == 0o644 & ~UMASK
    document = json.loads((out / "manifest.json").read_text())
    assert document["project"] == "acme" and len(document["devices"]) == 60
    assert document["devices"][0]["files"]["crt_der"].endswith(".crt.der")
    with open(out / "failures.csv", newline="") as handle:
        assert {r["source"] for r in csv.DictReader(handle)} == set(reasons)
    openssl_verify_all(openssl, h, [out / m["crt_pem"] for m in manifest[:20]])
    # A fresh folder's manifests are written as the run goes; a rerun rebuilds them from the
    # journal. Both ways give the same bytes.
    streamed = {name: (out / name).read_bytes() for name in ("manifest.csv", "manifest.json")}
    journal = Journal(out, "acme", h.intermediate.name, ["crt_pem", "crt_der"])
    journal.done()
    journal.write_manifests([])
    assert {name: (out / name).read_bytes() for name in streamed} == streamed


def test_rerun_issues_nothing_twice(h: Hierarchy, tmp_path: Path) -> None:
    csrs = tmp_path / "csrs"
    make_csrs(csrs, "acme", [f"d{n}" for n in range(20)])
    out = tmp_path / "out"
    first = run_bulk(h, csrs, out)
    second = run_bulk(h, csrs, out)
    assert (first.issued, second.issued, second.skipped) == (20, 0, 20)
    assert len(h.home.inventory.find(project="acme")) == 20
    # files lost after the journal said done: the rerun rewrites them from the inventory
    (out / "d3.crt.der").unlink()
    (out / "d3.crt.pem").unlink()
    third = run_bulk(h, csrs, out)
    assert (third.issued, third.rewritten, third.skipped) == (0, 1, 19)
    assert x509.load_der_x509_certificate((out / "d3.crt.der").read_bytes())
    assert len(h.home.inventory.find(project="acme")) == 20
    # a kill in the middle of a journal row: the next run's rows still count
    with open(out / ".journal.jsonl", "a") as journal:
        journal.write('{"certificate_id": "d9", "ser')
    make_csrs(csrs, "acme", ["late"])
    fourth = run_bulk(h, csrs, out)
    assert (fourth.issued, fourth.skipped) == (1, 20)
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(d["certificate_id"] for d in manifest["devices"]) == sorted(
        [f"d{n}" for n in range(20)] + ["late"]
    )
    with open(out / "manifest.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 21


def test_same_id_with_another_key_is_refused(h: Hierarchy, tmp_path: Path) -> None:
    csrs = tmp_path / "csrs"
    make_csrs(csrs, "acme", ["twin", "solo"])
    write_csr(csrs / "zz-twin-again.csr.pem", "acme", "twin")  # a second key for "twin"
    summary = run_bulk(h, csrs, tmp_path / "out")
    assert summary.issued == 2
    assert [s for s, _ in summary.failures] == ["zz-twin-again.csr.pem"]
    assert len(h.home.inventory.find(project="acme", certificate_id="twin")) == 1
    # and across runs, in another output folder: the inventory refuses it too
    other = run_bulk(h, csrs, tmp_path / "out2")
    assert other.issued == 0 and other.rewritten == 2
    assert [s for s, _ in other.failures] == ["zz-twin-again.csr.pem"]


def test_csv_manifest_tar_and_zip_inputs(h: Hierarchy, tmp_path: Path) -> None:
    csrs = tmp_path / "csrs"
    paths = make_csrs(csrs, "acme", [f"c{n}" for n in range(6)])
    manifest = tmp_path / "devices.csv"
    lines = ["certificate_id,csr_path,batch"]
    lines += [f"c{n},csrs/{p.name},7" for n, p in enumerate(paths)]
    lines.append("c9,csrs/missing.csr,7")
    manifest.write_text("\n".join(lines) + "\n")
    summary = run_bulk(h, manifest, tmp_path / "out-csv")
    assert summary.issued == 6
    assert summary.failures == [("csrs/missing.csr", f"{tmp_path}/csrs/missing.csr: no such file")]

    tar_path, zip_path = tmp_path / "csrs.tar.gz", tmp_path / "csrs.zip"
    more = make_csrs(tmp_path / "more", "beta", [f"t{n}" for n in range(5)])
    with tarfile.open(tar_path, "w:gz") as archive:
        for p in more:
            archive.add(p, arcname=f"batch/{p.name}")
    with zipfile.ZipFile(zip_path, "w") as archive:
        for p in more:
            archive.write(p, arcname=p.name)
    from_tar = run_bulk(h, tar_path, tmp_path / "out-tar", project="beta")
    assert from_tar.issued == 5 and not from_tar.failures
    from_zip = run_bulk(h, zip_path, tmp_path / "out-zip", project="beta")
    assert from_zip.rewritten == 5 and from_zip.issued == 0  # same CSRs, same keys: not reissued


def test_bulk_issue_kits_file_modes_and_keys(
    h: Hierarchy, tmp_path: Path, openssl: Openssl
) -> None:
    out = tmp_path / "kits"
    run = BulkRun(
        inventory=h.home.inventory, ca=h.intermediate, project="acme", out=out, mode="issue"
    )
    summary = run.run(device_ids("kit-{n:03d}", 30))
    assert summary.issued == 30 and not summary.failures
    for n in (0, 17, 29):
        stem = out / f"kit-{n:03d}"
        for suffix in ("key.pem", "key.der"):
            assert stat.S_IMODE(os.stat(f"{stem}.{suffix}").st_mode) == 0o600
        key = load_private_key(Path(f"{stem}.key.der").read_bytes())
        assert Path(f"{stem}.key.pem").read_bytes() == key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert = x509.load_der_x509_certificate(Path(f"{stem}.crt.der").read_bytes())
        assert spki_der(cert.public_key()) == spki_der(key.public_key())  # type: ignore[arg-type]
        csr = x509.load_pem_x509_csr(Path(f"{stem}.csr.pem").read_bytes())
        assert csr.is_signature_valid and csr.public_key() == cert.public_key()
        assert csr.subject == cert.subject
        openssl("req", "-in", f"{stem}.csr.pem", "-verify", "-noout")
        openssl("pkey", "-inform", "DER", "-in", f"{stem}.key.der", "-noout")
    openssl_verify_all(openssl, h, [out / f"kit-{n:03d}.crt.pem" for n in range(30)])
    again = BulkRun(
        inventory=h.home.inventory, ca=h.intermediate, project="acme", out=out, mode="issue"
    ).run(device_ids("kit-{n:03d}", 35))
    assert (again.skipped, again.issued) == (30, 5)
    assert len(h.home.inventory.find(project="acme")) == 35


def test_cli_with_an_encrypted_ca_key(tmp_path: Path, run_cli: RunCli, pki_home: Path) -> None:
    passphrase = tmp_path / "pass.txt"
    passphrase.write_text("correct horse battery staple\n")
    rc, _, stderr = run_cli("ca", "init", "--name", "locked", "--passphrase-file", passphrase)
    assert rc == 0, stderr
    make_csrs(tmp_path / "csrs", "acme", ["p1", "p2"])
    args = ("bulk", "sign", tmp_path / "csrs", "--ca", "locked", "--project", "acme")
    rc, _, stderr = run_cli(*args, "--out", tmp_path / "o1", passphrase=None)
    assert rc == 1 and "passphrase" in stderr and "Traceback" not in stderr
    rc, stdout, stderr = run_cli(
        *args, "--out", tmp_path / "o2", "--passphrase-file", passphrase, "--json"
    )
    assert rc == 0, stderr
    assert json.loads(stdout)["issued"] == 2
    assert "correct horse" not in stdout + stderr


def test_cli_json_summary_exit_code_and_folder_guard(
    tmp_path: Path, run_cli: RunCli, pki_home: Path
) -> None:
    assert run_cli("ca", "init", "--name", "root", "--no-passphrase")[0] == 0
    csrs = tmp_path / "csrs"
    make_csrs(csrs, "acme", ["a1", "a2", "a3"])
    (csrs / "broken.pem").write_text("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    out = tmp_path / "out"
    rc, stdout, stderr = run_cli(
        "bulk", "sign", csrs, "--ca", "root", "--project", "acme", "--out", out, "--json"
    )
    assert rc == 1, stderr
    data = json.loads(stdout)
    assert (data["issued"], data["failed"]) == (3, 1)
    assert data["failures"][0]["source"] == "broken.pem"
    assert "PEM" in data["failures"][0]["reason"]
    assert Path(data["manifest"]["csv"]).is_file()
    rc, stdout, stderr = run_cli(
        "bulk", "issue", "--count", "2", "--ca", "root", "--project", "acme", "--out", out
    )
    assert rc == 1 and "holds a bulk sign run" in stderr and "Traceback" not in stderr
    rc, _, stderr = run_cli(
        "bulk", "issue", "--count", "3", "--id-format", "same", "--ca", "root",
        "--project", "acme", "--out", tmp_path / "kits",
    )  # fmt: skip
    assert rc == 1 and "same ID" in stderr
    rc, stdout, stderr = run_cli(
        "bulk", "issue", "--count", "4", "--id-format", "k{n}", "--ca", "root",
        "--project", "acme", "--out", tmp_path / "kits", "--json",
    )  # fmt: skip
    assert rc == 0, stderr
    assert json.loads(stdout)["issued"] == 4


def test_inventory_record_batch_is_all_or_nothing(h: Hierarchy) -> None:
    from fleetpki.csr import check_csr, create_csr
    from fleetpki.errors import ConflictError
    from fleetpki.fastsign import DeviceTemplate
    from fleetpki.inventory import IssuedRecord
    from fleetpki.profiles import utcnow

    template = DeviceTemplate(h.intermediate, now=utcnow())

    def record(certificate_id: str) -> IssuedRecord:
        request = check_csr(create_csr(generate_private_key(), "acme", certificate_id), "acme")
        cert = x509.load_der_x509_certificate(template.issue(request).der)
        return IssuedRecord.from_certificate(cert, kind="device", issuer_ca="factory")

    inventory = h.home.inventory
    before = inventory.count()
    inventory.record_batch([record("b1"), record("b2")])
    assert inventory.count() == before + 2
    assert set(inventory.active_device_certificates("acme", ["b1", "b2", "b3"])) == {"b1", "b2"}
    with pytest.raises(ConflictError):
        inventory.record_batch([record("b3"), record("b1")])  # b1 is active already
    assert inventory.count() == before + 2
    assert inventory.active_device_certificates("acme", ["b3"]) == {}


def test_bulk_issue_other_key_types(h: Hierarchy, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    from fleetpki.keys import KeyType

    run = BulkRun(
        inventory=h.home.inventory,
        ca=h.intermediate,
        project="acme",
        out=tmp_path / "p384",
        mode="issue",
        key_type=KeyType.P384,
    )
    assert run.run(device_ids("big-{n}", 3)).issued == 3
    cert = x509.load_der_x509_certificate((tmp_path / "p384" / "big-1.crt.der").read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    cert.verify_directly_issued_by(h.intermediate.certificate)


@pytest.mark.parametrize("mode", ["sign", "issue"])
def test_journal_line_is_json_dumps_of_the_row(h: Hierarchy, tmp_path: Path, mode: str) -> None:
    """The hand-built journal line is the text json.dumps writes (manifest.json embeds it)."""
    from fleetpki.bulk import _journal_line

    run = BulkRun(
        inventory=h.home.inventory, ca=h.intermediate, project="acme", out=tmp_path, mode=mode
    )
    fingerprint = "ab" * 32
    for cid, source in [("dev-1", "a/dev-1.csr"), ("dév\u2028é", 'odd "name"\\ü\n.csr')]:
        row = {
            "certificate_id": cid,
            "serial": "abc",
            "fingerprint_sha256": fingerprint,
            "not_after": "2036-02-03T04:05:06Z",
            "source": source,
            "files": {k: f"{cid}.{name}" for k, name in run.files.items()},
        }
        line = _journal_line(cid, "abc", fingerprint, "2036-02-03T04:05:06Z", source, run.files)
        assert line == json.dumps(row) + "\n"


def test_manifest_csv_rows_are_what_csv_writer_writes(tmp_path: Path) -> None:
    """ManifestStream joins plain rows itself; every row must be csv.writer's text."""
    import io

    from fleetpki.bulk_journal import ManifestStream

    tricky = ["plain", "a,b", 'say "hi"', "line\nbreak", "cr\rx", "", " lead", "tab\tx", "ü€😀"]
    rows = [[f"dev-{n}", value, "x"] for n, value in enumerate(tricky)] + [["", ""], ["a", ""]]
    journal = Journal(tmp_path, "acme", "factory", [])
    stream = ManifestStream(journal)
    stream.add([], rows)
    stream.finish([])
    expected = io.StringIO(newline="")
    writer = csv.writer(expected)
    writer.writerow([*MANIFEST_FIELDS, "ca_chain"])
    writer.writerows(rows)
    assert (tmp_path / "manifest.csv").read_bytes() == expected.getvalue().encode()


@pytest.mark.parametrize("chunk", [4, 256])
def test_bulk_issue_repeated_ids_get_one_key_and_one_certificate(
    h: Hierarchy, tmp_path: Path, chunk: int
) -> None:
    """An --id-format that repeats IDs (here n=1, 10 and 11 all give dev-1): the first is
    issued, the others refused, and dev-1's key file is the key of its certificate."""
    out = tmp_path / "kits"
    run = BulkRun(
        inventory=h.home.inventory,
        ca=h.intermediate,
        project="acme",
        out=out,
        mode="issue",
        chunk=chunk,
    )
    summary = run.run(device_ids("dev-{n!s:.1}", 12))
    assert summary.issued == 10
    assert sorted(summary.failures) == [("dev-1", "certificate ID 'dev-1' is repeated")] * 2
    key = load_private_key((out / "dev-1.key.der").read_bytes())
    cert = x509.load_der_x509_certificate((out / "dev-1.crt.der").read_bytes())
    assert spki_der(cert.public_key()) == spki_der(key.public_key())  # type: ignore[arg-type]
    assert len(h.home.inventory.find(project="acme", certificate_id="dev-1")) == 1


@pytest.mark.parametrize("chunk", [1, 256])
def test_bulk_sign_same_id_twice_in_one_run(h: Hierarchy, tmp_path: Path, chunk: int) -> None:
    """Two CSRs for one ID with different keys: one certificate, one refusal."""
    csrs = tmp_path / "csrs"
    make_csrs(csrs, "acme", ["dev-a", "dev-b"])
    write_csr(csrs / "zz-dev-a-again.csr.pem", "acme", "dev-a")
    run = BulkRun(
        inventory=h.home.inventory,
        ca=h.intermediate,
        project="acme",
        out=tmp_path / "out",
        mode="sign",
        chunk=chunk,
    )
    summary = run.run(CSRSource(csrs).items())
    assert summary.issued == 2 and len(summary.failures) == 1
    source, reason = summary.failures[0]
    assert "dev-a" in source and "dev-a" in reason
    assert "repeated" in reason or "another key" in reason
    assert len(h.home.inventory.find(project="acme", certificate_id="dev-a")) == 1
