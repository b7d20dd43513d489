"""Top-level verbs: sign, device issue, convert, inspect, verify, lint."""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any

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
from fleetpki.errors import FleetPKIError, InputError, VerificationError

device_app = typer.Typer(
    help="Development kits: key, CSR and certificate in one go.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("sign")(sign)
    app.add_typer(device_app, name="device")
    app.command("convert")(convert)
    app.command("inspect")(inspect)
    app.command("verify")(verify)
    app.command("lint")(lint)


def _issued_files(cert: Any, chain: list[Any], *, der: bool, with_chain: bool) -> bytes:
    from fleetpki.formats import certificate_bytes

    data = certificate_bytes(cert, der=der)
    if with_chain:
        # Leaf plus intermediates: devices send these; the root stays with whoever trusts it.
        data += b"".join(certificate_bytes(c) for c in chain if c.subject != c.issuer)
    return data


def sign(
    csr_file: Path = typer.Argument(..., help="The device's CSR (PEM or DER).", dir_okay=False),
    ca: str = typer.Option(..., "--ca", help="Name of the signing CA."),
    project: str = typer.Option(..., "--project", help="Project slug (the certificate's O)."),
    certificate_id: str | None = typer.Option(
        None, "--id", help="Certificate ID (CN); default: the CSR's CN. Both given must match."
    ),
    days: int | None = typer.Option(None, "--days", min=1, help="Lifetime (default 3650)."),
    out: Path = typer.Option(..., "--out", help="Output certificate file.", dir_okay=False),
    der: bool = typer.Option(False, "--der", help="Write DER instead of PEM."),
    chain: bool = typer.Option(False, "--chain", help="Append the intermediates (PEM only)."),
    renew: bool = typer.Option(
        False, "--renew", help="Replace the active certificate of this certificate ID."
    ),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
    json_output: bool = JsonOption,
) -> None:
    """Sign a device CSR into a device certificate under the project policy.

    Only the CSR's public key is used, after its signature is checked; the subject is
    O=<project>, CN=<certificate ID>; requested extensions are ignored. The inventory row is
    committed before the file is written.

    Example: fleetpki sign device.csr.pem --ca factory-1 --project acme --out device.crt.pem
    """
    from fleetpki.files import check_writable, read_file, write_file
    from fleetpki.formats import fingerprint, load_csr
    from fleetpki.naming import validate_certificate_id, validate_project_slug

    if der and chain:
        raise InputError("DER holds one certificate: drop --chain or use PEM")
    validate_project_slug(project)
    if certificate_id is not None:
        validate_certificate_id(certificate_id)
    check_writable(out, force=force)
    csr = load_csr(read_file(csr_file))
    home = open_home()
    authority = home.load_ca(ca, ca_passphrase(home, ca, passphrase_file))
    cert = home.sign(
        authority, csr, project_slug=project, certificate_id=certificate_id, days=days, renew=renew
    )
    issuers = [authority.certificate, *authority.chain]
    write_file(out, _issued_files(cert, issuers, der=der, with_chain=chain), force=force)
    summary = {
        "path": str(out),
        "subject": cert.subject.rfc4514_string(),
        "serialNumber": f"{cert.serial_number:x}",
        "issuer": ca,
        "notAfter": cert.not_valid_after_utc,
        "sha256Fingerprint": fingerprint(cert),
        # A certificate never outlives its CA: the profile clamps notAfter to the CA's.
        "clampedToCA": cert.not_valid_after_utc == authority.certificate.not_valid_after_utc,
    }
    if json_output:
        print_json(summary)
    else:
        console.print(
            f"signed {summary['subject']} (serial {summary['serialNumber']}) -> {out}", markup=False
        )
        if summary["clampedToCA"]:
            console.print(
                f"note: notAfter cut to the CA's own notAfter, {cert.not_valid_after_utc:%Y-%m-%d}",
                markup=False,
            )


@device_app.command("issue")
def device_issue(
    ca: str = typer.Option(..., "--ca", help="Name of the signing CA."),
    project: str = typer.Option(..., "--project", help="Project slug."),
    certificate_id: str = typer.Option(..., "--id", help="Certificate ID."),
    out_dir: Path = typer.Option(
        ..., "--out-dir", help="Folder for the device's files.", file_okay=False
    ),
    key_type: str = typer.Option("p256", "--key-type", help="p256, p384, rsa2048 or rsa3072."),
    days: int | None = typer.Option(None, "--days", min=1, help="Lifetime (default 3650)."),
    renew: bool = typer.Option(False, "--renew", help="Replace an active certificate."),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
    json_output: bool = JsonOption,
) -> None:
    """Development kit: a key, CSR and certificate for one device (PEM and DER).

    Production devices make their own key and send a CSR; this is for dev boards and tests.
    Writes device.key.pem/.der (0600), device.csr.pem, device.crt.pem/.der, ca-chain.pem.

    Example: fleetpki device issue --ca factory-1 --project acme --id dev-0001 --out-dir kit/
    """
    from cryptography.hazmat.primitives import serialization

    from fleetpki.csr import create_csr
    from fleetpki.files import check_writable, write_file
    from fleetpki.formats import certificate_bytes
    from fleetpki.keys import generate_private_key, serialize_private_key
    from fleetpki.naming import validate_certificate_id, validate_project_slug

    names = [
        "device.key.pem",
        "device.key.der",
        "device.csr.pem",
        "device.crt.pem",
        "device.crt.der",
        "ca-chain.pem",
    ]
    # Everything that can be refused is checked before the folder is created; a folder this
    # command created is removed again if issuance fails, so bad input leaves nothing behind.
    validate_project_slug(project)
    validate_certificate_id(certificate_id)
    key = generate_private_key(key_type)
    home = open_home()
    authority = home.load_ca(ca, ca_passphrase(home, ca, passphrase_file))
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FleetPKIError(f"cannot create {out_dir}: {exc.strerror}") from None
    try:
        for name in names:
            check_writable(out_dir / name, force=force)
        csr = create_csr(key, project, certificate_id)
        cert = home.sign(
            authority,
            csr,
            project_slug=project,
            certificate_id=certificate_id,
            days=days,
            renew=renew,
        )
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    chain = [authority.certificate, *authority.chain]
    files = {
        "device.key.pem": (serialize_private_key(key, None), True),
        "device.key.der": (serialize_private_key(key, None, der=True), True),
        "device.csr.pem": (csr.public_bytes(serialization.Encoding.PEM), False),
        "device.crt.pem": (certificate_bytes(cert), False),
        "device.crt.der": (certificate_bytes(cert, der=True), False),
        "ca-chain.pem": (b"".join(certificate_bytes(c) for c in chain), False),
    }
    for name, (data, private) in files.items():
        write_file(out_dir / name, data, private=private, force=force)
    if json_output:
        print_json(
            {
                "dir": str(out_dir),
                "serialNumber": f"{cert.serial_number:x}",
                "subject": cert.subject.rfc4514_string(),
                "files": names,
            }
        )
    else:
        console.print(f"issued {cert.subject.rfc4514_string()} into {out_dir}/", markup=False)


def convert(
    input_file: Path = typer.Argument(
        ..., help="Certificate, CSR, CRL or key (PEM or DER).", dir_okay=False
    ),
    to: str = typer.Option(..., "--to", help="pem, der, or p12 (PKCS#12: needs --key, --out)."),
    out: Path | None = typer.Option(
        None, "--out", help="Output file (default: stdout; required for p12).", dir_okay=False
    ),
    key: Path | None = typer.Option(
        None, "--key", help="For --to p12: the certificate's private key.", dir_okay=False
    ),
    passphrase_file: Path | None = PassphraseFileOption,
    force: bool = ForceOption,
) -> None:
    """Convert between PEM and DER (the DER bytes are kept exactly), or export PKCS#12.

    For p12, IN holds the certificate, optionally followed by its chain (as `sign --chain`
    writes it); the PKCS#12 file is protected (AES-256, PBKDF2 600,000 rounds) with the
    passphrase from --passphrase-file, $FLEETPKI_PASSPHRASE or a prompt, which also unlocks an
    encrypted --key.

    Example: fleetpki convert device.crt.pem --to der --out device.crt.der
    """
    from fleetpki.files import check_writable, read_file, write_file
    from fleetpki.formats import Kind, read_blocks
    from fleetpki.formats import convert as do_convert

    target = to.lower()
    if target == "p12":
        if out is None or key is None:
            raise InputError("--to p12 needs --key KEY and --out FILE")
        check_writable(out, force=force)
        blob = _pkcs12(read_file(input_file), key, passphrase_file)
        write_file(out, blob, private=True, force=force)
        console.print(f"wrote {out}", markup=False)
        return
    if key is not None:
        raise InputError("--key is only for --to p12")
    data = read_file(input_file)
    result = do_convert(data, target)
    if out is None:
        if target == "der" and sys.stdout.isatty():
            raise InputError("refusing to print DER to a terminal: use --out FILE")
        sys.stdout.buffer.write(result)
        return
    check_writable(out, force=force)
    private = any(b.kind is Kind.PRIVATE_KEY for b in read_blocks(data))
    write_file(out, result, private=private, force=force)
    console.print(f"wrote {out}", markup=False)


def _pkcs12(cert_data: bytes, key_file: Path, passphrase_file: Path | None) -> bytes:
    from cryptography.x509.oid import NameOID

    from fleetpki.cli.common import read_passphrase
    from fleetpki.files import read_file
    from fleetpki.formats import export_pkcs12, load_certificates
    from fleetpki.keys import is_encrypted_key, load_private_key

    certs = load_certificates(cert_data)
    key_data = read_file(key_file)
    key_passphrase = (
        read_passphrase(passphrase_file, purpose=f"the key {key_file}")
        if is_encrypted_key(key_data)
        else None
    )
    private_key = load_private_key(key_data, key_passphrase)
    if private_key.public_key() != certs[0].public_key():
        raise InputError(f"{key_file} is not the key of the certificate")
    names = certs[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    friendly = str(names[0].value) if names else "certificate"
    passphrase = read_passphrase(passphrase_file, purpose="the PKCS#12 file", confirm=True)
    return export_pkcs12(friendly, private_key, certs[0], certs[1:], passphrase)


def print_description(entry: dict[str, Any], indent: str = "") -> None:
    for key, value in entry.items():
        if isinstance(value, dict):
            console.print(f"{indent}{key}:", markup=False)
            print_description(value, indent + "  ")
        else:
            console.print(f"{indent}{key}: {value}", markup=False)


def inspect(
    input_file: Path = typer.Argument(
        ..., help="Certificate, CSR, CRL or key (PEM or DER).", dir_okay=False
    ),
    json_output: bool = JsonOption,
) -> None:
    """Show what a file holds: subject, issuer, validity, key, extensions, fingerprint.

    Example: fleetpki inspect device.crt.der --json
    """
    from fleetpki.files import read_file
    from fleetpki.formats import describe

    entries = describe(read_file(input_file))
    if json_output:
        print_json(entries if len(entries) > 1 else entries[0])
        return
    for index, entry in enumerate(entries):
        if index:
            console.print("")
        print_description(entry)


def verify(
    cert_file: Path = typer.Argument(
        ...,
        help="Device certificate, optionally followed by intermediates (PEM or DER).",
        dir_okay=False,
    ),
    ca_file: Path = typer.Option(..., "--ca-file", help="Trusted CA certificate(s)."),
    project: str | None = typer.Option(None, "--project", help="Require O=<project>."),
    crl: list[Path] = typer.Option([], "--crl", help="CRL file(s) to check (repeatable)."),
    json_output: bool = JsonOption,
) -> None:
    """Verify a device certificate: chain to a trusted CA, validity, CA flags, device policy,
    project, revocation. Exit 1 with the reason when it fails.

    Example: fleetpki verify device.crt.pem --ca-file chain.pem --project acme
    """
    from fleetpki.files import read_file
    from fleetpki.formats import load_certificates, load_crl
    from fleetpki.verify import build_path, check_device_leaf, check_revocation, describe

    presented = load_certificates(read_file(cert_file))
    trusted = load_certificates(read_file(ca_file))
    roots = [c for c in trusted if c.subject == c.issuer] or trusted
    extra = [c for c in trusted if c not in roots]
    crls = [load_crl(read_file(path)) for path in crl]
    leaf = presented[0]
    try:
        path = build_path(leaf, [*presented[1:], *extra], roots)
        check_device_leaf(leaf, project)
        check_revocation(path, crls, require_current=True)
    except VerificationError as exc:
        if json_output:
            print_json({"valid": False, "reason": str(exc)})
            raise typer.Exit(1) from None
        raise
    chain = [describe(c) for c in path.certificates]
    if json_output:
        print_json({"valid": True, "path": chain})
    else:
        console.print(f"OK: {' <- '.join(reversed(chain))}", markup=False)


def lint(
    cert_file: Path = typer.Argument(..., help="Certificate (PEM or DER).", dir_okay=False),
    severity: str = typer.Option("WARNING", "--severity", help="Lowest severity to report."),
    json_output: bool = JsonOption,
) -> None:
    """Lint a certificate with pkilint's RFC 5280 linter; exit 1 if anything is found.

    Example: fleetpki lint device.crt.pem --severity NOTICE
    """
    from fleetpki.files import read_file
    from fleetpki.formats import load_certificates
    from fleetpki.lint import SEVERITIES, lint_certificate

    level = severity.upper()
    if level not in SEVERITIES:
        raise InputError(f"unknown severity {severity!r}: use one of {', '.join(SEVERITIES)}")
    from cryptography.hazmat.primitives import serialization

    results: list[dict[str, Any]] = []
    for cert in load_certificates(read_file(cert_file)):
        findings = lint_certificate(cert.public_bytes(serialization.Encoding.DER), level)
        results.append(
            {
                "subject": cert.subject.rfc4514_string(),
                "findings": [dataclasses.asdict(f) for f in findings],
            }
        )
    total = sum(len(r["findings"]) for r in results)
    if json_output:
        print_json({"findings": total, "certificates": results})
    else:
        for r in results:
            for f in r["findings"]:
                console.print(
                    f"{f['severity']} {f['code']}: {f['message'] or ''} ({f['node']})", markup=False
                )
        console.print(f"{total} finding(s) at {level} or above", markup=False)
    if total:
        raise typer.Exit(1)
