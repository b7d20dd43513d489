"""The store's core: engine, change counters and listeners, projects and API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from fleetpki import db
from fleetpki.errors import ConflictError, InputError, NotFoundError
from fleetpki.naming import SLUG_PATTERN, validate_project_slug
from fleetpki.platform.store.schema import (
    api_keys,
    auth_events,
    console_sessions,
    counters,
    projects,
)

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "p0002"
API_KEY_PREFIX = "fpk_"
MAX_NAME = 100


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


def hash_api_key(key: str) -> str:
    """SHA-256 hex of an API key: keys are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(key.encode()).hexdigest()


def iso_time(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; everything stored is UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_device_name(name: str) -> str:
    """Return ``name`` if usable as a device name; raise InputError saying why not."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise InputError(f"device name must be 1-{MAX_NAME} characters")
    if name != name.strip() or not name.isprintable():
        raise InputError("device name must be printable, without whitespace at the ends")
    return name


class StoreBase:
    """Engine, change counters, listeners; projects and API keys."""

    def __init__(self, url: str) -> None:
        # A database that does not answer must not freeze a device endpoint's event loop for
        # minutes: PostgreSQL connections give up after a few seconds.
        extra: dict[str, Any] = (
            {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
        )
        self.engine = db.create_engine(url, **extra)
        self.reader = db.reader(self.engine)
        db.upgrade(self.engine, MIGRATIONS, HEAD)
        self._listeners: list[Callable[[], None]] = []
        self._flushers: list[Callable[[], None]] = []

    def close(self) -> None:
        self.engine.dispose()

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after every change made through this store (same process)."""
        self._listeners.append(listener)

    def _bump(self, conn: sa.Connection, *names: str) -> None:
        for name in names:
            conn.execute(
                counters.update().where(counters.c.name == name).values(value=counters.c.value + 1)
            )

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()

    def counters(self) -> tuple[int, int]:
        """(trust, devices) change counters."""
        with self.reader.connect() as conn:
            rows = dict(conn.execute(sa.select(counters.c.name, counters.c.value)).all())
        return int(rows.get("trust", 0)), int(rows.get("devices", 0))

    # -- projects and API keys ---------------------------------------------------------------

    def create_project(self, slug: str, name: str | None = None) -> dict[str, Any]:
        """A new project; raises InputError (bad slug), ConflictError (exists)."""
        validate_project_slug(slug)
        name = (name or slug).strip()
        if not name or len(name) > 200 or not name.isprintable():
            raise InputError("project name must be 1-200 printable characters")
        now = utcnow()
        try:
            with self.engine.begin() as conn:
                conn.execute(projects.insert().values(id=slug, name=name, created_at=now))
                self._bump(conn, "trust")
        except sa.exc.IntegrityError:
            raise ConflictError(f"project {slug!r} already exists") from None
        self._changed()
        return {"id": slug, "name": name, "createdAt": iso_time(now)}

    def list_projects(self) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(sa.select(projects).order_by(projects.c.id)).mappings().all()
        return [
            {"id": r["id"], "name": r["name"], "createdAt": iso_time(r["created_at"])} for r in rows
        ]

    def get_project(self, slug: str) -> dict[str, Any]:
        """The project; raises NotFoundError."""
        if not SLUG_PATTERN.fullmatch(slug):  # no such project can exist: no query needed
            raise NotFoundError(f"no project {slug[:63]!r}")
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(projects).where(projects.c.id == slug)).mappings().first()
        if row is None:
            raise NotFoundError(f"no project {slug[:63]!r}")
        return {"id": row["id"], "name": row["name"], "createdAt": iso_time(row["created_at"])}

    def create_api_key(self, project_id: str) -> dict[str, str]:
        """A new API key for ``project_id``: ``{"id", "key"}``; only the hash is stored."""
        self.get_project(project_id)
        key_id = new_id()
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    id=key_id,
                    project_id=project_id,
                    key_hash=hash_api_key(key),
                    created_at=utcnow(),
                )
            )
        return {"id": key_id, "key": key}

    def project_for_api_key(self, key: str) -> str | None:
        """The project an API key belongs to, or None."""
        found = self.api_key_of(key)
        return None if found is None else found[1]

    def api_key_of(self, key: str) -> tuple[str, str] | None:
        """(key id, project) of an API key, or None when no such key exists (or it was revoked)."""
        digest = hash_api_key(key)
        with self.reader.connect() as conn:
            row = conn.execute(
                sa.select(api_keys.c.id, api_keys.c.project_id, api_keys.c.key_hash).where(
                    api_keys.c.key_hash == digest
                )
            ).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            return None
        return str(row.id), str(row.project_id)

    def list_api_keys(self, project_id: str) -> list[dict[str, Any]]:
        """The project's API keys (id and creation time; the keys themselves are not kept)."""
        self.get_project(project_id)
        with self.reader.connect() as conn:
            rows = conn.execute(
                sa.select(api_keys.c.id, api_keys.c.created_at)
                .where(api_keys.c.project_id == project_id)
                .order_by(api_keys.c.created_at, api_keys.c.id)
            ).all()
        return [
            {"id": r.id, "projectId": project_id, "createdAt": iso_time(r.created_at)} for r in rows
        ]

    def revoke_api_key(self, project_id: str, key_id: str) -> None:
        """Delete an API key and end its console sessions, at once; raises NotFoundError."""
        with self.engine.begin() as conn:
            done = conn.execute(
                api_keys.delete().where(
                    api_keys.c.project_id == project_id, api_keys.c.id == key_id
                )
            ).rowcount
            if done:
                # The foreign key cascades too; said here so it holds whatever the database.
                conn.execute(
                    console_sessions.delete().where(console_sessions.c.api_key_id == key_id)
                )
                self._bump(conn, "trust")
        if not done:
            raise NotFoundError(f"no API key {key_id[:40]!r} in project {project_id!r}")
        self._changed()

    def delete_project(self, project_id: str) -> None:
        """Delete a project with everything in it (CAs, CRLs, devices, keys, sessions, events).

        Raises NotFoundError.
        """
        with self.engine.begin() as conn:
            # The foreign keys cascade; auth events name their project without one.
            conn.execute(auth_events.delete().where(auth_events.c.project_id == project_id))
            done = conn.execute(projects.delete().where(projects.c.id == project_id)).rowcount
            if done:
                self._bump(conn, "trust", "devices")
        if not done:
            raise NotFoundError(f"no project {project_id[:63]!r}")
        self._changed()

    def add_flusher(self, flush: Callable[[], None]) -> None:
        """Call ``flush`` before reading events or devices (pending writes of this process)."""
        self._flushers.append(flush)

    def _flush(self) -> None:
        for flush in self._flushers:
            flush()
