"""Storage faults answer 503 in the JSON error shape with the reason, and recovery needs no
restart: a locked SQLite database, a full one, an unreachable PostgreSQL server."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from platform_testing import PKI, pem

from fleetpki import db
from fleetpki.platform.api import create_app
from fleetpki.platform.app import Platform
from fleetpki.platform.identity import DeviceIdentity

ADMIN = "admin-key-for-store-faults-0123"


@pytest.fixture
def sqlite_platform(tmp_path: Path) -> Iterator[Platform]:
    opened = Platform.open(tmp_path / "data", event_flush_interval=0)
    opened.store.create_project("acme", "Acme")
    yield opened
    opened.close()


@pytest.fixture
def client(sqlite_platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_platform, ADMIN), headers={"x-api-key": ADMIN}) as test:
        yield test


def assert_unavailable(response: Any, reason: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"]
    error = response.json()["error"]
    assert error["code"] == "store_unavailable" and reason in error["message"], error
    assert "INSERT" not in error["message"] and "SELECT" not in error["message"]


def _on_every_connection(platform: Platform, pragma: str) -> None:
    """Run ``pragma`` on each new connection of the platform's pool (and start the pool over)."""

    @sa.event.listens_for(platform.store.engine, "connect")
    def _pragma(connection: sqlite3.Connection, _record: Any) -> None:
        connection.execute(pragma)

    platform.store.engine.dispose()


def test_locked_database_is_503_then_recovers(
    client: TestClient, sqlite_platform: Platform, tmp_path: Path
) -> None:
    _on_every_connection(sqlite_platform, "PRAGMA busy_timeout = 200")
    holder = sqlite3.connect(tmp_path / "data" / "platform.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        assert_unavailable(client.post("/v1/projects", json={"id": "locked"}), "locked")
        assert_unavailable(client.post("/v1/projects/acme/devices", json={"name": "d"}), "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert client.post("/v1/projects", json={"id": "locked"}).status_code == 201


def test_full_disk_is_503(client: TestClient, sqlite_platform: Platform, pki: PKI) -> None:
    with sqlite_platform.store.engine.connect() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
    _on_every_connection(sqlite_platform, f"PRAGMA max_page_count = {pages}")
    body = {"certFile": base64.b64encode(pem(pki.root_a.certificate) * 1).decode()}
    names = [{"name": f"device-{i:04d}-" + "x" * 80} for i in range(200)]
    answers = [client.post("/v1/projects/acme/devices", json=n) for n in names]
    answers.append(client.post("/v1/projects/acme/certificates", json=body))
    full = [a for a in answers if a.status_code == 503]
    assert full, [a.status_code for a in answers]
    assert_unavailable(full[0], "full")
    assert all(a.status_code in (201, 503) for a in answers)


def test_unreachable_postgresql_is_503(sqlite_platform: Platform) -> None:
    store = sqlite_platform.store
    working = store.engine, store.reader
    # A real connection attempt to a port nobody listens on.
    store.engine = db.create_engine(
        "postgresql://fleetpki@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    store.reader = db.reader(store.engine)
    try:
        with TestClient(create_app(sqlite_platform, ADMIN)) as test:
            response = test.get(
                "/v1/projects/acme/certificates", headers={"x-api-key": "fpk_project-key"}
            )
            assert_unavailable(response, "connection")
            identity = DeviceIdentity("acme", "0" * 32, "d", "d")
            answer = sqlite_platform.resources.handle(identity, "PUT", "state", b"{}")
            assert answer.status == 503 and b"store_unavailable" in answer.body
    finally:
        store.engine.dispose()
        store.engine, store.reader = working
