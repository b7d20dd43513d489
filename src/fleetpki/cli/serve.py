"""`fleetpki serve` (the platform) and `fleetpki quickstart` (the whole seed story, locally)."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from fleetpki.cli.common import JsonOption, print_json


def _serve(
    data: Path = typer.Option(
        Path("fleetpki-data"), "--data", help="Data folder: SQLite store, server CA, keys."
    ),
    db: str | None = typer.Option(
        None,
        "--db",
        help="Database URL, e.g. postgresql://user@host/db (default: SQLite in --data).",
    ),
    api: str = typer.Option("127.0.0.1:8080", "--api", help="Management API HOST:PORT."),
    https: str = typer.Option("0.0.0.0:8443", "--https", help="Device HTTPS (mTLS) HOST:PORT."),
    coaps: str = typer.Option("0.0.0.0:5684", "--coaps", help="Device CoAP/DTLS HOST:PORT."),
    no_coaps: bool = typer.Option(False, "--no-coaps", help="Do not serve CoAP/DTLS."),
    server_name: list[str] = typer.Option(
        [],
        "--server-name",
        help="Name devices dial, for the server certificate (repeatable; default localhost, "
        "127.0.0.1, ::1 and the hostname).",
    ),
    server_ca_cert: Path | None = typer.Option(
        None,
        "--server-ca-cert",
        help="Use this CA certificate for the server certificate.",
        dir_okay=False,
    ),
    server_ca_key: Path | None = typer.Option(
        None,
        "--server-ca-key",
        help="Key of --server-ca-cert (unencrypted or $FLEETPKI_PASSPHRASE).",
        dir_okay=False,
    ),
    admin_key_file: Path | None = typer.Option(
        None,
        "--admin-key-file",
        help="File holding the admin API key (else $FLEETPKI_ADMIN_KEY, else <data>/admin.key "
        "made on first start).",
        dir_okay=False,
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=0,
        help="HTTPS worker processes (default: CPU count; 0 = in-process).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every auth decision."),
) -> None:
    """Run the platform: management API, device HTTPS (mTLS) and CoAP/DTLS endpoints.

    Example: FLEETPKI_ADMIN_KEY=... fleetpki serve --data ./platform --https 0.0.0.0:8443
    """
    from fleetpki.errors import InputError
    from fleetpki.platform.server import ServeOptions, parse_address, serve

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if (server_ca_cert is None) != (server_ca_key is None):
        raise InputError("--server-ca-cert and --server-ca-key go together")
    options = ServeOptions(
        data_dir=data,
        db_url=db,
        api=parse_address(api, "127.0.0.1", 8080),
        https=parse_address(https, "0.0.0.0", 8443),  # noqa: S104
        coaps=None if no_coaps else parse_address(coaps, "0.0.0.0", 5684),  # noqa: S104
        server_names=list(server_name) or None,
        server_ca=(server_ca_cert, server_ca_key) if server_ca_cert and server_ca_key else None,
        admin_key_file=admin_key_file,
    )
    if workers is not None:
        options.workers = workers
    serve(options, announce=lambda line: print(line, flush=True))


def _quickstart(
    folder: Path = typer.Option(
        Path("fleetpki-quickstart"), "--dir", help="Where the CAs, device files and data go."
    ),
    json_output: bool = JsonOption,
) -> None:
    """The whole story on this machine: CAs, platform, project, CA upload, device, mTLS, whoami.

    Example: fleetpki quickstart --dir /tmp/fleetpki-demo
    """
    from fleetpki.platform.quickstart import run_quickstart

    summary = run_quickstart(folder, say=None if json_output else print)
    if json_output:
        print_json(summary)


def register(app: typer.Typer) -> None:
    """Add `serve` and `quickstart` to the root app."""
    app.command("serve")(_serve)
    app.command("quickstart")(_quickstart)
