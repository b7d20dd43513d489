"""Concurrent `fleetpki sign` processes on one home: no duplicate serials, no lost rows."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from cryptography import x509

from fleetpki.keys import generate_private_key
from fleetpki_testing import FLEETPKI, Hierarchy, make_hierarchy, write_csr

CLI_PROCESSES = 8  # `fleetpki sign` processes started together
LIBRARY_PROCESSES = 2  # python processes signing a batch each through fleetpki.home
PER_LIBRARY_PROCESS = 100

WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path
    from fleetpki.formats import load_csr
    from fleetpki.home import Home

    home, folder = Home(Path(sys.argv[1])), Path(sys.argv[2])
    ca = home.load_ca("factory", None)
    # Start together with the CLI processes (which spend ~0.5 s importing first).
    time.sleep(max(0.0, float(sys.argv[3]) - time.time()))
    for path in sorted(folder.glob("*.csr.pem")):
        home.sign(ca, load_csr(path.read_bytes()), project_slug="acme")
    """
)


def test_concurrent_signers(tmp_path: Path) -> None:
    pki: Hierarchy = make_hierarchy(tmp_path)
    base_rows = pki.home.inventory.count()
    pki.home.inventory.close()
    env_home = {"FLEETPKI_HOME": str(pki.path)}
    csrs = tmp_path / "cli"
    csrs.mkdir()
    key = generate_private_key()  # one key is fine: each CSR has its own certificate ID
    cli_jobs = [
        write_csr(csrs / f"c{i}.csr.pem", "acme", f"cli-{i}", key) for i in range(CLI_PROCESSES)
    ]
    batches = []
    for worker in range(LIBRARY_PROCESSES):
        folder = tmp_path / f"batch{worker}"
        folder.mkdir()
        for i in range(PER_LIBRARY_PROCESS):
            write_csr(folder / f"{i:03}.csr.pem", "acme", f"lib-{worker}-{i}", key)
        batches.append(folder)

    start = time.time() + 0.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(pki.path), str(folder), str(start)],
            stderr=subprocess.PIPE,
        )
        for folder in batches
    ]
    procs += [
        subprocess.Popen(
            [
                FLEETPKI,
                "sign",
                csr,
                "--ca",
                "factory",
                "--project",
                "acme",
                "--out",
                csr.with_suffix(".crt"),
            ],
            env={"PATH": "/usr/bin:/bin", **env_home},
            stderr=subprocess.PIPE,
        )
        for csr in cli_jobs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()

    issued = CLI_PROCESSES + LIBRARY_PROCESSES * PER_LIBRARY_PROCESS
    with sqlite3.connect(pki.path / "inventory.sqlite3") as conn:
        serials = [
            s for (s,) in conn.execute("SELECT serial FROM certificates WHERE kind='device'")
        ]
        ids = {c for (c,) in conn.execute("SELECT certificate_id FROM certificates")}
        total = conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    assert len(serials) == issued
    assert len(set(serials)) == issued
    assert total == base_rows + issued
    assert {f"cli-{i}" for i in range(CLI_PROCESSES)} <= ids
    # every certificate file written has its row
    for csr in cli_jobs:
        cert = x509.load_pem_x509_certificate(csr.with_suffix(".crt").read_bytes())
        assert f"{cert.serial_number:x}" in serials


def test_same_certificate_id_raced_by_several_processes(tmp_path: Path) -> None:
    pki = make_hierarchy(tmp_path)
    before = pki.home.inventory.count()
    pki.home.inventory.close()
    csrs = [write_csr(tmp_path / f"r{i}.csr.pem", "acme", "raced-1") for i in range(4)]
    procs = [
        subprocess.Popen(
            [
                FLEETPKI,
                "sign",
                csr,
                "--ca",
                "factory",
                "--project",
                "acme",
                "--out",
                csr.with_suffix(".crt"),
            ],
            env={"PATH": "/usr/bin:/bin", "FLEETPKI_HOME": str(pki.path)},
            stderr=subprocess.PIPE,
            text=True,
        )
        for csr in csrs
    ]
    results = [(proc.wait(timeout=120), proc.stderr.read()) for proc in procs if proc.stderr]
    assert sorted(rc for rc, _ in results) == [0, 1, 1, 1]
    assert all("use --renew" in err for rc, err in results if rc)
    assert sum(csr.with_suffix(".crt").exists() for csr in csrs) == 1
    with sqlite3.connect(pki.path / "inventory.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM certificates").fetchone()[0] == before + 1
