"""The inventory: rows, unique constraints, renew/supersede, revoke, listing, migrations."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import ConflictError, NotFoundError
from fleetpki.home import Home
from fleetpki.inventory import HEAD, Inventory, IssuedRecord, audit_log
from fleetpki.keys import generate_private_key


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create_root("root")[0]


def _device(
    ca: CertificateAuthority, cid: str, project: str = "acme", days: int | None = None
) -> IssuedRecord:
    request = check_csr(create_csr(generate_private_key(), project, cid), project)
    cert = ca.issue(request, days=days)
    return IssuedRecord.from_certificate(cert, kind="device", issuer_ca=ca.name)


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return Inventory.at(tmp_path / "inv.sqlite3")


def test_record_fields(inventory: Inventory, ca: CertificateAuthority) -> None:
    rec = _device(ca, "dev-1")
    inventory.record([rec])
    (row,) = inventory.find(serial=rec.serial)
    assert row["project"] == "acme" and row["certificate_id"] == "dev-1"
    assert row["subject"] == "CN=dev-1,O=acme" and row["issuer_ca"] == "root"
    assert row["status"] == "active" and len(row["fingerprint_sha256"]) == 64
    assert row["not_after"].tzinfo is not None
    assert "der" not in row
    with inventory.engine.connect() as conn:
        der = conn.execute(sa.text("SELECT der FROM certificates")).scalar()
        actions = [r.action for r in conn.execute(sa.select(audit_log))]
    assert der == rec.der
    assert actions == ["issue"]


def test_serial_and_fingerprint_are_unique_constraints(
    inventory: Inventory, ca: CertificateAuthority
) -> None:
    first, second = _device(ca, "dev-1"), _device(ca, "dev-2")
    inventory.record([first])
    clash = second._replace(serial=first.serial)
    with pytest.raises(ConflictError, match="serial number collision"):
        inventory.record([clash])
    same_cert = second._replace(fingerprint_sha256=first.fingerprint_sha256)
    with pytest.raises(ConflictError, match="already in the inventory"):
        inventory.record([same_cert])
    # the constraint lives in the database, whoever writes to it
    with sqlite3.connect(inventory.engine.url.database) as conn:  # type: ignore[arg-type]
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO certificates (serial, kind, subject, issuer_ca, not_before, not_after,"
                " fingerprint_sha256, der, status, created_at) SELECT serial, kind, subject,"
                " issuer_ca, not_before, not_after, 'x', der, status, created_at FROM certificates"
            )
    assert inventory.count() == 1


def test_batch_is_all_or_nothing(inventory: Inventory, ca: CertificateAuthority) -> None:
    a, b = _device(ca, "dev-a"), _device(ca, "dev-b")
    inventory.record([a])
    with pytest.raises(ConflictError):
        inventory.record([b, _device(ca, "dev-c")._replace(serial=a.serial)])
    assert inventory.count() == 1
    assert inventory.find(certificate_id="dev-b") == []


def test_one_active_certificate_per_id_and_renew(
    inventory: Inventory, ca: CertificateAuthority
) -> None:
    old = _device(ca, "dev-1")
    inventory.record([old])
    with pytest.raises(ConflictError, match="use --renew"):
        inventory.record([_device(ca, "dev-1")])
    inventory.record([_device(ca, "dev-1", project="other")])  # IDs are per project
    new = _device(ca, "dev-1")
    inventory.record([new], renew=True)
    statuses = {r["serial"]: r["status"] for r in inventory.find(project="acme")}
    assert statuses == {old.serial: "superseded", new.serial: "active"}
    with inventory.engine.connect() as conn:
        actions = [r.action for r in conn.execute(sa.select(audit_log).order_by(audit_log.c.id))]
    assert actions == ["issue", "issue", "supersede", "issue"]


def test_revoke(inventory: Inventory, ca: CertificateAuthority) -> None:
    rec = _device(ca, "dev-1")
    inventory.record([rec])
    row = inventory.revoke(rec.serial.upper(), "keyCompromise")
    assert row["status"] == "revoked" and row["revocation_reason"] == "keyCompromise"
    with pytest.raises(ConflictError, match="already revoked"):
        inventory.revoke(rec.serial)
    with pytest.raises(NotFoundError):
        inventory.revoke("abcdef")
    ((serial, when, reason),) = inventory.revoked_by("root")
    assert serial == int(rec.serial, 16) and reason == "keyCompromise"
    assert abs(when - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert inventory.revoked_by("other-ca") == []
    # a revoked ID may be issued again without --renew
    inventory.record([_device(ca, "dev-1")])


def test_list_filters(inventory: Inventory, ca: CertificateAuthority) -> None:
    soon = _device(ca, "soon", days=10)
    later = _device(ca, "later", project="other")
    inventory.record([soon, later])
    inventory.record([IssuedRecord.from_certificate(ca.certificate, kind="root", issuer_ca="root")])
    assert [r["certificate_id"] for r in inventory.list(project="acme")] == ["soon"]
    assert [r["certificate_id"] for r in inventory.list(expiring_within=30)] == ["soon"]
    assert inventory.list(expiring_within=5) == []
    assert [r["kind"] for r in inventory.list(kind="root")] == ["root"]
    inventory.revoke(soon.serial)
    assert inventory.list(expiring_within=30) == []  # only active ones are "expiring"
    assert len(inventory.list(include_inactive=False)) == 2
    assert inventory.existing_serials([soon.serial, "ff"]) == {soon.serial}


def test_migration_head_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "inv.sqlite3"
    Inventory.at(path).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    again = Inventory.at(path)
    assert again.count() == 0


def test_home_sign_commits_the_row_and_refuses_duplicates(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    ca = home.init_root("root", passphrase=None)
    key = generate_private_key()
    cert = home.sign(ca, create_csr(key, "acme", "dev-1"), project_slug="acme")
    assert home.inventory.find(serial=f"{cert.serial_number:x}")[0]["status"] == "active"
    with pytest.raises(ConflictError, match="already has an active certificate"):
        home.sign(ca, create_csr(key, "acme", "dev-1"), project_slug="acme")
    renewed = home.sign(ca, create_csr(key, "acme", "dev-1"), project_slug="acme", renew=True)
    assert renewed.serial_number != cert.serial_number
    assert home.inventory.count() == 3  # root + two device certificates


def test_migrations_match_the_schema(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from fleetpki.inventory import metadata

    inventory = Inventory.at(tmp_path / "inv.sqlite3")
    with inventory.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
