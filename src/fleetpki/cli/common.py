"""What every command shares: the PKI home, passphrases, output (text/JSON), and errors.

Commands raise FleetPKIError for anything the user got wrong; ``fleetpki.cli.main.main`` turns
that into one line on stderr and a non-zero exit. No command prints a traceback for bad input.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from fleetpki.errors import FleetPKIError, PassphraseError
from fleetpki.files import read_file

ENV_PASSPHRASE = "FLEETPKI_PASSPHRASE"

# Piped output is for reading whole (grep, less, a log): tables there are not cut to 80 columns.
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


class State:
    """Global options, set by the root callback and read by commands via ``state()``."""

    home: Path | None = None


_STATE = State()


def state() -> State:
    return _STATE


def home_path() -> Path:
    from fleetpki.home import resolve_home

    return resolve_home(_STATE.home)


def open_home() -> Any:
    from fleetpki.home import Home

    return Home(home_path())


PassphraseFileOption = typer.Option(
    None,
    "--passphrase-file",
    help="Read the passphrase from this file (first line).",
    dir_okay=False,
)
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts.")
ForceOption = typer.Option(False, "--force", help="Overwrite an existing output file.")


def read_passphrase(passphrase_file: Path | None, *, purpose: str, confirm: bool = False) -> bytes:
    """Passphrase from --passphrase-file, $FLEETPKI_PASSPHRASE, or a prompt on a terminal.

    Never from argv. Raises PassphraseError when none can be had.
    """
    if passphrase_file is not None:
        data = read_file(passphrase_file, limit=4096)
        line = data.splitlines()[0] if data.strip() else b""
        if not line:
            raise PassphraseError(f"passphrase file {passphrase_file} is empty")
        return line
    env = os.environ.get(ENV_PASSPHRASE)
    if env:
        return env.encode()
    if not sys.stdin.isatty():
        raise PassphraseError(
            f"a passphrase is needed for {purpose}: use --passphrase-file, "
            f"${ENV_PASSPHRASE}, or run on a terminal"
        )
    first = getpass.getpass(f"Passphrase for {purpose}: ")
    if not first:
        raise PassphraseError("empty passphrase")
    if confirm and getpass.getpass("Repeat the passphrase: ") != first:
        raise PassphraseError("the passphrases do not match")
    return first.encode()


def ca_passphrase(home: Any, name: str, passphrase_file: Path | None) -> bytes | None:
    """The passphrase for CA ``name``'s key, asked for only when the key is encrypted."""
    if not home.ca_key_encrypted(name):
        return None
    return read_passphrase(passphrase_file, purpose=f"CA {name!r} key")


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def print_json(data: Any) -> None:
    """JSON on stdout (plain print: Rich must not wrap or colour it)."""
    sys.stdout.write(json.dumps(data, indent=2, default=_default) + "\n")


def fail(message: str) -> None:
    raise FleetPKIError(message)
