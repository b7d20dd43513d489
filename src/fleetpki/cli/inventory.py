"""Inventory verbs: list, revoke, crl."""

from __future__ import annotations

from pathlib import Path

import typer

from fleetpki.cli.common import (
    ForceOption,
    JsonOption,
    PassphraseFileOption,
    ca_passphrase,
    console,
    open_home,
    print_json,
)
from fleetpki.errors import InputError, NotFoundError


def register(app: typer.Typer) -> None:
    app.command("list")(list_certificates)
    app.command("revoke")(revoke)
    app.command("crl")(crl)


def list_certificates(
    project: str | None = typer.Option(None, "--project", help="Only this project."),
    expiring_within: int | None = typer.Option(
        None, "--expiring-within", min=0, help="Only active certificates ending within DAYS."
    ),
    kind: str | None = typer.Option(None, "--kind", help="root, intermediate or device."),
    json_output: bool = JsonOption,
) -> None:
    """List issued certificates from the inventory.

    Example: fleetpki list --project acme --expiring-within 30 --json
    """
    rows = open_home().inventory.list(project=project, expiring_within=expiring_within, kind=kind)
    if json_output:
        print_json({"list": rows, "total": len(rows)})
        return
    if not rows:
        console.print("no certificates match")
        return
    from rich.table import Table

    table = Table("serial", "kind", "project", "certificate ID", "issuer", "not after", "status")
    for row in rows:
        table.add_row(
            row["serial"][:16] + "…",
            row["kind"],
            row["project"] or "-",
            row["certificate_id"] or "-",
            row["issuer_ca"],
            f"{row['not_after']:%Y-%m-%d}",
            row["status"],
        )
    console.print(table)
    console.print(f"{len(rows)} certificate(s)")


def revoke(
    serial: str | None = typer.Option(None, "--serial", help="Serial number (hex)."),
    project: str | None = typer.Option(None, "--project", help="Project slug (with --id)."),
    certificate_id: str | None = typer.Option(None, "--id", help="Certificate ID."),
    reason: str = typer.Option(
        "unspecified",
        "--reason",
        help="unspecified, keyCompromise, cACompromise, "
        "affiliationChanged, superseded, cessationOfOperation.",
    ),
    json_output: bool = JsonOption,
) -> None:
    """Revoke a certificate in the inventory; publish it with `fleetpki crl`.

    Example: fleetpki revoke --project acme --id dev-0001 --reason keyCompromise
    """
    from fleetpki.ca import REVOCATION_REASONS

    if reason not in REVOCATION_REASONS:
        raise InputError(f"unknown reason {reason!r}: use {', '.join(REVOCATION_REASONS)}")
    inventory = open_home().inventory
    if serial:
        target = serial.lower().removeprefix("0x").replace(":", "")
    elif project and certificate_id:
        rows = inventory.find(project=project, certificate_id=certificate_id, status="active")
        if not rows:
            raise NotFoundError(f"no active certificate for {certificate_id!r} in {project!r}")
        target = rows[0]["serial"]
    else:
        raise InputError("say which certificate: --serial HEX, or --project SLUG --id CERT_ID")
    row = inventory.revoke(target, reason)
    if json_output:
        print_json(row)
    else:
        console.print(
            f"revoked {row['subject']} (serial {row['serial']}); "
            f"publish with: fleetpki crl --ca {row['issuer_ca']} --out FILE",
            markup=False,
        )


def crl(
    ca: str = typer.Option(..., "--ca", help="CA whose CRL to sign."),
    out: Path = typer.Option(..., "--out", help="Output CRL file.", dir_okay=False),
    der: bool = typer.Option(False, "--der", help="Write DER instead of PEM."),
    next_update_days: int = typer.Option(
        30, "--next-update-days", min=1, help="Days until nextUpdate."
    ),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
    json_output: bool = JsonOption,
) -> None:
    """Sign a CRL listing every revoked certificate the CA issued.

    Example: fleetpki crl --ca factory-1 --out factory-1.crl.pem
    """
    from cryptography.hazmat.primitives import serialization

    from fleetpki.files import check_writable, write_file

    check_writable(out, force=force)
    home = open_home()
    authority = home.load_ca(ca, ca_passphrase(home, ca, passphrase_file))
    revocation_list = home.crl(authority, next_update_days=next_update_days)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_file(out, revocation_list.public_bytes(encoding), force=force)
    if json_output:
        print_json(
            {
                "path": str(out),
                "entries": len(revocation_list),
                "nextUpdate": revocation_list.next_update_utc,
            }
        )
    else:
        console.print(
            f"wrote CRL of {ca!r} with {len(revocation_list)} entries to {out}", markup=False
        )
