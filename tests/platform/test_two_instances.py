"""Two `fleetpki serve` instances sharing one PostgreSQL database see each other's changes."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
from platform_testing import PKI, ServeProcess, issue, pem
from test_serve import curl_whoami


@pytest.mark.postgres
def test_changes_through_one_instance_honoured_by_the_other(
    tmp_path: Path, pki: PKI, pg_url: str
) -> None:
    with (
        ServeProcess(tmp_path / "one", pg_url, workers=1) as one,
        ServeProcess(tmp_path / "two", pg_url, workers=2) as two,
    ):
        assert one.api("POST", "/v1/projects", {"id": "acme"}).status_code == 201
        files = issue(pki.inter_a, "acme", "roamer").write(tmp_path)
        assert curl_whoami(two, files)[0] == 403  # nothing uploaded yet
        body = {
            "certFile": base64.b64encode(pem(pki.inter_a.certificate)).decode(),
            "certType": "intermediate",
        }
        ca_id = one.api("POST", "/v1/projects/acme/certificates", body).json()["data"]["id"]
        start = time.monotonic()
        while curl_whoami(two, files)[0] != 200:
            assert time.monotonic() - start < 5, "upload through one not honoured by two"
            time.sleep(0.1)
        one.api("PATCH", f"/v1/projects/acme/certificates/{ca_id}", {"enabled": False})
        start = time.monotonic()
        while curl_whoami(two, files)[0] != 403:
            assert time.monotonic() - start < 5, "disable through one not honoured by two in 5 s"
            time.sleep(0.1)
        # Every worker of two refreshes within its refresh interval (0.25 s): refused from now on.
        time.sleep(0.5)
        assert [curl_whoami(two, files)[0] for _ in range(4)] == [403] * 4

        def reasons() -> list[str]:
            path = "/v1/projects/acme/auth-events?certificateId=roamer"
            return [e["reason"] for e in one.api("GET", path).json()["list"]]

        # Both instances record into the same event log (workers write in batches).
        start = time.monotonic()
        while not any("is disabled in project 'acme'" in r for r in reasons()):
            assert time.monotonic() - start < 5, reasons()
            time.sleep(0.1)
        assert "accepted" in reasons()
