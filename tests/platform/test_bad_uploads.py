"""Broken CA certificates and CRLs: refused with 400 and nothing stored; rows that an older
version stored and that cannot be read break nothing else (list, delete, CRL upload, devices)."""

from __future__ import annotations

import base64
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from platform_testing import PKI, ServeProcess, broken_key_twin, der_parts, issue, pem, resign
from test_serve import curl_whoami, wait_for

from fleetpki.der import pem_armor
from fleetpki.platform.api import create_app
from fleetpki.platform.app import Platform
from fleetpki.platform.identity import DeviceIdentity, PresentedChain, Refusal
from fleetpki.platform.store.base import new_id, utcnow
from fleetpki.platform.store.schema import ca_certificates, crls

ADMIN = ServeProcess.ADMIN_KEY


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ca_body(data: bytes, cert_type: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"certFile": b64(data)}
    if cert_type is not None:
        body["certType"] = cert_type
    return body


def crl_body(pki: PKI, revoked: list[int]) -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    crl = pki.root_a.sign_crl([(serial, now, "keyCompromise") for serial in revoked], crl_number=1)
    return {"crlFile": b64(crl.public_bytes(Encoding.DER))}


def test_f1_twin_is_refused_and_the_genuine_ca_works(tmp_path: Path, pki: PKI) -> None:
    """A twin of the genuine root whose key cannot be loaded: 400, nothing stored; then the
    genuine root, its CRL and its devices work, over real HTTP and mTLS."""
    with ServeProcess(tmp_path / "data", workers=1) as server:
        assert server.api("POST", "/v1/projects", {"id": "acme"}).status_code == 201
        for how in ("ec-point", "key-oid"):
            twin = broken_key_twin(pki.root_a.certificate, how)
            for data in (twin, pem_armor("CERTIFICATE", twin)):
                for cert_type in (None, "root", "intermediate"):
                    response = server.api(
                        "POST", "/v1/projects/acme/certificates", ca_body(data, cert_type)
                    )
                    assert response.status_code == 400, (how, cert_type, response.text)
                    message = response.json()["error"]["message"]
                    assert "public key cannot be read" in message, message
                    assert "CN=Acme Root" in message
            # A bundle with the genuine root and the twin: all or nothing.
            bundle = pem(pki.root_a.certificate) + pem_armor("CERTIFICATE", twin)
            response = server.api("POST", "/v1/projects/acme/certificates", ca_body(bundle, None))
            assert response.status_code == 400 and "certificate 2 of the upload" in response.text
            listed = server.api("GET", "/v1/projects/acme/certificates")
            assert listed.status_code == 200 and listed.json()["total"] == 0
        genuine = server.api(
            "POST",
            "/v1/projects/acme/certificates",
            ca_body(pem(pki.root_a.certificate), "root"),
        )
        assert genuine.status_code == 201, genuine.text
        kept = issue(pki.root_a, "acme", "twin-kept")
        revoked = issue(pki.root_a, "acme", "twin-revoked")
        kept_files = kept.write(tmp_path, "kept")
        revoked_files = revoked.write(tmp_path, "revoked")
        assert curl_whoami(server, kept_files)[0] == 200
        assert curl_whoami(server, revoked_files)[0] == 200
        response = server.api(
            "POST", "/v1/projects/acme/crls", crl_body(pki, [revoked.cert.serial_number])
        )
        assert response.status_code == 201, response.text
        assert wait_for(lambda: curl_whoami(server, revoked_files)[0] == 403)
        assert curl_whoami(server, kept_files)[0] == 200
        listed = server.api("GET", "/v1/projects/acme/certificates").json()
        assert listed["total"] == 1 and listed["list"][0]["problem"] is None


@pytest.fixture
def api(platform: Platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform, ADMIN), headers={"x-api-key": ADMIN}) as client:
        assert client.post("/v1/projects", json={"id": "acme"}).status_code == 201
        yield client


def _store_raw(platform: Platform, table: Any, **values: Any) -> str:
    """A row written past every check, as an older version (or a damaged database) left it."""
    row_id = new_id()
    with platform.store.engine.begin() as conn:
        conn.execute(
            table.insert().values(id=row_id, project_id="acme", created_at=utcnow(), **values)
        )
    platform.trust.invalidate()
    return row_id


def _authenticate(platform: Platform, device: Any) -> DeviceIdentity | Refusal:
    return platform.authenticator.authenticate(
        PresentedChain(device.cert), transport="https", peer="test"
    )


@pytest.mark.parametrize("how", ["ec-point", "key-oid"])
def test_unreadable_stored_ca_breaks_nothing(
    api: TestClient, platform: Platform, pki: PKI, how: str
) -> None:
    twin = broken_key_twin(pki.root_a.certificate, how)
    bad_id = _store_raw(
        platform,
        ca_certificates,
        cert_type="root",
        enabled=True,
        fingerprint="00" * 32,
        der=twin,
    )
    assert api.post(
        "/v1/projects/acme/certificates", json=ca_body(pem(pki.root_a.certificate), "root")
    ).is_success
    listed = api.get("/v1/projects/acme/certificates")
    assert listed.status_code == 200 and listed.json()["total"] == 2
    bad = next(c for c in listed.json()["list"] if c["id"] == bad_id)
    assert bad["certificateContent"] is None
    assert "public key cannot be read" in bad["problem"]
    assert api.get(f"/v1/projects/acme/certificates/{bad_id}").json()["data"]["problem"]
    # The genuine root's CRL is accepted, its devices authenticate, revocation works.
    kept, revoked = issue(pki.root_a, "acme", "kept-1"), issue(pki.root_a, "acme", "revoked-1")
    response = api.post("/v1/projects/acme/crls", json=crl_body(pki, [revoked.cert.serial_number]))
    assert response.status_code == 201, response.text
    assert isinstance(_authenticate(platform, kept), DeviceIdentity)
    refusal = _authenticate(platform, revoked)
    assert isinstance(refusal, Refusal) and "revoked" in refusal.reason
    # The unreadable row can be disabled and deleted like any other.
    path = f"/v1/projects/acme/certificates/{bad_id}"
    assert api.patch(path, json={"enabled": False}).status_code == 200
    assert api.delete(path).status_code == 204
    assert api.get("/v1/projects/acme/certificates").json()["total"] == 1


def test_unreadable_stored_crl_fails_closed_for_its_issuer_only(
    api: TestClient, platform: Platform, pki: PKI
) -> None:
    for cert in (pki.root_a.certificate, pki.stranger.certificate):
        assert api.post(
            "/v1/projects/acme/certificates", json=ca_body(pem(cert), "root")
        ).is_success
    under_a, under_stranger = issue(pki.root_a, "acme", "a-1"), issue(pki.stranger, "acme", "s-1")
    assert isinstance(_authenticate(platform, under_a), DeviceIdentity)
    _store_raw(platform, crls, issuer="CN=Acme Root", der=b"\x30\x03\x02\x01\x00")
    refusal = _authenticate(platform, under_a)
    assert isinstance(refusal, Refusal)
    assert refusal.reason.startswith("revocation cannot be checked: stored CRL"), refusal.reason
    assert isinstance(_authenticate(platform, under_stranger), DeviceIdentity)
    assert api.get("/v1/projects/acme/certificates").status_code == 200


def test_crl_uploads_refused_cleanly(api: TestClient, pki: PKI) -> None:
    assert api.post(
        "/v1/projects/acme/certificates", json=ca_body(pem(pki.root_a.certificate), "root")
    ).is_success
    good = pki.root_a.sign_crl([], crl_number=1).public_bytes(Encoding.DER)
    key = pki.root_a.signer.builder_key()
    tbs, _, _ = der_parts(good)
    # The issuer name's bytes garbled, signed again: it loads, and the issuer cannot be read.
    garbled = tbs.replace(b"Acme Root", b"\xff\xfe\xfdme Root")
    cases = {
        "garbage": b"\x30\x03\x02\x01\x00",
        "truncated": good[:-10],
        "garbled issuer, valid signature": resign(good, garbled, key),
        "two CRLs": pem_armor("X509 CRL", good) * 2,
        "a CRL and a certificate": pem_armor("X509 CRL", good) + pem(pki.root_a.certificate),
        "a CRL of another CA": pki.stranger.sign_crl([], crl_number=1).public_bytes(Encoding.DER),
    }
    for name, data in cases.items():
        response = api.post("/v1/projects/acme/crls", json={"crlFile": b64(data)})
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["code"] == "bad_request"
    assert api.post("/v1/projects/acme/crls", json={"crlFile": b64(good)}).status_code == 201


def test_unterminated_pem_headers_answered_fast_while_healthz_answers(tmp_path: Path) -> None:
    """The quadratic PEM regex held the process 121 s on 700 KiB; now 1 MiB is refused at once
    and the API's event loop keeps answering /healthz meanwhile."""
    with ServeProcess(tmp_path / "data", workers=0) as server:
        assert server.api("POST", "/v1/projects", {"id": "acme"}).status_code == 201
        latencies: list[float] = []
        failures: list[str] = []
        stop = threading.Event()

        def poll_health() -> None:
            with httpx.Client(base_url=server.api_url, timeout=5) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        ok = client.get("/healthz").status_code == 200
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    latencies.append(time.monotonic() - started)
                    if not ok:
                        failures.append("healthz not 200")
                    time.sleep(0.01)

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            one_mib = b"-----BEGIN X509 CRL-----\n" * ((1 << 20) // 25)
            for path, body, status in (
                ("/v1/projects/acme/crls", {"crlFile": b64(one_mib[: (1 << 20) - 100])}, 400),
                ("/v1/projects/acme/certificates", ca_body(one_mib, None), 413),
                ("/v1/projects/acme/certificates", ca_body(one_mib[: 250 * 1024], None), 400),
            ):
                started = time.monotonic()
                response = server.api("POST", path, body)
                elapsed = time.monotonic() - started
                assert response.status_code == status, response.text
                assert response.json()["error"]["code"] in ("bad_request", "too_large")
                assert elapsed < 1.0, f"{path}: {elapsed:.2f} s"
        finally:
            stop.set()
            poller.join()
        assert not failures, failures
        assert len(latencies) >= 3 and max(latencies) < 1.0, max(latencies)
