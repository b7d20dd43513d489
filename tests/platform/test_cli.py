"""`fleetpki platform ...` against a real `fleetpki serve`, and `fleetpki quickstart`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from platform_testing import PKI, ServeProcess, curl_whoami, issue, pem

from fleetpki_testing import run_fleetpki


def test_platform_cli_against_serve(tmp_path: Path, pki: PKI, db_url: str | None) -> None:
    with ServeProcess(tmp_path / "data", db_url, workers=0) as server:
        admin = {"FLEETPKI_API_URL": server.api_url, "FLEETPKI_API_KEY": server.ADMIN_KEY}

        def cli(*args: str, env: dict[str, str] = admin) -> dict:  # type: ignore[type-arg]
            rc, out, err = run_fleetpki("platform", *args, "--json", env=env)
            assert rc == 0, err
            return json.loads(out)  # type: ignore[no-any-return]

        assert cli("project", "create", "acme", "--name", "Acme")["id"] == "acme"
        key = cli("apikey", "create", "--project", "acme")["key"]
        user = {
            "FLEETPKI_API_URL": server.api_url,
            "FLEETPKI_API_KEY": key,
            "FLEETPKI_PROJECT": "acme",
        }
        (tmp_path / "root.pem").write_bytes(pem(pki.root_a.certificate))
        ca = cli("upload-ca", str(tmp_path / "root.pem"), "--type", "root", env=user)["list"][0]
        assert [c["id"] for c in cli("ca", "list", env=user)["list"]] == [ca["id"]]
        assert cli("ca", "disable", ca["id"], env=user)["enabled"] is False
        assert cli("ca", "enable", ca["id"], env=user)["enabled"] is True
        made = cli("device", "create", "pump-7", env=user)
        files = issue(pki.root_a, "acme", "pump-7").write(tmp_path)
        status, body = curl_whoami(server, files)
        assert status == 200 and json.loads(body)["deviceId"] == made["id"], body
        listed = cli("device", "list", env=user)
        assert listed["total"] == 1 and listed["list"][0]["certificateId"] == "pump-7"
        assert cli("device", "rename", made["id"], "pump-seven", env=user)["name"] == "pump-seven"
        assert cli("device", "disable", made["id"], env=user)["enabled"] is False
        events = cli("events", "--outcome", "accepted", env=user)["list"]
        assert events[0]["certificateId"] == "pump-7"
        cli("device", "delete", made["id"], env=user)
        cli("ca", "delete", ca["id"], env=user)
        # Errors are one line, non-zero, and never a traceback.
        rc, _, err = run_fleetpki("platform", "ca", "list", "-p", "other", env=user)
        assert rc == 1 and err.startswith("error: HTTP 404") and "Traceback" not in err
        rc, _, err = run_fleetpki(
            "platform", "ca", "list", "-p", "acme", env={"FLEETPKI_API_URL": server.api_url}
        )
        assert rc == 1 and "no API key" in err
        secret = issue(pki.root_a, "acme", "k").write(tmp_path, "secret")[1]
        rc, _, err = run_fleetpki("platform", "upload-ca", str(secret), env=user)
        assert rc == 1 and "private key" in err
        assert secret.read_text().splitlines()[1][:16] not in err


def test_quickstart_then_serve_again(tmp_path: Path) -> None:
    folder = tmp_path / "qs"
    rc, out, err = run_fleetpki("quickstart", "--dir", str(folder), "--json")
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["whoami"]["projectId"] == "quickstart"
    assert summary["whoami"]["certificateId"] == "device-001"
    assert summary["devicesInProject"] == 1 and summary["lastAuthEvent"]["outcome"] == "accepted"
    files = summary["files"]
    assert Path(files["deviceKey"]).stat().st_mode & 0o077 == 0
    # What the summary tells the user to do next works: serve the same data, connect with curl.
    with ServeProcess(Path(files["platformData"]), workers=0) as server:
        out2 = subprocess.run(
            [
                "curl",
                "-sS",
                "--cert",
                files["deviceCertificate"],
                "--key",
                files["deviceKey"],
                "--cacert",
                files["serverCA"],
                f"https://localhost:{server.https_port}/v1/device/whoami",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(out2.stdout)["deviceId"] == summary["whoami"]["deviceId"], out2.stderr
    rc, _, err = run_fleetpki("quickstart", "--dir", str(folder))
    assert rc == 1 and "already exists" in err
