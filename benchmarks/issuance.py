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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

import fleetpki
from fleetpki import profiles
from fleetpki.csr import create_csr
from fleetpki.home import Home

FLEETPKI = str(Path(sys.executable).with_name("fleetpki"))
PROJECT = "bench"


def _make_csrs(args: tuple[str, str, int, int]) -> None:
    folder, prefix, start, stop = args
    for n in range(start, stop):
        key = ec.generate_private_key(ec.SECP256R1())
        der = create_csr(key, PROJECT, f"{prefix}-{n:07d}").public_bytes(serialization.Encoding.DER)
        with open(os.path.join(folder, f"{prefix}-{n:07d}.csr.der"), "wb") as handle:
            handle.write(der)


def generate_csrs(folder: Path, prefix: str, count: int) -> None:
    folder.mkdir(parents=True)
    step = 2000
    jobs = [(str(folder), prefix, s, min(s + step, count)) for s in range(0, count, step)]
    with multiprocessing.Pool() as pool:
        pool.map(_make_csrs, jobs)


def child_cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


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


RAW_SECONDS = 3.0


def raw_limit(seconds: float | None = None, per_core: bool = True) -> tuple[float, float]:
    """(per core, all cores) rate of verify + sign pairs, in cryptography, no X.509 at all."""
    seconds = seconds or RAW_SECONDS
    one = _raw_worker(seconds) / seconds if per_core else 0.0
    cores = os.cpu_count() or 1
    with multiprocessing.Pool(cores) as pool:
        total = sum(pool.map(_raw_worker, [seconds] * cores)) / seconds
    return one, total


def prefill_inventory(home: Path, count: int) -> float:
    """Add ``count`` synthetic active device rows (project "prefill"); returns seconds."""
    import datetime as dt

    from fleetpki.inventory import IssuedRecord

    inventory = Home(home).inventory
    now = dt.datetime.now(dt.UTC)
    der = os.urandom(420)
    started = time.perf_counter()
    for start in range(0, count, 5000):
        batch = [
            IssuedRecord(
                serial=os.urandom(20).hex(), kind="device", project="prefill",
                certificate_id=f"p-{n:07d}", subject=f"CN=p-{n:07d},O=prefill",
                issuer_ca="factory", not_before=now, not_after=now,
                fingerprint_sha256=os.urandom(32).hex(), der=der,
            )
            for n in range(start, min(start + 5000, count))
        ]  # fmt: skip
        inventory.record_batch(batch, action="benchmark-prefill")
    return time.perf_counter() - started


def run_fleetpki(
    home: Path, *args: str | Path
) -> tuple[dict[str, Any], float, tuple[float, float]]:
    """Run the real CLI; returns (its --json summary, wall seconds, (user, sys) CPU seconds of
    the command and its workers)."""
    env = {**os.environ, "FLEETPKI_HOME": str(home)}
    env.pop("FLEETPKI_PASSPHRASE", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    (user, system), started = child_cpu(), time.perf_counter()
    proc = subprocess.run(
        [FLEETPKI, *map(str, args), "--json"], env=env, capture_output=True, text=True
    )
    after = child_cpu()
    wall, used = time.perf_counter() - started, (after[0] - user, after[1] - system)
    if proc.returncode != 0:
        raise SystemExit(f"fleetpki {' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout), wall, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="bulk sign sizes (comma list)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run each fleetpki measurement N times (median)"
    )
    parser.add_argument("--issue-count", type=int, default=20000, help="devices for bulk issue")
    parser.add_argument("--sample", type=int, default=200, help="CSRs for the openssl recipe")
    parser.add_argument("--naive", type=int, default=3000, help="CSRs for the naive loop")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="then add N synthetic rows to the inventory and sign the first size again "
        "(the 1M-row inventory check without 1M files: --prefill 1000000)",
    )
    parser.add_argument(
        "--tmpfs", default="/dev/shm", help="also run with the output here ('' to skip)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds, tiny sizes (CI: the script works)"
    )
    options = parser.parse_args()
    if options.smoke:
        options.sizes, options.issue_count, options.sample, options.naive = "300", 200, 10, 100
        options.repeat, options.tmpfs, options.raw_seconds = 1, "", 0.3
    sizes = [int(s) for s in options.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fleetpki-bench-", dir=options.workdir))
    # The generated CSRs are input, not output: kept in memory (tmpfs) when there is one, so
    # the run creates (and later deletes) only the files it measures. On ext4 without a
    # journal, mass deletions slow down inode allocation for minutes (recently_deleted()).
    in_memory = options.tmpfs and Path(options.tmpfs).is_dir()
    csrs = Path(tempfile.mkdtemp(prefix="fleetpki-csrs-", dir=options.tmpfs if in_memory else work))
    try:
        _run(options, sizes, work, csrs)
    finally:
        if not options.keep:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(csrs, ignore_errors=True)


def _run(options: argparse.Namespace, sizes: list[int], work: Path, csrs: Path) -> None:
    import cryptography

    global RAW_SECONDS
    RAW_SECONDS = getattr(options, "raw_seconds", RAW_SECONDS)

    cores = os.cpu_count() or 1
    print(
        f"cryptography {cryptography.__version__}, {cores} cores, "
        f"work folder {work}, CSRs in {csrs}"
    )
    home = work / "home"
    Home(home).init_root("root", passphrase=None)
    Home(home).create_intermediate(
        "factory", parent="root", parent_passphrase=None, passphrase=None
    )
    started = time.perf_counter()
    for size in sizes:
        for rep in range(options.repeat):
            generate_csrs(csrs / f"csrs-{size}-{rep}", f"s{size}r{rep}", size)
    print(
        f"generated {sum(sizes) * options.repeat:,} CSRs in "
        f"{time.perf_counter() - started:.1f} s (not timed)"
    )
    # An installed package has its bytecode compiled (pip does it); compile ours once here, so
    # no run below pays for it (PYTHONDONTWRITEBYTECODE is dropped for the runs).
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(Path(fleetpki.__file__).parent)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )

    sample = sorted((csrs / f"csrs-{sizes[0]}-0").iterdir())
    openssl_rate = openssl_recipe(home, sample[: options.sample], work / "openssl-out")
    naive_rate = naive_cryptography(home, sample[: options.naive], work / "naive-out")
    raw_core, raw_all = raw_limit()
    print(f"\nopenssl recipe (x509 -req per CSR, {options.sample} CSRs): {openssl_rate:,.0f}/s")
    print(f"naive cryptography loop, 1 process ({options.naive} CSRs): {naive_rate:,.0f}/s")
    print(f"raw ECDSA P-256 verify+sign: {raw_core:,.0f}/s per core, {raw_all:,.0f}/s all cores")

    header = (
        f"\n{'run':<30}{'count':>10}{'wall /s':>9}{'user µs':>9}{'sys µs':>8}{'ceiling':>9}"
        f"{'x openssl':>10}{'x naive':>8}{'raw /s':>9}{'% raw':>7}{'inventory':>11}"
    )
    print(header)
    results = []

    def timed(label: str, count: int, *args: str | Path) -> None:
        """Raw all-core rate right before (the machine is shared: load moves), then the run."""
        raw_now = raw_limit(RAW_SECONDS / 2, per_core=False)[1]
        summary, wall, cpu = run_fleetpki(home, *args)
        assert summary["issued"] == count, summary
        rate = count / wall
        user, system = (c / count * 1e6 for c in cpu)
        ceiling = cores * 1e6 / (user + system)  # all cores busy with this run only
        rows = Home(home).inventory.count()
        results.append(
            {"run": label, "count": count, "per_second": rate, "user_us": user,
             "sys_us": system, "ceiling_per_second": ceiling, "raw_all_cores": raw_now,
             "inventory_rows": rows}
        )  # fmt: skip
        print(
            f"{label:<30}{count:>10,}{rate:>9,.0f}{user:>9,.0f}{system:>8,.0f}{ceiling:>9,.0f}"
            f"{rate / openssl_rate:>10,.0f}{rate / naive_rate:>8.2f}{raw_now:>9,.0f}"
            f"{rate / raw_now * 100:>6.0f}%{rows:>11,}",
            flush=True,
        )

    for rep in range(options.repeat):
        for size in sizes:
            timed(
                "bulk sign", size, "bulk", "sign", csrs / f"csrs-{size}-{rep}", "--ca",
                "factory", "--project", PROJECT, "--out", work / f"out-{size}-{rep}",
            )  # fmt: skip
        timed(
            "bulk issue (key+CSR+cert)", options.issue_count, "bulk", "issue", "--count",
            str(options.issue_count), "--id-format", f"kit{rep}-{{n:07d}}", "--ca", "factory",
            "--project", PROJECT, "--out", work / f"kits-{rep}",
        )  # fmt: skip
    for label in dict.fromkeys(r["run"] for r in results):
        rate = statistics.median(r["per_second"] for r in results if r["run"] == label)
        share = statistics.median(
            r["per_second"] / r["raw_all_cores"] for r in results if r["run"] == label
        )
        print(
            f"ratio {label} / openssl recipe: {rate / openssl_rate:,.0f}x; / naive loop: "
            f"{rate / naive_rate:.2f}x; {share * 100:.0f}% of the raw ECDSA limit"
        )
    if options.repeat > 1:
        print(f"\nmedian of {options.repeat} runs:")
        for label in dict.fromkeys(r["run"] for r in results):
            for count in sorted({r["count"] for r in results if r["run"] == label}):
                same = [r for r in results if r["run"] == label and r["count"] == count]
                rate = statistics.median(r["per_second"] for r in same)
                share = statistics.median(r["per_second"] / r["raw_all_cores"] for r in same)
                cpu = statistics.median(r["user_us"] + r["sys_us"] for r in same)
                best = max(r["per_second"] for r in same)
                print(
                    f"  {label:<28}{count:>10,}{rate:>9,.0f}/s  {cpu:,.0f} µs CPU per "
                    f"certificate  {share * 100:.0f}% of raw  (best {best:,.0f}/s)"
                )
    if options.prefill:
        seconds = prefill_inventory(home, options.prefill)
        print(f"(inventory +{options.prefill:,} synthetic rows in {seconds:.0f} s, not timed)")
        generate_csrs(csrs / "csrs-prefill", "prefill", sizes[0])
        timed(
            "bulk sign, after prefill", sizes[0], "bulk", "sign", csrs / "csrs-prefill",
            "--ca", "factory", "--project", PROJECT, "--out", work / "out-prefill",
        )  # fmt: skip
    if options.tmpfs and Path(options.tmpfs).is_dir():
        # The same work with the output folder in memory: what the filesystem costs.
        tmp_out = Path(tempfile.mkdtemp(prefix="fleetpki-bench-", dir=options.tmpfs))
        try:
            generate_csrs(csrs / "csrs-tmpfs", "tmpfs", sizes[0])
            timed(
                f"bulk sign, out on {options.tmpfs}", sizes[0], "bulk", "sign",
                csrs / "csrs-tmpfs", "--ca", "factory", "--project", PROJECT,
                "--out", tmp_out / "out",
            )  # fmt: skip
            timed(
                f"bulk issue, out on {options.tmpfs}", options.issue_count, "bulk", "issue",
                "--count", str(options.issue_count), "--id-format", "tmpfs-kit-{n:07d}",
                "--ca", "factory", "--project", PROJECT, "--out", tmp_out / "kits",
            )  # fmt: skip
        finally:
            shutil.rmtree(tmp_out, ignore_errors=True)
    print(
        "\nwall /s: certificates per second of the whole command, start-up included. user/sys "
        "µs: CPU of the command and its workers per certificate. ceiling: cores x 1e6 / CPU "
        "µs, the rate if every core ran only this. raw /s: all-core verify+sign pairs per second, "
        "measured just before the run; % raw: wall rate / raw. Targets (2 cores): bulk sign "
        ">= 10,000/s, bulk issue >= 5,000/s."
    )
    if options.json:
        document = {"openssl_per_second": openssl_rate, "naive_per_second": naive_rate}
        document.update(raw_per_core=raw_core, raw_all_cores=raw_all, runs=results)
        print(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
