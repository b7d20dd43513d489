"""Bulk issuance benchmark: one command, baselines measured in the same run on the same CSRs.

    .venv/bin/python benchmarks/issuance.py                  # sizes 10k and 100k, a few minutes
    .venv/bin/python benchmarks/issuance.py --sizes 10000,100000,1000000   # the 1M flatness run

Measures, on P-256 CSRs generated first (not timed):
  * the seed's openssl recipe (one ``openssl x509 -req`` process per CSR) on a sample;
  * a naive single-process ``cryptography`` loop (load, check signature, builder, sign, write);
  * the raw ECDSA P-256 limit of this machine: one CSR-signature verify + one signature per
    certificate, all cores, no X.509 work at all;
  * ``fleetpki bulk sign`` (CSR folder -> certificates, inventory rows, PEM + DER files) for each
    size, all into ONE PKI home so the later sizes run against an inventory already holding the
    earlier rows, and ``fleetpki bulk issue`` (key + CSR + certificate per device).
For each fleetpki run it prints certificates/s (wall clock of the real command), CPU µs per
certificate (user+sys of the command and its workers: the figure that survives a noisy shared
machine), the ratios to the baselines and the percentage of the raw limit.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetpki import profiles
from fleetpki.fastsign import device_csr_der
from fleetpki.home import Home

FLEETPKI = str(Path(sys.executable).with_name("fleetpki"))
PROJECT = "bench"


def _make_csrs(args: tuple[str, str, int, int]) -> None:
    folder, prefix, start, stop = args
    for n in range(start, stop):
        key = ec.generate_private_key(ec.SECP256R1())
        der = device_csr_der(key, PROJECT, f"{prefix}-{n:07d}")
        with open(os.path.join(folder, f"{prefix}-{n:07d}.csr.der"), "wb") as handle:
            handle.write(der)


def generate_csrs(folder: Path, prefix: str, count: int) -> None:
    folder.mkdir(parents=True)
    step = 2000
    jobs = [(str(folder), prefix, s, min(s + step, count)) for s in range(0, count, step)]
    with multiprocessing.Pool() as pool:
        pool.map(_make_csrs, jobs)


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def openssl_recipe(home: Path, csrs: list[Path], out: Path) -> float:
    """The seed's recipe: one ``openssl x509 -req`` process per CSR; certificates/s."""
    out.mkdir()
    ca_dir = home / "cas" / "factory"
    started = time.perf_counter()
    for n, csr in enumerate(csrs):
        subprocess.run(
            [
                "openssl", "x509", "-req", "-in", str(csr), "-inform", "DER",
                "-CA", str(ca_dir / "ca.crt.pem"), "-CAkey", str(ca_dir / "ca.key.pem"),
                "-set_serial", str(1000 + n), "-days", "3650", "-sha256",
                "-out", str(out / f"{n}.crt.pem"),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    return len(csrs) / (time.perf_counter() - started)


def naive_cryptography(home: Path, csrs: list[Path], out: Path) -> float:
    """One process: load, check the CSR signature, CertificateBuilder + sign, write PEM."""
    out.mkdir()
    ca = Home(home).load_ca("factory", None)
    key, algorithm = ca.signer.builder_key(), ca.signer.hash_algorithm()
    started = time.perf_counter()
    for n, path in enumerate(csrs):
        csr = x509.load_der_x509_csr(path.read_bytes())
        if not csr.is_signature_valid:
            raise SystemExit(f"{path}: bad CSR")
        cert = profiles.DEVICE.builder(
            subject=csr.subject,
            public_key=csr.public_key(),
            issuer=ca.certificate,  # type: ignore[arg-type]
        ).sign(key, algorithm)
        (out / f"{n}.crt.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return len(csrs) / (time.perf_counter() - started)


def _raw_worker(seconds: float) -> int:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    device = ec.generate_private_key(ec.SECP256R1())
    message = os.urandom(300)
    signature = device.sign(message, ec.ECDSA(hashes.SHA256()))
    public = device.public_key()
    done, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            ca_key.sign(message, ec.ECDSA(hashes.SHA256()))
        done += 100
    return done


def raw_limit(seconds: float = 3.0) -> tuple[float, float]:
    """(per core, all cores) rate of verify + sign pairs, in cryptography, no X.509 at all."""
    one = _raw_worker(seconds) / seconds
    cores = os.cpu_count() or 1
    with multiprocessing.Pool(cores) as pool:
        total = sum(pool.map(_raw_worker, [seconds] * cores)) / seconds
    return one, total


def run_fleetpki(home: Path, *args: str | Path) -> tuple[dict[str, Any], float, float]:
    """Run the real CLI; returns (its --json summary, wall seconds, CPU seconds incl. workers)."""
    env = {**os.environ, "FLEETPKI_HOME": str(home)}
    env.pop("FLEETPKI_PASSPHRASE", None)
    cpu, started = child_cpu(), time.perf_counter()
    proc = subprocess.run(
        [FLEETPKI, *map(str, args), "--json"], env=env, capture_output=True, text=True
    )
    wall, used = time.perf_counter() - started, child_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"fleetpki {' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), wall, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="bulk sign sizes (comma list)")
    parser.add_argument("--issue-count", type=int, default=20000, help="devices for bulk issue")
    parser.add_argument("--sample", type=int, default=200, help="CSRs for the openssl recipe")
    parser.add_argument("--naive", type=int, default=3000, help="CSRs for the naive loop")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    options = parser.parse_args()
    sizes = [int(s) for s in options.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fleetpki-bench-", dir=options.workdir))
    try:
        _run(options, sizes, work)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(options: argparse.Namespace, sizes: list[int], work: Path) -> None:
    import cryptography

    cores = os.cpu_count() or 1
    print(f"cryptography {cryptography.__version__}, {cores} cores, work folder {work}")
    home = work / "home"
    Home(home).init_root("root", passphrase=None)
    Home(home).create_intermediate(
        "factory", parent="root", parent_passphrase=None, passphrase=None
    )
    started = time.perf_counter()
    for size in sizes:
        generate_csrs(work / f"csrs-{size}", f"s{size}", size)
    print(f"generated {sum(sizes):,} CSRs in {time.perf_counter() - started:.1f} s (not timed)")

    sample = sorted((work / f"csrs-{sizes[0]}").iterdir())
    openssl_rate = openssl_recipe(home, sample[: options.sample], work / "openssl-out")
    naive_rate = naive_cryptography(home, sample[: options.naive], work / "naive-out")
    raw_core, raw_all = raw_limit()
    print(f"\nopenssl recipe (x509 -req per CSR, {options.sample} CSRs): {openssl_rate:,.0f}/s")
    print(f"naive cryptography loop, 1 process ({options.naive} CSRs): {naive_rate:,.0f}/s")
    print(f"raw ECDSA P-256 verify+sign: {raw_core:,.0f}/s per core, {raw_all:,.0f}/s all cores")

    header = (
        f"\n{'run':<26}{'count':>10}{'wall /s':>10}{'CPU µs':>9}{'x openssl':>11}"
        f"{'x naive':>9}{'% raw':>7}{'inventory':>11}"
    )
    print(header)
    results = []

    def report(label: str, count: int, wall: float, cpu: float, summary: dict[str, Any]) -> None:
        rate = count / wall
        rows = Home(home).inventory.count()
        results.append({"run": label, "count": count, "per_second": rate, "cpu_us": cpu / count * 1e6, "inventory_rows": rows, "summary_rate": summary["certificates_per_second"]})  # fmt: skip
        print(
            f"{label:<26}{count:>10,}{rate:>10,.0f}{cpu / count * 1e6:>9,.0f}"
            f"{rate / openssl_rate:>11,.0f}{rate / naive_rate:>9.2f}{rate / raw_all * 100:>6.0f}%"
            f"{rows:>11,}",
            flush=True,
        )

    for size in sizes:
        summary, wall, cpu = run_fleetpki(
            home, "bulk", "sign", work / f"csrs-{size}", "--ca", "factory",
            "--project", PROJECT, "--out", work / f"out-{size}",
        )  # fmt: skip
        assert summary["issued"] == size, summary
        report("bulk sign", size, wall, cpu, summary)
    summary, wall, cpu = run_fleetpki(
        home, "bulk", "issue", "--count", str(options.issue_count), "--id-format", "kit-{n:07d}",
        "--ca", "factory", "--project", PROJECT, "--out", work / "kits",
    )  # fmt: skip
    assert summary["issued"] == options.issue_count, summary
    report("bulk issue (key+CSR+cert)", options.issue_count, wall, cpu, summary)
    print(
        "\nwall /s: certificates per second of the whole command (start-up included); CPU µs: "
        "user+sys of the command and its workers per certificate; % raw: of the raw all-core "
        "verify+sign rate. Targets (2 cores): bulk sign >= 10,000/s, bulk issue >= 5,000/s."
    )
    if options.json:
        document = {"openssl_per_second": openssl_rate, "naive_per_second": naive_rate}
        document.update(raw_per_core=raw_core, raw_all_cores=raw_all, runs=results)
        print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
