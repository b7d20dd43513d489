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


def _usage_line(exc: typer.TyperException) -> str:
    """One line for a command-line usage error (click prints four)."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = " ".join(message.split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"error: {message}{hint}"


def main() -> None:
    """Run the CLI; bad input ends in one line on stderr and a non-zero exit, never a traceback.

    Exit codes: 0 success, 1 refused or failed (with the reason), 2 command-line usage error.
    """
    try:
        result = app(standalone_mode=False)
    except FleetPKIError as exc:
        common.err_console.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except typer.Abort:
        common.err_console.print("aborted", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        common.err_console.print("interrupted", markup=False)
        sys.exit(130)
    except typer.TyperException as exc:  # click's usage errors, bundled by Typer
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            sys.exit(0)
        common.err_console.print(_usage_line(exc), markup=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        common.err_console.print(f"error: {exc.strerror or exc}{where}", markup=False)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
