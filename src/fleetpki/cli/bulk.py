"""Placeholder: `fleetpki bulk` (built by its own issue)."""

import typer

app = typer.Typer(help="Not built yet.", no_args_is_help=True)
