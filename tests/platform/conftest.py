"""Platform fixtures: test CAs, a Platform on SQLite or PostgreSQL (every test runs on both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_testing import PKI, REQUIRE_PG, PgSchema, pem, pg_unavailable

from fleetpki.ca import CertificateAuthority
from fleetpki.platform.app import Platform

_PG_SKIPPED: list[str] = []


@pytest.fixture(scope="session")
def pki() -> PKI:
    root_a, _ = CertificateAuthority.create_root("root-a", common_name="Acme Root")
    inter_a, _ = root_a.create_intermediate("inter-a", common_name="Acme Factory")
    root_b, _ = CertificateAuthority.create_root("root-b", common_name="Other Root")
    stranger, _ = CertificateAuthority.create_root("stranger", common_name="Stranger Root")
    return PKI(root_a, inter_a, root_b, stranger)


@pytest.fixture(scope="session")
def pg_reason() -> str | None:
    return pg_unavailable()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, pg_reason: str | None) -> Iterator[str | None]:
    """None (SQLite in the data folder) or the URL of a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    _require_pg(pg_reason)
    with PgSchema() as schema:
        yield schema.url


@pytest.fixture
def pg_url(pg_reason: str | None) -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema (for tests that only make sense on PostgreSQL)."""
    _require_pg(pg_reason)
    with PgSchema() as schema:
        yield schema.url


def _require_pg(pg_reason: str | None) -> None:
    if pg_reason is not None:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required (FLEETPKI_REQUIRE_PG=1) but {pg_reason}")
        _PG_SKIPPED.append(pg_reason)
        pytest.skip(f"POSTGRESQL NOT TESTED: {pg_reason}")


@pytest.fixture
def platform(tmp_path: Path, db_url: str | None) -> Iterator[Platform]:
    """A platform with project ``acme`` (root + intermediate uploaded) and project ``other``."""
    opened = Platform.open(tmp_path / "data", db_url, event_flush_interval=0)
    yield opened
    opened.close()


@pytest.fixture
def acme(platform: Platform, pki: PKI) -> Platform:
    platform.store.create_project("acme", "Acme")
    platform.store.create_project("other", "Other")
    platform.store.upload_ca("acme", pem(pki.root_a.certificate), "root")
    platform.store.upload_ca("other", pem(pki.root_b.certificate), "root")
    return platform


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _PG_SKIPPED:
        terminalreporter.section("PostgreSQL NOT TESTED", sep="!", red=True, bold=True)
        terminalreporter.write_line(
            f"{len(_PG_SKIPPED)} platform tests skipped: {_PG_SKIPPED[0]}. "
            "Set FLEETPKI_REQUIRE_PG=1 to make this a failure.",
            red=True,
        )
