"""The certificate-ID rules: which device a certificate ID belongs to (DESIGN.md, step 5).

a. a device with that certificate ID → that device;
b. else a device whose name equals the ID and that has no certificate ID yet → set its ID;
c. else a new device named after the ID, or the ID plus a random suffix when that name is
   taken by a device with a different certificate ID.
A certificate ID, once set on a device, never changes: nothing here (or anywhere) updates it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa

from fleetpki.platform.store.devices import insert_device
from fleetpki.platform.store.schema import devices

ATTEMPTS = 4  # concurrent first connections of one ID race on the unique constraints


class _Raced(Exception):
    """Another transaction claimed the pre-created device first."""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What authentication needs to know about a device."""

    id: str
    name: str
    certificate_id: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    """The device a certificate ID maps to, and which rule found it (a, b or c)."""

    device: DeviceRecord
    rule: str


def find_device(conn: sa.Connection, project_id: str, certificate_id: str) -> DeviceRecord | None:
    """Rule a alone: the device holding ``certificate_id`` (an indexed lookup), or None."""
    row = conn.execute(
        sa.select(devices.c.id, devices.c.name, devices.c.enabled).where(
            devices.c.project_id == project_id, devices.c.certificate_id == certificate_id
        )
    ).first()
    if row is None:
        return None
    return DeviceRecord(row.id, row.name, certificate_id, bool(row.enabled))


def _try_resolve(conn: sa.Connection, project_id: str, certificate_id: str) -> Resolution:
    found = find_device(conn, project_id, certificate_id)
    if found is not None:
        return Resolution(found, "a")
    named = conn.execute(
        sa.select(devices.c.id, devices.c.certificate_id, devices.c.enabled).where(
            devices.c.project_id == project_id, devices.c.name == certificate_id
        )
    ).first()
    if named is not None and named.certificate_id is None:
        record = DeviceRecord(named.id, certificate_id, certificate_id, bool(named.enabled))
        if not record.enabled:
            # A disabled device is refused before it is bound to a certificate ID.
            return Resolution(record, "b")
        claimed = conn.execute(
            devices.update()
            .where(devices.c.id == named.id, devices.c.certificate_id.is_(None))
            .values(certificate_id=certificate_id)
        ).rowcount
        if claimed:
            return Resolution(record, "b")
        raise _Raced
    name = certificate_id if named is None else f"{certificate_id}-{secrets.token_hex(3)}"
    device_id = insert_device(conn, project_id, name, certificate_id)
    return Resolution(DeviceRecord(device_id, name, certificate_id, True), "c")


def resolve_device(engine: sa.Engine, project_id: str, certificate_id: str) -> Resolution:
    """Apply rules a, b, c in one transaction, retrying when a concurrent one got there first."""
    for attempt in range(ATTEMPTS):
        try:
            with engine.begin() as conn:
                return _try_resolve(conn, project_id, certificate_id)
        except (sa.exc.IntegrityError, _Raced):
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
