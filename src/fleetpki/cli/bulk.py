"""``fleetpki bulk``: production runs (sign a folder/CSV/archive of CSRs) and development kits."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer

from fleetpki.cli.common import (
    JsonOption,
    PassphraseFileOption,
    ca_passphrase,
    console,
    err_console,
    open_home,
    print_json,
)
from fleetpki.keys import KeyType

app = typer.Typer(
    help="Bulk issuance on all cores: resumable, with a manifest of what was issued.",
    no_args_is_help=True,
)

CaOption = typer.Option(..., "--ca", help="Name of the signing CA.")
ProjectOption = typer.Option(..., "--project", help="Project slug (the certificates' O).")
OutOption = typer.Option(..., "--out", help="Output folder (files named <certificate ID>.*).")
DaysOption = typer.Option(None, "--days", min=1, help="Lifetime in days (default 3650).")
WorkersOption = typer.Option(None, "--workers", min=1, help="Worker processes (default: cores).")


def _run(
    *,
    mode: str,
    ca: str,
    project: str,
    out: Path,
    days: int | None,
    workers: int | None,
    passphrase_file: Path | None,
    json_output: bool,
    items: Iterable[Any],
    total: int | Callable[[], int],
    key_type: KeyType = KeyType.P256,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from fleetpki.bulk import BulkRun
    from fleetpki.naming import validate_project_slug

    validate_project_slug(project)
    home = open_home()
    authority = home.load_ca(ca, ca_passphrase(home, ca, passphrase_file))
    run = BulkRun(
        inventory=lambda: home.inventory,  # opened once the workers are signing
        ca=authority,
        project=project,
        out=out,
        mode=mode,
        days=days,
        workers=workers,
        key_type=key_type,
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=not err_console.is_terminal,
    )
    with progress:
        if callable(total):  # counting means a pass over the source: only for a visible bar
            total = total() if err_console.is_terminal else 0
        task = progress.add_task(f"bulk {mode}", total=total, rate="")

        def advance(n: int) -> None:
            speed = progress.tasks[0].speed
            progress.update(task, advance=n, rate=f"{speed or 0:,.0f}/s")

        summary = run.run(items, advance)
    # The command ends here: without this the interpreter's final collections walk every object
    # the run and its imports made (~0.1 s, a tenth of a 10,000-certificate run).
    gc.freeze()
    _report(summary.to_json(), out, json_output)
    if summary.failures:
        raise typer.Exit(1)


def _report(data: dict[str, Any], out: Path, json_output: bool) -> None:
    data["out"] = str(out)
    data["manifest"] = {"csv": str(out / "manifest.csv"), "json": str(out / "manifest.json")}
    if json_output:
        print_json(data)
        return
    console.print(
        f"{data['issued']} issued, {data['rewritten']} finished from an earlier run, "
        f"{data['skipped']} already done, {data['failed']} failed in {data['seconds']} s "
        f"({data['certificates_per_second']:,.0f} certificates/s); manifest: "
        f"{data['manifest']['csv']}",
        markup=False,
    )
    for failure in data["failures"][:20]:
        err_console.print(f"failed: {failure['source']}: {failure['reason']}", markup=False)
    if data["failed"] > 20:
        err_console.print(f"... and {data['failed'] - 20} more: see {out / 'failures.csv'}")


@app.command("sign")
def sign(
    source: Path = typer.Argument(
        ...,
        help="A folder of CSRs (PEM or DER), a CSV manifest (certificate_id,csr_path), "
        "or a tar/zip of CSRs.",
    ),
    ca: str = CaOption,
    project: str = ProjectOption,
    out: Path = OutOption,
    days: int | None = DaysOption,
    workers: int | None = WorkersOption,
    passphrase_file: Path | None = PassphraseFileOption,
    json_output: bool = JsonOption,
) -> None:
    """Sign many device CSRs under the same policy as 'fleetpki sign'.

    Writes OUT/<certificate ID>.crt.pem and .crt.der, OUT/ca-chain.pem, OUT/manifest.csv and
    manifest.json. Safe to kill: run the same command again to finish. A refused CSR is
    listed (file and reason) and does not stop the others; the exit code is then 1.

    Example: fleetpki bulk sign csrs/ --ca factory-1 --project acme --out run-42/
    """
    from fleetpki.bulk_inputs import CSRSource

    csrs = CSRSource(source)
    _run(
        mode="sign",
        ca=ca,
        project=project,
        out=out,
        days=days,
        workers=workers,
        passphrase_file=passphrase_file,
        json_output=json_output,
        items=csrs.items(),
        total=csrs.count,
    )


@app.command("issue")
def issue(
    count: int = typer.Option(..., "--count", min=1, help="How many devices."),
    id_format: str = typer.Option(
        "dev-{n:06d}", "--id-format", help="Certificate ID pattern; {n} is the device number."
    ),
    start: int = typer.Option(0, "--start", min=0, help="First device number."),
    ca: str = CaOption,
    project: str = ProjectOption,
    out: Path = OutOption,
    key_type: KeyType = typer.Option(KeyType.P256, "--key-type", help="Device key type."),
    days: int | None = DaysOption,
    workers: int | None = WorkersOption,
    passphrase_file: Path | None = PassphraseFileOption,
    json_output: bool = JsonOption,
) -> None:
    """Development kits: a key, CSR and certificate per device, for firmware and test rigs.

    Writes OUT/<certificate ID>.key.pem and .key.der (0600, unencrypted: these are test
    devices), .csr.pem, .crt.pem, .crt.der, plus OUT/ca-chain.pem and the manifests. Safe to
    kill and rerun.

    Example: fleetpki bulk issue --count 1000 --id-format "dev-{n:06d}" --ca factory-1
    --project acme --out kits/
    """
    from fleetpki.bulk_inputs import check_id_format, device_ids

    check_id_format(id_format, count, start)
    _run(
        mode="issue",
        ca=ca,
        project=project,
        out=out,
        days=days,
        workers=workers,
        passphrase_file=passphrase_file,
        json_output=json_output,
        items=device_ids(id_format, count, start),
        total=count,
        key_type=key_type,
    )
