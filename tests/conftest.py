"""Generic fixtures shared by every test area: PKI homes, the real CLI, the real openssl.

Only generic fixtures live here (listed in /work/helpers/core-fixtures.md); area-specific
fixtures belong in the area's own conftest or test module. Plain helpers are in
tests/fleetpki_testing.py.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetpki_testing import CliResult, Hierarchy, RunCli, make_hierarchy, run_fleetpki, run_openssl


@pytest.fixture
def pki_home(tmp_path: Path) -> Path:
    """An empty PKI home folder (not yet created: fleetpki creates it on first use)."""
    return tmp_path / "pki-home"


@pytest.fixture
def run_cli(pki_home: Path) -> RunCli:
    """``run_cli(*args, home=..., passphrase=...)`` → (rc, stdout, stderr); home defaults to
    ``pki_home`` and FLEETPKI_PASSPHRASE to TEST_PASSPHRASE (pass ``passphrase=None`` to unset).
    """

    def run(*args: str | os.PathLike[str], **kwargs: object) -> CliResult:
        kwargs.setdefault("home", pki_home)
        return run_fleetpki(*args, **kwargs)  # type: ignore[arg-type]

    return run


@pytest.fixture(scope="session")
def openssl() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``openssl(*args, check=True)`` → CompletedProcess with text stdout/stderr."""
    return run_openssl


@pytest.fixture(scope="module")
def hierarchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    """A module-wide PKI home with root ``root`` and intermediate ``factory``, unencrypted."""
    made = make_hierarchy(tmp_path_factory.mktemp("hierarchy"))
    yield made
    made.home.inventory.close()
