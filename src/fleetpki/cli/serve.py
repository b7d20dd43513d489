"""Placeholder: `fleetpki serve` and `fleetpki quickstart` (built by the platform issue)."""

import typer


def register(app: typer.Typer) -> None:
    """Add `serve` and `quickstart` to the root app."""
