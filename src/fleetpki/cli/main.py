"""The ``fleetpki`` entry point: the root command, global options and error handling."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from fleetpki import __version__
from fleetpki.cli import common
from fleetpki.errors import FleetPKIError

app = typer.Typer(
    name="fleetpki",
    help=(
        "Offline PKI for IoT device fleets, and the platform devices authenticate against.\n\n"
        "Example: fleetpki ca init --name root && fleetpki ca intermediate --name factory "
        "--parent root"
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fleetpki {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    home: Path | None = typer.Option(
        None,
        "--home",
        help="PKI home folder (default: $FLEETPKI_HOME, else ~/.fleetpki).",
        file_okay=False,
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    common.state().home = home


def _register() -> None:
    from fleetpki.cli import bulk, ca, inventory, keys, platform, serve, tools

    app.add_typer(ca.app, name="ca")
    app.add_typer(keys.key_app, name="key")
    app.add_typer(keys.csr_app, name="csr")
    app.add_typer(bulk.app, name="bulk")
    app.add_typer(platform.app, name="platform")
    tools.register(app)
    inventory.register(app)
    serve.register(app)


_register()


def main() -> None:
    """Run the CLI; bad input ends in one line on stderr and exit code 1, never a traceback."""
    try:
        app()
    except FleetPKIError as exc:
        common.err_console.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        common.err_console.print("interrupted", markup=False)
        sys.exit(130)
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        common.err_console.print(f"error: {exc.strerror or exc}{where}", markup=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
