"""`fleetpki key ...` and `fleetpki csr ...`: device keys and certificate requests."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization

from fleetpki.cli.common import (
    ForceOption,
    JsonOption,
    PassphraseFileOption,
    console,
    print_json,
    read_passphrase,
)
from fleetpki.keys import KeyType

key_app = typer.Typer(help="Generate private keys.", no_args_is_help=True)
csr_app = typer.Typer(help="Create certificate signing requests.", no_args_is_help=True)


@key_app.command("generate")
def generate(
    out: Path = typer.Argument(..., help="Output file for the private key.", dir_okay=False),
    key_type: KeyType = typer.Option(KeyType.P256, "--key-type", help="Key type."),
    der: bool = typer.Option(False, "--der", help="Write DER instead of PEM."),
    encrypt: bool = typer.Option(
        False, "--encrypt", help="Encrypt the key (PKCS#8, PBES2); passphrase as for CA keys."
    ),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
    json_output: bool = JsonOption,
) -> None:
    """Generate a private key (PKCS#8, file mode 0600). Device keys stay unencrypted by default,
    since firmware loads them as they are; use --encrypt for anything else.

    Example: fleetpki key generate device.key.pem --key-type p256
    """
    from fleetpki.files import check_writable, write_file
    from fleetpki.keys import generate_private_key, serialize_private_key

    check_writable(out, force=force)
    passphrase = (
        read_passphrase(passphrase_file, purpose=f"the key {out}", confirm=True)
        if encrypt
        else None
    )
    key = generate_private_key(key_type)
    write_file(out, serialize_private_key(key, passphrase, der=der), private=True, force=force)
    if json_output:
        print_json(
            {
                "path": str(out),
                "keyType": key_type.value,
                "encrypted": encrypt,
                "format": "der" if der else "pem",
            }
        )
    else:
        console.print(f"wrote {key_type.value} private key to {out} (mode 0600)", markup=False)


@csr_app.command("create")
def create(
    key: Path = typer.Option(
        ..., "--key", help="The device's private key (PEM or DER).", dir_okay=False
    ),
    project: str = typer.Option(..., "--project", help="Project slug (becomes O)."),
    certificate_id: str = typer.Option(..., "--id", help="Certificate ID (becomes CN)."),
    out: Path = typer.Option(..., "--out", help="Output CSR file.", dir_okay=False),
    der: bool = typer.Option(False, "--der", help="Write DER instead of PEM."),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
    json_output: bool = JsonOption,
) -> None:
    """Create a CSR with subject O=<project>, CN=<certificate ID>, signed by the device key.

    Example: fleetpki csr create --key device.key.pem --project acme --id dev-0001 --out dev.csr
    """
    from fleetpki.csr import create_csr
    from fleetpki.files import check_writable, read_file, write_file
    from fleetpki.keys import is_encrypted_key, load_private_key
    from fleetpki.naming import validate_certificate_id, validate_project_slug

    validate_project_slug(project)
    validate_certificate_id(certificate_id)
    check_writable(out, force=force)
    data = read_file(key)
    passphrase = (
        read_passphrase(passphrase_file, purpose=f"the key {key}")
        if is_encrypted_key(data)
        else None
    )
    csr = create_csr(load_private_key(data, passphrase), project, certificate_id)
    encoding = serialization.Encoding.DER if der else serialization.Encoding.PEM
    write_file(out, csr.public_bytes(encoding), force=force)
    if json_output:
        print_json({"path": str(out), "subject": csr.subject.rfc4514_string()})
    else:
        console.print(f"wrote CSR for {csr.subject.rfc4514_string()} to {out}", markup=False)
