"""A store made before the console (revision p0001) upgrades in place, keeping its data."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from fleetpki import db
from fleetpki.platform.store import MIGRATIONS, Store


def test_upgrade_from_p0001_keeps_devices_and_events(tmp_path: Path, db_url: str | None) -> None:
    url = db_url or db.sqlite_url(tmp_path / "old.sqlite3")
    engine = db.create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "p0001")
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text("INSERT INTO projects (id, name, created_at) VALUES ('acme', 'Acme', :t)"),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO devices (id, project_id, name, certificate_id, enabled, created_at) "
                "VALUES ('d1', 'acme', 'dev-1', 'dev-1', true, :t)"
            ),
            {"t": now},
        )
        conn.execute(
            sa.text(
                "INSERT INTO auth_events (time, project_id, outcome, reason, transport, peer, "
                "device_id) VALUES (:t, 'acme', 'accepted', 'accepted', 'https', 'p', 'd1')"
            ),
            {"t": now},
        )
    engine.dispose()
    store = Store(url)  # upgrades to the head revision
    try:
        page = store.search_devices("acme")
        assert [d["name"] for d in page.items] == ["dev-1"]
        events = store.list_auth_events("acme", device_id="d1")
        assert len(events) == 1 and events[0]["issuer"] is None and events[0]["notAfter"] is None
        assert store.list_api_keys("acme") == []
    finally:
        store.close()
