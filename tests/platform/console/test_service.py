"""The service layer the console and the REST API share, on SQLite and PostgreSQL: API keys
(list, revoke at once), project deletion, CRL list, auth-event pages, the presented leaf, and
console sessions (cookies, TLS, admin key changes)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from platform_testing import PKI, issue

from fleetpki.platform.api import create_app
from fleetpki.platform.app import Platform
from fleetpki.platform.identity import DeviceIdentity, PresentedChain, Refusal

ADMIN = "admin-key-for-console-tests-0123"


@pytest.fixture
def client(acme: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(acme, ADMIN)) as made:
        yield made


def call(client: TestClient, method: str, path: str, key: str = ADMIN, **kw: Any) -> Any:
    return client.request(method, path, headers={"x-api-key": key}, **kw)


def new_key(client: TestClient, project: str) -> dict[str, str]:
    response = call(client, "POST", f"/v1/projects/{project}/apikeys")
    assert response.status_code == 201
    return dict(response.json()["data"])


def test_api_keys_list_and_revoke_at_once(client: TestClient, acme: Platform) -> None:
    first, second = new_key(client, "acme"), new_key(client, "acme")
    other = new_key(client, "other")
    listed = call(client, "GET", "/v1/projects/acme/apikeys", first["key"]).json()
    assert listed["total"] == 2 and {k["id"] for k in listed["list"]} == {
        first["id"],
        second["id"],
    }
    assert all(set(k) == {"id", "projectId", "createdAt"} for k in listed["list"])
    assert call(client, "GET", "/v1/projects/other/apikeys", first["key"]).status_code == 404
    # Only the admin revokes; a key of another project is not found through this project.
    path = f"/v1/projects/acme/apikeys/{second['id']}"
    assert call(client, "DELETE", path, first["key"]).status_code == 403
    wrong = call(client, "DELETE", f"/v1/projects/acme/apikeys/{other['id']}")
    assert wrong.status_code == 404
    assert call(client, "GET", "/v1/projects/other/devices", other["key"]).status_code == 200
    trust_before = acme.store.counters()[0]
    assert call(client, "DELETE", path).status_code == 204
    assert acme.store.counters()[0] == trust_before + 1  # caches of every instance hear of it
    answer = call(client, "GET", "/v1/projects/acme/devices", second["key"])
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    assert call(client, "GET", "/v1/projects/acme/devices", first["key"]).status_code == 200
    assert call(client, "DELETE", path).status_code == 404


def test_project_delete_refuses_its_devices_at_once(
    client: TestClient, acme: Platform, pki: PKI
) -> None:
    key = new_key(client, "acme")["key"]
    device = issue(pki.root_a, "acme", "doomed-1")
    chain = PresentedChain(device.cert)
    assert isinstance(
        acme.authenticator.authenticate(chain, transport="https", peer="t"), DeviceIdentity
    )
    assert call(client, "DELETE", "/v1/projects/acme", key).status_code == 403
    assert call(client, "DELETE", "/v1/projects/acme").status_code == 204
    refused = acme.authenticator.authenticate(chain, transport="https", peer="t")
    assert isinstance(refused, Refusal) and refused.reason == "unknown project 'acme'"
    assert call(client, "GET", "/v1/projects/acme/devices", key).status_code == 401
    assert call(client, "GET", "/v1/projects/acme").status_code == 404
    assert call(client, "DELETE", "/v1/projects/acme").status_code == 404
    # Its events went with it; the other project is untouched.
    assert acme.store.list_auth_events("acme", all_projects=False) == []
    assert call(client, "GET", "/v1/projects/other/certificates").json()["total"] == 1
    # The slug can be used again, from scratch.
    assert call(client, "POST", "/v1/projects", json={"id": "acme"}).status_code == 201
    assert call(client, "GET", "/v1/projects/acme/devices").json()["total"] == 0


def test_crl_list_and_event_pages_with_the_presented_leaf(
    client: TestClient, acme: Platform, pki: PKI
) -> None:
    crl = pki.root_a.sign_crl([(7, dt.datetime.now(dt.UTC), "keyCompromise")], crl_number=3)
    body = {"crlFile": base64.b64encode(crl.public_bytes(Encoding.PEM)).decode()}
    assert call(client, "POST", "/v1/projects/acme/crls", json=body).status_code == 201
    listed = call(client, "GET", "/v1/projects/acme/crls").json()["list"]
    assert [(c["issuer"], c["entries"]) for c in listed] == [("CN=Acme Root", 1)]
    assert listed[0]["thisUpdate"] < listed[0]["nextUpdate"]
    device = issue(pki.root_a, "acme", "leafy-1")
    for _ in range(3):
        acme.authenticator.authenticate(PresentedChain(device.cert), transport="https", peer="p")
    events = call(client, "GET", "/v1/projects/acme/auth-events?limit=2").json()["list"]
    assert len(events) == 2 and events[0]["id"] > events[1]["id"]
    assert events[0]["issuer"] == "CN=Acme Root"  # cached path: the same facts recorded
    assert events[0]["notAfter"] == f"{device.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
    older = call(client, "GET", f"/v1/projects/acme/auth-events?before={events[1]['id']}")
    assert [e["id"] for e in older.json()["list"]] == [events[1]["id"] - 1]
    stranger = issue(pki.stranger, "acme", "leafy-2")
    acme.authenticator.authenticate(PresentedChain(stranger.cert), transport="coaps", peer="q")
    refused = call(client, "GET", "/v1/projects/acme/auth-events?outcome=refused").json()["list"]
    assert refused[0]["issuer"] == "CN=Stranger Root" and refused[0]["serial"]


def sign_in(client: TestClient, key: str) -> Any:
    page = client.get("/console/signin")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    return client.post(
        "/console/signin", data={"csrf": token.group(1), "apiKey": key}, follow_redirects=False
    )


def test_session_cookie_secure_over_tls_and_tied_to_the_admin_key(acme: Platform) -> None:
    with TestClient(create_app(acme, ADMIN), base_url="https://testserver") as tls:
        answer = sign_in(tls, ADMIN)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/projects"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie
        assert ADMIN not in cookie
        assert tls.get("/console/projects").status_code == 200
        token = tls.cookies["fleetpki_session"]
    with TestClient(create_app(acme, ADMIN), base_url="http://testserver") as plain:
        answer = sign_in(plain, ADMIN)
        assert "Secure" not in answer.headers["set-cookie"]
    # Restarted with another admin key: the old admin session is over.
    with TestClient(create_app(acme, ADMIN + "-rotated")) as restarted:
        restarted.cookies.set("fleetpki_session", token)
        moved = restarted.get("/console/projects", follow_redirects=False)
        assert moved.status_code == 303 and moved.headers["location"] == "/console/signin"
        assert sign_in(restarted, ADMIN).status_code == 401


def test_wrong_keys_and_oversized_forms(client: TestClient) -> None:
    assert sign_in(client, "fpk_not-a-key").status_code == 401
    assert sign_in(client, "").status_code == 400
    key = new_key(client, "acme")["key"]
    assert sign_in(client, key).headers["location"] == "/console/p/acme/certificates"
    page = client.get("/console/p/acme/certificates/add")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    huge = client.post(
        "/console/p/acme/certificates/add",
        data={"csrf": token.group(1), "certType": "root"},
        files={"certFile": ("big.pem", b"A" * (2 << 20))},
    )
    assert huge.status_code == 413
    assert call(client, "GET", "/v1/projects/acme/certificates").json()["total"] == 1


def test_unreadable_stored_rows_show_their_problem_and_can_be_deleted(
    client: TestClient, acme: Platform, pki: PKI
) -> None:
    from platform_testing import broken_key_twin

    from fleetpki.platform.store import new_id, utcnow
    from fleetpki.platform.store.schema import ca_certificates, crls

    bad_id = new_id()
    with acme.store.engine.begin() as conn:
        conn.execute(
            ca_certificates.insert().values(
                id=bad_id, project_id="acme", created_at=utcnow(), cert_type="root",
                enabled=True, fingerprint="00" * 32,
                der=broken_key_twin(pki.root_a.certificate, "ec-point"),
            )
        )  # fmt: skip
        conn.execute(
            crls.insert().values(
                id=new_id(), project_id="acme", created_at=utcnow(), issuer="CN=Acme Root",
                der=b"\x30\x03\x02\x01\x00",
            )
        )  # fmt: skip
    listed = call(client, "GET", "/v1/projects/acme/crls").json()["list"]
    assert listed[0]["problem"] and listed[0]["entries"] is None
    assert sign_in(client, ADMIN).status_code == 303
    page = client.get("/console/p/acme/certificates")
    assert page.status_code == 200
    assert f"Unreadable CA certificate {bad_id[:8]}" in page.text
    assert "public key cannot be read" in page.text and "unreadable" in page.text
    detail = client.get(f"/console/p/acme/certificates/{bad_id}")
    assert detail.status_code == 200 and "never used as trust" in detail.text
    assert client.get(f"/console/p/acme/certificates/{bad_id}/download").status_code == 400
    token = re.search(r'name="csrf" value="([^"]+)"', detail.text)
    assert token is not None
    deleted = client.post(
        f"/console/p/acme/certificates/{bad_id}/delete",
        data={"csrf": token.group(1)},
        follow_redirects=False,
    )
    assert deleted.status_code == 303
    assert call(client, "GET", "/v1/projects/acme/certificates").json()["total"] == 1
