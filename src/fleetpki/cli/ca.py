"""`fleetpki ca ...`: create, import, list, show and export CAs."""

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
    read_passphrase,
)
from fleetpki.errors import InputError
from fleetpki.formats import certificate_bytes, describe_certificate
from fleetpki.keys import KeyType

app = typer.Typer(
    help="Create and manage CAs: a root, intermediates under it, or one made with openssl.",
    no_args_is_help=True,
)

KeyTypeOption = typer.Option(KeyType.P256, "--key-type", help="Key type of the new CA.")
NoPassphraseOption = typer.Option(
    False, "--no-passphrase", help="Store the CA key unencrypted (not recommended)."
)


def _new_key_passphrase(
    no_passphrase: bool, passphrase_file: Path | None, name: str
) -> bytes | None:
    if no_passphrase:
        return None
    return read_passphrase(passphrase_file, purpose=f"the new CA {name!r} key", confirm=True)


@app.command("init")
def init(
    name: str = typer.Option(..., "--name", help="Name of the CA in this PKI home."),
    cn: str | None = typer.Option(None, "--cn", help="Subject common name (default: NAME)."),
    key_type: KeyType = KeyTypeOption,
    days: int | None = typer.Option(None, "--days", min=1, help="Lifetime (default 7300)."),
    passphrase_file: Path | None = PassphraseFileOption,
    no_passphrase: bool = NoPassphraseOption,
    json_output: bool = JsonOption,
) -> None:
    """Create a root CA (self-signed; key encrypted at rest).

    Example: FLEETPKI_PASSPHRASE=... fleetpki ca init --name root --cn "Acme Root CA"
    """
    home = open_home()
    passphrase = _new_key_passphrase(no_passphrase, passphrase_file, name)
    home.init_root(name, common_name=cn, key_type=key_type, days=days, passphrase=passphrase)
    _report(home, name, json_output, "created root CA")


@app.command("intermediate")
def intermediate(
    name: str = typer.Option(..., "--name", help="Name of the new intermediate CA."),
    parent: str = typer.Option(..., "--parent", help="Name of the CA that signs it."),
    cn: str | None = typer.Option(None, "--cn", help="Subject common name (default: NAME)."),
    key_type: KeyType | None = typer.Option(
        None, "--key-type", help="Key type (default: the parent's)."
    ),
    days: int | None = typer.Option(None, "--days", min=1, help="Lifetime (default 3650)."),
    passphrase_file: Path | None = PassphraseFileOption,
    no_passphrase: bool = NoPassphraseOption,
    json_output: bool = JsonOption,
) -> None:
    """Create an intermediate CA (pathlen 0) that signs device certificates.

    The same passphrase source unlocks the parent and protects the new key.

    Example: fleetpki ca intermediate --name factory-1 --parent root --passphrase-file pw.txt
    """
    home = open_home()
    parent_passphrase = ca_passphrase(home, parent, passphrase_file)
    passphrase = (
        None
        if no_passphrase
        else (parent_passphrase or _new_key_passphrase(False, passphrase_file, name))
    )
    home.create_intermediate(
        name,
        parent=parent,
        parent_passphrase=parent_passphrase,
        common_name=cn,
        key_type=key_type,
        days=days,
        passphrase=passphrase,
    )
    _report(home, name, json_output, "created intermediate CA")


@app.command("import")
def import_ca(
    name: str = typer.Option(..., "--name", help="Name to give the CA in this PKI home."),
    cert: Path = typer.Option(..., "--cert", help="CA certificate (PEM or DER).", dir_okay=False),
    key: Path = typer.Option(..., "--key", help="CA private key (PEM or DER).", dir_okay=False),
    key_passphrase_file: Path | None = typer.Option(
        None, "--key-passphrase-file", help="Passphrase of the key file being imported, if any."
    ),
    passphrase_file: Path | None = PassphraseFileOption,
    no_passphrase: bool = NoPassphraseOption,
    json_output: bool = JsonOption,
) -> None:
    """Adopt a CA made elsewhere, e.g. with the seed's openssl recipe; its key is re-encrypted.

    Example: fleetpki ca import --name seed-root --cert ca.crt.pem --key ca.key.pem
    """
    from fleetpki.files import read_file
    from fleetpki.keys import is_encrypted_key

    home = open_home()
    key_data = read_file(key)
    cert_data = read_file(cert)
    key_passphrase = None
    if is_encrypted_key(key_data):
        key_passphrase = read_passphrase(
            key_passphrase_file or passphrase_file, purpose=f"the key file {key}"
        )
    passphrase = _new_key_passphrase(no_passphrase, passphrase_file, name)
    home.import_ca(
        name,
        cert_data=cert_data,
        key_data=key_data,
        key_passphrase=key_passphrase,
        passphrase=passphrase,
    )
    _report(home, name, json_output, "imported CA")


def _report(home: object, name: str, json_output: bool, what: str) -> None:
    info = home.ca_info(name)  # type: ignore[attr-defined]
    if json_output:
        print_json(info.summary())
        return
    folder = home.ca_dir(name)  # type: ignore[attr-defined]
    console.print(f"{what} {name!r}: {info.certificate.subject.rfc4514_string()}", markup=False)
    console.print(f"  certificate: {folder / 'ca.crt.pem'}", markup=False)
    state = "encrypted" if info.encrypted else "NOT encrypted"
    console.print(f"  key ({state}, 0600): {folder / 'ca.key.pem'}", markup=False)


@app.command("list")
def list_cas(json_output: bool = JsonOption) -> None:
    """List the CAs in this PKI home.

    Example: fleetpki ca list --json
    """
    home = open_home()
    infos = [home.ca_info(name).summary() for name in home.ca_names()]
    if json_output:
        print_json(infos)
        return
    if not infos:
        console.print("no CAs yet: create one with 'fleetpki ca init --name root'")
        return
    from rich.table import Table

    table = Table("name", "kind", "parent", "subject", "not after", "key")
    for info in infos:
        table.add_row(
            info["name"],
            info["kind"],
            info["parent"] or "-",
            info["subject"],
            info["notAfter"],
            "encrypted" if info["keyEncrypted"] else "plain",
        )
    console.print(table)


@app.command("show")
def show(name: str = typer.Argument(..., help="CA name."), json_output: bool = JsonOption) -> None:
    """Show a CA's certificate details.

    Example: fleetpki ca show root
    """
    home = open_home()
    info = home.ca_info(name)
    data = {**info.summary(), "certificate": describe_certificate(info.certificate)}
    if json_output:
        print_json(data)
        return
    from fleetpki.cli.tools import print_description

    console.print(f"CA {name!r} ({info.kind}, parent {info.parent or '-'})", markup=False)
    print_description(data["certificate"])


@app.command("export")
def export(
    name: str = typer.Argument(..., help="CA name."),
    der: bool = typer.Option(False, "--der", help="Write DER (one certificate)."),
    chain: bool = typer.Option(False, "--chain", help="Include the issuers up to the root."),
    out: Path | None = typer.Option(
        None, "--out", help="Output file (default: stdout).", dir_okay=False
    ),
    force: bool = ForceOption,
) -> None:
    """Export a CA certificate (for uploading to the platform, or for devices to trust).

    Example: fleetpki ca export factory-1 --chain --out chain.pem
    """
    import sys

    from fleetpki.files import check_writable, write_file

    home = open_home()
    certs = home.ca_chain(name) if chain else [home.ca_info(name).certificate]
    if der and len(certs) > 1:
        raise InputError("DER holds one certificate: drop --chain or use PEM")
    data = b"".join(certificate_bytes(c, der=der) for c in certs)
    if out is None:
        if der and sys.stdout.isatty():
            raise InputError("refusing to print DER to a terminal: use --out FILE")
        sys.stdout.buffer.write(data)
        return
    check_writable(out, force=force)
    write_file(out, data, force=force)
    console.print(f"wrote {out}", markup=False)
