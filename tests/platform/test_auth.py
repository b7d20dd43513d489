"""The auth pipeline and the certificate-ID rules, called directly (transports are tested apart)."""

from __future__ import annotations

import datetime as dt

import pytest
from platform_testing import PKI, Device, issue, pem

from fleetpki.errors import ConflictError
from fleetpki.platform.app import Platform
from fleetpki.platform.identity import DeviceIdentity, PresentedChain, Refusal


def auth(platform: Platform, device: Device | None) -> DeviceIdentity | Refusal:
    presented = None if device is None else PresentedChain(device.cert, device.chain)
    return platform.authenticator.authenticate(presented, transport="test", peer="127.0.0.1:1")


def accepted(platform: Platform, device: Device) -> DeviceIdentity:
    result = auth(platform, device)
    assert isinstance(result, DeviceIdentity), result
    return result


def refused(platform: Platform, device: Device | None, fragment: str) -> str:
    result = auth(platform, device)
    assert isinstance(result, Refusal), result
    assert fragment in result.reason
    return result.reason


def last_event(platform: Platform, project: str = "acme") -> dict[str, object]:
    return platform.store.list_auth_events(project, limit=1)[0]


def test_rule_c_creates_device_named_after_id(acme: Platform, pki: PKI) -> None:
    device = issue(pki.root_a, "acme", "sensor-1")
    who = accepted(acme, device)
    assert (who.project_id, who.name, who.certificate_id) == ("acme", "sensor-1", "sensor-1")
    event = last_event(acme)
    assert event["outcome"] == "accepted" and event["deviceId"] == who.device_id
    assert event["serial"] == f"{device.cert.serial_number:x}"
    assert acme.store.get_device("acme", who.device_id)["lastSeen"] is not None


def test_rule_a_same_device_and_id_never_changes(acme: Platform, pki: PKI) -> None:
    first = accepted(acme, issue(pki.root_a, "acme", "sensor-2"))
    acme.store.update_device("acme", first.device_id, name="kitchen")
    # A renewed certificate (new key) with the same ID is the same device, under its new name.
    again = accepted(acme, issue(pki.inter_a, "acme", "sensor-2", chain=(pki.inter_a.certificate,)))
    assert again.device_id == first.device_id and again.name == "kitchen"
    assert acme.store.get_device("acme", first.device_id)["certificateId"] == "sensor-2"


def test_rule_b_claims_pre_created_device(acme: Platform, pki: PKI) -> None:
    made = acme.store.create_device("acme", "pump-7")
    assert made["certificateId"] is None
    who = accepted(acme, issue(pki.root_a, "acme", "pump-7"))
    assert who.device_id == made["id"]
    assert acme.store.get_device("acme", made["id"])["certificateId"] == "pump-7"


def test_suffix_when_name_taken_by_another_id(acme: Platform, pki: PKI) -> None:
    holder = accepted(acme, issue(pki.root_a, "acme", "valve-1"))
    acme.store.update_device("acme", holder.device_id, name="valve-2")
    who = accepted(acme, issue(pki.root_a, "acme", "valve-2"))
    assert who.device_id != holder.device_id
    assert who.name.startswith("valve-2-") and len(who.name) == len("valve-2-") + 6
    assert who.certificate_id == "valve-2"


def test_pre_created_disabled_device_refused_and_not_claimed(acme: Platform, pki: PKI) -> None:
    made = acme.store.create_device("acme", "gate-1")
    acme.store.update_device("acme", made["id"], enabled=False)
    refused(acme, issue(pki.root_a, "acme", "gate-1"), "is disabled")
    assert acme.store.get_device("acme", made["id"])["certificateId"] is None


def test_disabled_device_refused_then_enabled(acme: Platform, pki: PKI) -> None:
    device = issue(pki.root_a, "acme", "door-1")
    who = accepted(acme, device)
    acme.store.update_device("acme", who.device_id, enabled=False)
    refused(acme, device, "disabled")
    assert last_event(acme)["deviceId"] == who.device_id
    acme.store.update_device("acme", who.device_id, enabled=True)
    accepted(acme, device)


def test_refusals_with_reasons(acme: Platform, pki: PKI) -> None:
    refused(acme, None, "no client certificate")
    refused(acme, issue(pki.root_a, "nosuch", "x"), "unknown project 'nosuch'")
    assert acme.store.list_auth_events("nosuch")[0]["reason"].startswith("unknown project")
    # Chains to acme's CA but claims project other: judged against other's CAs only.
    refused(acme, issue(pki.root_a, "other", "spy"), "no path")
    assert acme.store.list_auth_events("other")[0]["certificateId"] == "spy"
    # Intermediate not sent and not uploaded: no path.
    refused(acme, issue(pki.inter_a, "acme", "lost"), "no path")
    refused(acme, issue(pki.stranger, "acme", "x"), "no path")
    refused(acme, issue(pki.root_a, "acme", "bad/id"), "not allowed")
    refused(acme, issue(pki.root_a, "acme", None), "no CN")


def test_leaf_signed_by_a_device_key_is_refused(acme: Platform, pki: PKI) -> None:
    parent = issue(pki.root_a, "acme", "parent")
    child = issue(parent, "acme", "child", chain=(parent.cert,))
    refused(acme, child, "is not a CA")
    assert [d["name"] for d in acme.store.list_devices("acme")[0]] == []


def test_expired_and_not_yet_valid_leaf(acme: Platform, pki: PKI) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    refused(acme, issue(pki.root_a, "acme", "old", now=past, days=2), "expired")
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    refused(acme, issue(pki.root_a, "acme", "new", now=future), "not yet valid")


def test_ca_disable_delete_take_effect_on_next_attempt(acme: Platform, pki: PKI) -> None:
    [inter] = acme.store.upload_ca("acme", pem(pki.inter_a.certificate), "intermediate")
    device = issue(pki.inter_a, "acme", "leaf-only")  # the leaf alone, to the uploaded intermediate
    accepted(acme, device)
    acme.store.set_ca_enabled("acme", inter["id"], False)
    refused(acme, device, "is disabled in project 'acme'")
    acme.store.set_ca_enabled("acme", inter["id"], True)
    accepted(acme, device)
    acme.store.delete_ca("acme", inter["id"])
    refused(acme, device, "no path")


def test_ca_of_another_project_does_not_count(acme: Platform, pki: PKI) -> None:
    acme.store.upload_ca("other", pem(pki.inter_a.certificate), "intermediate")
    refused(acme, issue(pki.inter_a, "acme", "cross"), "no path")


def test_revoked_by_uploaded_crl(acme: Platform, pki: PKI) -> None:
    device = issue(pki.root_a, "acme", "revoked-1")
    accepted(acme, device)
    crl = pki.root_a.sign_crl(
        [(device.cert.serial_number, dt.datetime.now(dt.UTC), "")], crl_number=1
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    acme.store.upload_crl("acme", crl.public_bytes(Encoding.PEM))
    refused(acme, device, "revoked")


def test_events_newest_first_and_filtered(acme: Platform, pki: PKI) -> None:
    accepted(acme, issue(pki.root_a, "acme", "e-1"))
    refused(acme, issue(pki.stranger, "acme", "e-2"), "no path")
    events = acme.store.list_auth_events("acme")
    assert [e["certificateId"] for e in events[:2]] == ["e-2", "e-1"]
    assert [
        e["certificateId"] for e in acme.store.list_auth_events("acme", outcome="accepted")
    ] == ["e-1"]


def test_device_resources_only_own_records(acme: Platform, pki: PKI) -> None:
    one = accepted(acme, issue(pki.root_a, "acme", "r-1"))
    two = accepted(acme, issue(pki.root_a, "acme", "r-2"))
    res = acme.resources
    assert res.handle(one, "PUT", "state", b'{"t": 21}').status == 204
    assert res.handle(one, "GET", "/v1/device/state", b"").body == b'{"t":21}'
    assert res.handle(two, "GET", "state", b"").body == b"{}"
    assert res.handle(one, "PUT", "state", b"not json").status == 400
    assert res.handle(one, "PUT", "state", b"[" * 9000).status == 413
    assert res.handle(one, "PUT", "state", b"[" * 8000).status == 400
    assert res.handle(one, "DELETE", "state", b"").status == 405
    assert res.handle(one, "GET", "../devices", b"").status == 404
    who = res.handle(two, "GET", "whoami", b"")
    assert who.status == 200 and b'"certificateId":"r-2"' in who.body


def test_duplicate_project_and_device_names(acme: Platform) -> None:
    with pytest.raises(ConflictError):
        acme.store.create_project("acme")
    acme.store.create_device("acme", "dup")
    with pytest.raises(ConflictError):
        acme.store.create_device("acme", "dup")


def test_concurrent_first_connections_make_one_device(acme: Platform, pki: PKI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    device = issue(pki.root_a, "acme", "racer")
    acme.store.create_device("acme", "racer-named")  # unrelated, must stay untouched
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: auth(acme, device), range(16)))
    ids = {r.device_id for r in results if isinstance(r, DeviceIdentity)}
    assert len(ids) == 1 and all(isinstance(r, DeviceIdentity) for r in results)
    names = sorted(d["name"] for d in acme.store.list_devices("acme")[0])
    assert names == ["racer", "racer-named"]
