"""Devices (pre-created, renamed, disabled, their state documents) and auth events."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from fleetpki.errors import ConflictError, InputError, NotFoundError
from fleetpki.platform.store.base import StoreBase, iso_time, new_id, utcnow, validate_device_name
from fleetpki.platform.store.schema import auth_events, devices

MAX_STATE_BYTES = 8192
# Device search: the field searched is also the order and the keyset (unique in a project).
SEARCH_FIELDS = {"name": devices.c.name, "certificateId": devices.c.certificate_id}
_PREFIX_END = "\U0010ffff"  # the largest code point: prefix <= value < prefix + this
# Matches are counted up to this many (then "10,000+"): a page costs the same at any size.
COUNT_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class DevicePage:
    """One page of a device search; ``after``/``before`` are the keys for the next/previous."""

    items: list[dict[str, Any]]
    total: int  # matches, counted up to COUNT_LIMIT ...
    more: bool  # ... and True when there are more than that
    after: str | None
    before: str | None


def device_search_query(
    dialect: str,
    project_id: str,
    *,
    by: str = "name",
    prefix: str = "",
    after: str | None = None,
    before: str | None = None,
) -> tuple[sa.Select[Any], sa.ColumnElement[Any]]:
    """(the filtered select without keyset, order or limit; the sort key) of a device search.

    Comparisons are byte-wise (SQLite BINARY, PostgreSQL "C"), so a prefix is a range of one
    index: ``(project_id, name)`` or ``(project_id, certificate_id)``. Raises InputError.
    """
    if by not in SEARCH_FIELDS:
        raise InputError(f"search by 'name' or 'certificateId', not {by[:20]!r}")
    column = SEARCH_FIELDS[by]
    key: sa.ColumnElement[Any] = column.collate("C") if dialect == "postgresql" else column
    query = sa.select(devices).where(devices.c.project_id == project_id, column.is_not(None))
    if prefix:
        query = query.where(key >= prefix, key < prefix + _PREFIX_END)
    if after is not None:
        query = query.where(key > after)
    if before is not None:
        query = query.where(key < before)
    return query, key


def insert_device(
    conn: sa.Connection, project_id: str, name: str, certificate_id: str | None
) -> str:
    """Insert an enabled device (pre-created by name, or provisioned); returns its id.

    Raises IntegrityError on a name or certificate-ID clash, for the caller to translate.
    """
    device_id = new_id()
    conn.execute(
        devices.insert().values(
            id=device_id,
            project_id=project_id,
            name=name,
            certificate_id=certificate_id,
            enabled=True,
            created_at=utcnow(),
        )
    )
    return device_id


class DeviceStore(StoreBase):
    """Devices and auth events of the projects in the store."""

    @staticmethod
    def device_object(row: Any) -> dict[str, Any]:
        return {
            "id": row["id"],
            "projectId": row["project_id"],
            "name": row["name"],
            "certificateId": row["certificate_id"],
            "enabled": bool(row["enabled"]),
            "createdAt": iso_time(row["created_at"]),
            "lastSeen": iso_time(row["last_seen"]),
        }

    def list_devices(
        self, project_id: str, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of devices (oldest first) and the total count."""
        self.get_project(project_id)
        self._flush()
        where = devices.c.project_id == project_id
        with self.reader.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(devices).where(where))
            rows = conn.execute(
                sa.select(devices)
                .where(where)
                .order_by(devices.c.created_at, devices.c.id)
                .limit(limit)
                .offset(offset)
            ).mappings()
            return [self.device_object(r) for r in rows], int(total.scalar() or 0)

    def search_devices(
        self,
        project_id: str,
        *,
        by: str = "name",
        prefix: str = "",
        after: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> DevicePage:
        """Devices whose name (or certificate ID) starts with ``prefix``, in byte order, one page
        after the key ``after`` (or before ``before``): index range scans, however many devices.

        Raises NotFoundError (project), InputError (``by``).
        """
        self.get_project(project_id)
        self._flush()
        limit = max(1, min(limit, 1000))
        dialect = self.engine.dialect.name
        query, key = device_search_query(
            dialect, project_id, by=by, prefix=prefix, after=after, before=before
        )
        counted, _ = device_search_query(dialect, project_id, by=by, prefix=prefix)
        backwards = before is not None and after is None
        query = query.order_by(key.desc() if backwards else key).limit(limit + 1)
        with self.reader.connect() as conn:
            rows = list(conn.execute(query).mappings())
            # Only the indexed column: the count reads the index alone, never the table.
            capped = counted.with_only_columns(SEARCH_FIELDS[by]).limit(COUNT_LIMIT + 1)
            total = conn.execute(sa.select(sa.func.count()).select_from(capped.subquery())).scalar()
        more = len(rows) > limit
        rows = rows[:limit]
        if backwards:
            rows.reverse()
        field = SEARCH_FIELDS[by].name
        keys = [str(r[field]) for r in rows]
        has_next = more if not backwards else bool(rows)
        has_prev = more if backwards else after is not None and bool(rows)
        return DevicePage(
            [self.device_object(r) for r in rows],
            min(int(total or 0), COUNT_LIMIT),
            int(total or 0) > COUNT_LIMIT,
            keys[-1] if has_next and keys else None,
            keys[0] if has_prev and keys else None,
        )

    def get_device(self, project_id: str, device_id: str) -> dict[str, Any]:
        """One device; raises NotFoundError."""
        self._flush()
        with self.reader.connect() as conn:
            row = (
                conn.execute(
                    sa.select(devices).where(
                        devices.c.project_id == project_id, devices.c.id == device_id
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
        return self.device_object(row)

    def create_device(self, project_id: str, name: str) -> dict[str, Any]:
        """Pre-create a device by name (no certificate ID yet); raises ConflictError."""
        self.get_project(project_id)
        validate_device_name(name)
        try:
            with self.engine.begin() as conn:
                device_id = insert_device(conn, project_id, name, None)
        except sa.exc.IntegrityError:
            raise ConflictError(f"a device named {name!r} already exists") from None
        return self.get_device(project_id, device_id)

    def update_device(
        self,
        project_id: str,
        device_id: str,
        *,
        name: str | None = None,
        enabled: bool | None = None,
    ) -> dict[str, Any]:
        """Rename and/or enable/disable a device; raises NotFoundError, ConflictError."""
        values: dict[str, Any] = {}
        if name is not None:
            values["name"] = validate_device_name(name)
        if enabled is not None:
            values["enabled"] = enabled
        if values:
            try:
                with self.engine.begin() as conn:
                    done = conn.execute(
                        devices.update()
                        .where(devices.c.project_id == project_id, devices.c.id == device_id)
                        .values(**values)
                    ).rowcount
                    self._bump(conn, "devices")
            except sa.exc.IntegrityError:
                raise ConflictError(f"a device named {name!r} already exists") from None
            if not done:
                raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
            self._changed()
        return self.get_device(project_id, device_id)

    def delete_device(self, project_id: str, device_id: str) -> None:
        """Delete a device (its certificate ID becomes free); raises NotFoundError."""
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.delete().where(
                    devices.c.project_id == project_id, devices.c.id == device_id
                )
            ).rowcount
            self._bump(conn, "devices")
        if not done:
            raise NotFoundError(f"no device {device_id[:40]!r} in project {project_id!r}")
        self._changed()

    def device_state(self, device_id: str) -> bytes | None:
        """The device's JSON document, or None if it has none; raises NotFoundError."""
        with self.reader.connect() as conn:
            row = conn.execute(sa.select(devices.c.state).where(devices.c.id == device_id)).first()
        if row is None:
            raise NotFoundError("device no longer exists")
        return None if row.state is None else str(row.state).encode()

    def set_device_state(self, device_id: str, document: bytes) -> None:
        """Replace the device's JSON document; raises InputError, NotFoundError."""
        if len(document) > MAX_STATE_BYTES:
            raise InputError(f"state too large ({len(document)} bytes, at most {MAX_STATE_BYTES})")
        try:
            text = json.dumps(json.loads(document), separators=(",", ":"))
        except (ValueError, UnicodeDecodeError):
            raise InputError("state must be a JSON document") from None
        except RecursionError:
            raise InputError("state is nested too deeply") from None
        with self.engine.begin() as conn:
            done = conn.execute(
                devices.update().where(devices.c.id == device_id).values(state=text)
            ).rowcount
        if not done:
            raise NotFoundError("device no longer exists")

    # -- auth events --------------------------------------------------------------------------

    def add_auth_events(
        self, events: Sequence[dict[str, Any]], seen: dict[str, dt.datetime] | None = None
    ) -> None:
        """Insert auth events and set lastSeen of the devices in ``seen``, in one transaction."""
        with self.engine.begin() as conn:
            if events:
                conn.execute(auth_events.insert(), list(events))
            if seen:
                conn.execute(
                    devices.update()
                    .where(devices.c.id == sa.bindparam("device_id"))
                    .values(last_seen=sa.bindparam("seen")),
                    [{"device_id": k, "seen": v} for k, v in seen.items()],
                )

    def list_auth_events(
        self,
        project_id: str | None,
        *,
        outcome: str | None = None,
        certificate_id: str | None = None,
        device_id: str | None = None,
        transport: str | None = None,
        limit: int = 100,
        all_projects: bool = False,
        before: int | None = None,
    ) -> list[dict[str, Any]]:
        """Auth events of a project (None: attempts that named no project), newest first.

        ``all_projects`` lists every attempt, whatever project it named (for the admin);
        ``before`` (an event id) gives the page of older events.
        """
        self._flush()
        column = auth_events.c.project_id
        query = sa.select(auth_events)
        if not all_projects:
            query = query.where(column.is_(None) if project_id is None else column == project_id)
        for column, value in (
            (auth_events.c.outcome, outcome),
            (auth_events.c.certificate_id, certificate_id),
            (auth_events.c.device_id, device_id),
            (auth_events.c.transport, transport),
        ):
            if value is not None:
                query = query.where(column == value)
        if before is not None:
            query = query.where(auth_events.c.id < before)
        query = query.order_by(auth_events.c.id.desc()).limit(max(1, min(limit, 1000)))
        with self.reader.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_event_object(r) for r in rows]


def _event_object(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "time": iso_time(row["time"]),
        "projectId": row["project_id"],
        "outcome": row["outcome"],
        "reason": row["reason"],
        "certificateId": row["certificate_id"],
        "serial": row["serial"],
        "transport": row["transport"],
        "peer": row["peer"],
        "deviceId": row["device_id"],
        "issuer": row["issuer"],
        "notAfter": iso_time(row["not_after"]),
    }
