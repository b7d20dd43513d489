"""The inventory's batch insert on PostgreSQL stores what the row-by-row insert stores.

``Inventory.record_batch`` builds its parameters itself (named, for psycopg) instead of going
through SQLAlchemy's per-row work; SQLite's positional form is tested by the bulk tests.
"""

from __future__ import annotations

import pytest
from cryptography import x509

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr, create_csr
from fleetpki.errors import ConflictError
from fleetpki.inventory import Inventory, IssuedRecord, _bulk_insert
from fleetpki.keys import generate_private_key

pytestmark = pytest.mark.postgres


def _record(ca: CertificateAuthority, certificate_id: str) -> IssuedRecord:
    request = check_csr(create_csr(generate_private_key(), "acme", certificate_id), "acme")
    cert: x509.Certificate = ca.issue(request)
    return IssuedRecord.from_certificate(cert, kind="device", issuer_ca=ca.name)


def test_record_batch_on_postgresql(pg_url: str) -> None:
    ca, _key = CertificateAuthority.create_root("root")
    inventory = Inventory(pg_url)
    try:
        assert _bulk_insert(inventory.engine.dialect)[1] is False  # named parameters here
        batch = [_record(ca, f"b{n}") for n in range(3)]
        single = _record(ca, "s1")
        inventory.record_batch(batch)
        inventory.record([single])
        stored = {row["certificate_id"]: row for row in inventory.find(project="acme")}
        for record in [*batch, single]:
            row = stored[record.certificate_id]
            assert row["serial"] == record.serial
            assert row["not_before"] == record.not_before
            assert row["not_after"] == record.not_after
            assert row["fingerprint_sha256"] == record.fingerprint_sha256
            assert row["status"] == "active"
        found = inventory.active_device_certificates("acme", ["b0", "b2", "zz"])
        assert found == {"b0": batch[0].der, "b2": batch[2].der}
        with pytest.raises(ConflictError):
            inventory.record_batch([_record(ca, "b9"), _record(ca, "b1")])  # b1 is active
        assert inventory.active_device_certificates("acme", ["b9"]) == {}
    finally:
        inventory.close()
