"""A real `fleetpki bulk` process SIGKILLed mid-run, then run again: it finishes, nothing twice."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from cryptography import x509

from fleetpki.fastsign import spki_der
from fleetpki.keys import load_private_key
from fleetpki_testing import FLEETPKI, make_hierarchy
from test_bulk import make_csrs

COUNT = 4000


def _inventory(home: Path) -> dict[str, list[tuple[str, bytes]]]:
    """certificate ID -> [(serial, DER)] of device rows."""
    rows: dict[str, list[tuple[str, bytes]]] = {}
    with sqlite3.connect(home / "inventory.sqlite3") as conn:
        query = "SELECT certificate_id, serial, der FROM certificates WHERE kind = 'device'"
        for certificate_id, serial, der in conn.execute(query):
            rows.setdefault(certificate_id, []).append((serial, bytes(der)))
    return rows


def _start(home: Path, *args: str | Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPKI_")}
    env["FLEETPKI_HOME"] = str(home)
    return subprocess.Popen(
        [FLEETPKI, "bulk", *map(str, args), "--workers", "1", "--json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: we can check the workers died too
    )


def _kill_mid_run(proc: subprocess.Popen[bytes], journal: Path) -> None:
    """SIGKILL once some certificates are journaled, long before the run could finish."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and journal.stat().st_size > 20_000:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the workers die with it (PR_SET_PDEATHSIG)
        if not _live_members(proc.pid):
            return
        time.sleep(0.05)
    raise AssertionError("worker processes outlived the killed run")


def _live_members(group: int) -> list[int]:
    """Processes of process group ``group`` that still run (zombies waiting for init don't)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "(comm)": state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            alive.append(int(entry.name))
    return alive


def _check_files_have_rows(out: Path, inventory: dict[str, list[tuple[str, bytes]]]) -> int:
    """Every certificate file on disk is the inventory's certificate for that ID."""
    files = sorted(out.glob("*.crt.der"))
    for path in files:
        certificate_id = path.name.removesuffix(".crt.der")
        stored = inventory.get(certificate_id)
        data = path.read_bytes()
        if data:  # a file cut short by the kill is rewritten by the rerun
            assert stored is not None and [der for _, der in stored] == [data]
    return len(files)


def test_sigkilled_bulk_sign_finishes_on_rerun_without_duplicates(tmp_path: Path) -> None:
    h = make_hierarchy(tmp_path)
    ids = [f"dev-{n:05d}" for n in range(COUNT)]
    make_csrs(tmp_path / "csrs", "acme", ids)
    out = tmp_path / "out"
    args = ("sign", tmp_path / "csrs", "--ca", "factory", "--project", "acme", "--out", out)

    _kill_mid_run(_start(h.path, *args), out / ".journal.jsonl")

    after_kill = _inventory(h.path)
    assert 0 < len(after_kill) < COUNT, "the kill should land mid-run"
    assert all(len(rows) == 1 for rows in after_kill.values())
    assert 0 < _check_files_have_rows(out, after_kill) <= len(after_kill)

    rerun = _start(h.path, *args)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr.decode()
    summary = json.loads(stdout)
    assert summary["failed"] == 0
    assert summary["skipped"] > 0
    assert summary["skipped"] + summary["rewritten"] + summary["issued"] == COUNT

    final = _inventory(h.path)
    assert sorted(final) == ids
    assert all(len(rows) == 1 for rows in final.values()), "an ID was issued twice"
    serials = [serial for rows in final.values() for serial, _ in rows]
    assert len(set(serials)) == COUNT
    for certificate_id, rows in list(after_kill.items()):
        assert final[certificate_id] == rows  # what was issued before the kill was kept
    assert _check_files_have_rows(out, final) == COUNT
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(d["certificate_id"] for d in manifest["devices"]) == ids


def test_sigkilled_bulk_issue_keeps_every_key_with_its_certificate(tmp_path: Path) -> None:
    h = make_hierarchy(tmp_path)
    out = tmp_path / "kits"
    count = 3000
    args = ("issue", "--count", str(count), "--ca", "factory", "--project", "acme", "--out", out)

    _kill_mid_run(_start(h.path, *args), out / ".journal.jsonl")
    after_kill = _inventory(h.path)
    assert 0 < len(after_kill) < count
    for certificate_id, [(_, der)] in after_kill.items():  # keys are written before the commit
        cert = x509.load_der_x509_certificate(der)
        key = load_private_key((out / f"{certificate_id}.key.der").read_bytes())
        assert spki_der(key.public_key()) == spki_der(cert.public_key())  # type: ignore[arg-type]

    rerun = _start(h.path, *args)
    stdout, stderr = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, stderr.decode()
    assert json.loads(stdout)["failed"] == 0

    final = _inventory(h.path)
    assert len(final) == count and all(len(rows) == 1 for rows in final.values())
    for certificate_id, [(_, der)] in final.items():
        cert = x509.load_der_x509_certificate(der)
        key = load_private_key((out / f"{certificate_id}.key.der").read_bytes())
        assert spki_der(key.public_key()) == spki_der(cert.public_key())  # type: ignore[arg-type]
        assert (out / f"{certificate_id}.crt.der").read_bytes() == der
