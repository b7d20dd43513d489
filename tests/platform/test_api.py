"""The management API: keys and scoping, CA upload validation, devices, events, error shapes."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from platform_testing import PKI, future_ca, issue, key_pem, pem

from fleetpki.ca import CertificateAuthority
from fleetpki.platform.api import create_app
from fleetpki.platform.app import Platform

ADMIN = "admin-key-for-tests-0123456789"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Api:
    def __init__(self, client: TestClient, key: str) -> None:
        self.client, self.key = client, key

    def __call__(self, method: str, path: str, json: Any = None, key: str | None = None) -> Any:
        headers = {"x-api-key": key if key is not None else self.key}
        return self.client.request(method, path, json=json, headers=headers)


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    with TestClient(create_app(platform, ADMIN)) as client:
        admin = Api(client, ADMIN)
        for slug in ("acme", "other"):
            assert (
                admin("POST", "/v1/projects", {"id": slug, "name": slug.title()}).status_code == 201
            )
        yield admin


def project_key(api: Api, slug: str) -> str:
    response = api("POST", f"/v1/projects/{slug}/apikeys")
    assert response.status_code == 201
    return str(response.json()["data"]["key"])


def upload(
    api: Api, data: bytes, cert_type: str | None = "root", project: str = "acme", **kw: Any
) -> Any:
    body: dict[str, Any] = {"certFile": b64(data)}
    if cert_type is not None:
        body["certType"] = cert_type
    return api("POST", f"/v1/projects/{project}/certificates", body, **kw)


def test_keys_and_scoping(api: Api, platform: Platform) -> None:
    assert api.client.get("/v1/projects/acme/certificates").status_code == 401
    assert (
        api.client.get("/v1/projects/acme/certificates").json()["error"]["code"] == "unauthorized"
    )
    assert api("GET", "/v1/projects/acme/certificates", key="wrong").status_code == 401
    key = project_key(api, "acme")
    assert api("GET", "/v1/projects/acme/certificates", key=key).status_code == 200
    assert api("GET", "/v1/projects/other/certificates", key=key).status_code == 404
    assert api("GET", "/v1/projects/other/devices", key=key).status_code == 404
    assert api("POST", "/v1/projects", {"id": "x"}, key=key).status_code == 403
    assert api("POST", "/v1/projects/acme/apikeys", key=key).status_code == 403
    # Only the hash is stored.
    with platform.store.engine.connect() as conn:
        hashes = conn.exec_driver_sql("SELECT key_hash FROM api_keys").scalars().all()
    assert key not in hashes and len(hashes) == 1


def test_upload_get_patch_delete(api: Api, pki: PKI) -> None:
    response = upload(api, pki.root_a.certificate.public_bytes(Encoding.DER))  # DER works too
    assert response.status_code == 201, response.text
    ca = response.json()["data"]
    assert ca["projectId"] == "acme" and ca["certType"] == "root" and ca["enabled"] is True
    content = ca["certificateContent"]
    assert content["subject"] == "CN=Acme Root" and content["issuer"] == "CN=Acme Root"
    assert content["publicKeyAlgorithm"] == "EC secp256r1"
    assert content["keyUsages"] == ["key_cert_sign", "crl_sign"]
    assert content["serialNumber"] == f"{pki.root_a.certificate.serial_number:x}"
    path = f"/v1/projects/acme/certificates/{ca['id']}"
    assert api("GET", path).json()["data"]["id"] == ca["id"]
    listed = api("GET", "/v1/projects/acme/certificates").json()
    assert listed["total"] == 1 and listed["list"][0]["id"] == ca["id"]
    assert api("PATCH", path, {"enabled": False}).json()["data"]["enabled"] is False
    assert api("DELETE", path).status_code == 204
    assert api("GET", path).status_code == 404
    assert api("DELETE", path).json()["error"]["code"] == "not_found"


def test_bundle_uploads_each_ca(api: Api, pki: PKI) -> None:
    bundle = pem(pki.inter_a.certificate) + pem(pki.root_a.certificate)
    response = upload(api, bundle, "intermediate")
    assert response.status_code == 201, response.text
    assert [c["certType"] for c in response.json()["list"]] == ["intermediate", "root"]
    dup = upload(api, pem(pki.root_a.certificate))
    assert dup.status_code == 409 and "already uploaded" in dup.json()["error"]["message"]


def expired_ca() -> CertificateAuthority:
    from cryptography.hazmat.primitives import hashes
    from platform_testing import subject

    from fleetpki import profiles
    from fleetpki.keys import KeyFileSigner, generate_private_key

    key = generate_private_key()
    cert = profiles.ROOT.builder(
        subject=subject(None, "Old CA"),
        public_key=key.public_key(),
        issuer=None,
        days=10,
        now=profiles.utcnow() - dt.timedelta(days=100),
    ).sign(key, hashes.SHA256())
    return CertificateAuthority("old", cert, KeyFileSigner(key))


def test_upload_refusals(api: Api, pki: PKI) -> None:
    def refused(data: bytes, cert_type: str | None, status: int, fragment: str) -> str:
        response = upload(api, data, cert_type)
        assert response.status_code == status, response.text
        message = str(response.json()["error"]["message"])
        assert fragment in message, message
        return message

    secret = key_pem(issue(pki.root_a, "acme", "k").key)
    message = refused(secret + pem(pki.root_a.certificate), "root", 400, "private key")
    body = secret.split(b"\n")[1].decode()
    assert body[:20] not in message
    refused(secret, "root", 400, "private key")
    leaf = issue(pki.root_a, "acme", "leaf-1").cert
    refused(pem(leaf), "root", 400, "not a CA certificate")
    refused(b"garbage, not a certificate", "root", 400, "not a certificate")
    refused(pem(expired_ca().certificate), "root", 400, "expired")
    refused(pem(future_ca().certificate), "root", 400, "not yet valid")
    refused(pem(pki.root_a.certificate), "intermediate", 400, "is a root CA certificate")
    refused(pem(pki.inter_a.certificate), "root", 400, "is a intermediate CA")
    refused(b"A" * 300_000, "root", 413, "too large")
    huge = {"certFile": "A" * 2_000_000, "certType": "root"}
    response = api("POST", "/v1/projects/acme/certificates", huge)
    assert response.status_code == 413 and "A" * 50 not in response.text
    assert response.json()["error"]["code"] == "too_large"
    response = api(
        "POST", "/v1/projects/acme/certificates", {"certFile": "%%%", "certType": "root"}
    )
    assert response.status_code == 400 and "base64" in response.json()["error"]["message"]
    assert api("GET", "/v1/projects/acme/certificates").json()["total"] == 0


def test_script_subject_is_inert_data(api: Api) -> None:
    evil, _ = CertificateAuthority.create_root("evil", common_name="<script>alert(1)</script>")
    response = upload(api, pem(evil.certificate))
    assert response.status_code == 201
    listed = api("GET", "/v1/projects/acme/certificates")
    assert listed.headers["content-type"] == "application/json"
    assert listed.headers["x-content-type-options"] == "nosniff"
    subject = listed.json()["list"][0]["certificateContent"]["subject"]
    # RFC 4514 escapes < and >; the value comes back as a JSON string, never as markup.
    assert subject == "CN=\\<script\\>alert(1)\\</script\\>"


def test_devices_and_events(api: Api, platform: Platform, pki: PKI) -> None:
    upload(api, pem(pki.root_a.certificate))
    made = api("POST", "/v1/projects/acme/devices", {"name": "boiler"})
    assert made.status_code == 201
    device = made.json()["data"]
    assert set(device) >= {"id", "name", "certificateId", "enabled", "createdAt", "lastSeen"}
    from fleetpki.platform.identity import PresentedChain

    leaf = issue(pki.root_a, "acme", "boiler")
    platform.authenticator.authenticate(PresentedChain(leaf.cert), transport="https", peer="p")
    platform.authenticator.authenticate(None, transport="https", peer="p")
    got = api("GET", f"/v1/projects/acme/devices/{device['id']}").json()["data"]
    assert got["certificateId"] == "boiler" and got["lastSeen"] is not None
    path = f"/v1/projects/acme/devices/{device['id']}"
    assert (
        api("PATCH", path, {"name": "boiler-2", "enabled": False}).json()["data"]["enabled"]
        is False
    )
    devices = api("GET", "/v1/projects/acme/devices?limit=10").json()
    assert devices["total"] == 1 and devices["list"][0]["name"] == "boiler-2"
    # The certificate ID cannot be changed through the API.
    assert api("PATCH", path, {"certificateId": "other"}).status_code == 422
    assert api("GET", path).json()["data"]["certificateId"] == "boiler"
    nosuch = issue(pki.root_a, "nosuch", "lost-1")
    platform.authenticator.authenticate(PresentedChain(nosuch.cert), transport="https", peer="p")
    assert api("GET", "/v1/projects/nosuch/auth-events").status_code == 404
    admin_view = api("GET", "/v1/auth-events?projectId=nosuch").json()["list"]
    assert admin_view[0]["reason"] == "unknown project 'nosuch'"
    assert api("GET", "/v1/auth-events?noProject=true").json()["list"][0]["reason"] == (
        "no client certificate"
    )
    assert api("GET", "/v1/auth-events").json()["total"] == 3
    key = project_key(api, "acme")
    assert api("GET", "/v1/auth-events", key=key).status_code == 403
    events = api("GET", "/v1/projects/acme/auth-events?outcome=accepted").json()["list"]
    assert events[0]["certificateId"] == "boiler" and events[0]["transport"] == "https"
    assert events[0]["serial"] == f"{leaf.cert.serial_number:x}"
    assert api("DELETE", path).status_code == 204
    assert api("GET", "/v1/projects/acme/devices").json()["total"] == 0


def test_openapi_and_errors(api: Api) -> None:
    spec = api.client.get("/openapi.json").json()
    assert "/v1/projects/{projectId}/certificates" in spec["paths"]
    assert api("GET", "/v1/projects/acme/devices/nope").json()["error"]["code"] == "not_found"
    bad = api("POST", "/v1/projects", {"id": "Bad Slug"})
    assert bad.status_code == 400 and "invalid project slug" in bad.json()["error"]["message"]
    assert api("POST", "/v1/projects", {"id": "acme"}).status_code == 409


def test_crl_upload(api: Api, platform: Platform, pki: PKI) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from fleetpki.platform.identity import PresentedChain, Refusal

    upload(api, pem(pki.root_a.certificate))
    device = issue(pki.root_a, "acme", "crl-1")
    now = dt.datetime.now(dt.UTC)
    crl = pki.root_a.sign_crl([(device.cert.serial_number, now, "keyCompromise")], crl_number=1)
    body = {"crlFile": b64(crl.public_bytes(Encoding.DER))}
    response = api("POST", "/v1/projects/acme/crls", body)
    assert response.status_code == 201 and response.json()["data"]["revoked"] == 1
    result = platform.authenticator.authenticate(
        PresentedChain(device.cert), transport="https", peer="p"
    )
    assert isinstance(result, Refusal) and "revoked" in result.reason
    foreign = pki.stranger.sign_crl([], crl_number=1)
    body = {"crlFile": b64(foreign.public_bytes(Encoding.PEM))}
    refused = api("POST", "/v1/projects/acme/crls", body)
    assert refused.status_code == 400 and "not signed by" in refused.json()["error"]["message"]
