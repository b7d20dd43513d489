"""`fleetpki quickstart`: the seed story end to end on one machine, through the real interfaces.

Root + intermediate CA (offline side), the platform on loopback, a project created and the root
uploaded through the management API, a device key + CSR + certificate, then the device connects
over mTLS, is created automatically and reads ``whoami``.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fleetpki.csr import create_csr
from fleetpki.errors import ConflictError, FleetPKIError
from fleetpki.files import write_file
from fleetpki.formats import certificate_bytes
from fleetpki.home import Home
from fleetpki.keys import generate_private_key, serialize_private_key
from fleetpki.platform.app import Platform
from fleetpki.platform.server import resolve_admin_key
from fleetpki.platform.transports.https import (
    HttpsDeviceServer,
    listen,
    server_context,
    start_in_thread,
)

PROJECT = "quickstart"
CERTIFICATE_ID = "device-001"


def _device_whoami(port: int, ca_file: Path, cert_file: Path, key_file: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.load_cert_chain(cert_file, key_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    if status != 200:
        raise FleetPKIError(f"the device was refused ({status}): {body.decode(errors='replace')}")
    answer: dict[str, Any] = json.loads(body)
    return answer


class _Api:
    """The management API on loopback (uvicorn in a thread) and an httpx client for it."""

    def __init__(self, platform: Platform, admin_key: str) -> None:
        import uvicorn

        from fleetpki.platform.api import create_app

        self.sock = listen("127.0.0.1", 0, backlog=16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(platform, admin_key), log_level="warning", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, headers={"x-api-key": admin_key}, timeout=10)
        for _ in range(200):
            if self.server.started:
                break
            threading.Event().wait(0.02)

    def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        headers = {"x-api-key": key} if key else None
        response = self.client.request(method, path, json=body, headers=headers)
        if response.status_code >= 400:
            raise FleetPKIError(f"{method} {path}: {response.json()['error']['message']}")
        return response.json()

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(5)
        self.sock.close()


def run_quickstart(folder: Path, say: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Run the whole story in ``folder`` (must not exist yet); returns the summary."""
    say = say or (lambda _line: None)
    folder = Path(folder).expanduser().resolve()
    if folder.exists() and any(folder.iterdir()):
        raise ConflictError(f"{folder} already exists and is not empty: remove it or use --dir")
    home = Home(folder / "pki")
    root = home.init_root("root", common_name="Quickstart Root CA", passphrase=None)
    factory = home.create_intermediate(
        "factory", parent="root", parent_passphrase=None, passphrase=None
    )
    say(f"1. root CA and intermediate 'factory' created in {home.path} (keys unencrypted: a demo)")

    platform = Platform.open(folder / "platform")
    admin_key, admin_source = resolve_admin_key(None, platform.data_dir)
    https_sock = listen("127.0.0.1", 0)
    https = HttpsDeviceServer(
        platform.authenticator,
        platform.resources,
        server_context(platform.server_cert_file, platform.server_key_file),
        https_sock,
    )
    start_in_thread(https)
    api = _Api(platform, admin_key)
    https_port = https_sock.getsockname()[1]
    try:
        say(f"2. platform started: API {api.url}, device HTTPS https://localhost:{https_port}")
        api.call("POST", "/v1/projects", {"id": PROJECT, "name": "Quickstart"})
        key = api.call("POST", f"/v1/projects/{PROJECT}/apikeys")["data"]["key"]
        upload = {
            "certFile": base64.b64encode(certificate_bytes(root.certificate)).decode(),
            "certType": "root",
        }
        ca = api.call("POST", f"/v1/projects/{PROJECT}/certificates", upload, key=key)["data"]
        say(f"3. project '{PROJECT}' created; root CA uploaded through the API (id {ca['id']})")

        device_dir = folder / "device"
        device_dir.mkdir(mode=0o700)
        device_key = generate_private_key()
        csr = create_csr(device_key, PROJECT, CERTIFICATE_ID)
        cert = home.sign(factory, csr, project_slug=PROJECT)
        files = {
            "key": device_dir / "device.key.pem",
            "csr": device_dir / "device.csr.pem",
            "certificate": device_dir / "device.crt.pem",
        }
        write_file(files["key"], serialize_private_key(device_key, None), private=True)
        from cryptography.hazmat.primitives.serialization import Encoding

        write_file(files["csr"], csr.public_bytes(Encoding.PEM))
        # The device sends its certificate with the intermediate: the platform knows the root.
        write_file(
            files["certificate"],
            certificate_bytes(cert) + certificate_bytes(factory.certificate),
        )
        say(
            f"4. device key, CSR and certificate (O={PROJECT}, CN={CERTIFICATE_ID}) in {device_dir}"
        )

        whoami = _device_whoami(
            https_port, platform.server_ca_file, files["certificate"], files["key"]
        )
        say(f"5. device connected over mTLS and read whoami: {json.dumps(whoami)}")
        devices = api.call("GET", f"/v1/projects/{PROJECT}/devices", key=key)
        events = api.call("GET", f"/v1/projects/{PROJECT}/auth-events", key=key)["list"]
    finally:
        api.close()
        https.shutdown()
        https_sock.close()
        platform.close()
    summary = {
        "project": PROJECT,
        "whoami": whoami,
        "devicesInProject": devices["total"],
        "lastAuthEvent": events[0] if events else None,
        "files": {
            "pkiHome": str(home.path),
            "rootCertificate": str(home.ca_dir("root") / "ca.crt.pem"),
            "deviceCertificate": str(files["certificate"]),
            "deviceKey": str(files["key"]),
            "platformData": str(platform.data_dir),
            "serverCA": str(platform.server_ca_file),
            "adminKey": admin_source,
        },
    }
    say("")
    say("Done. Files:")
    for label, path in summary["files"].items():  # type: ignore[attr-defined]
        say(f"  {label:<18} {path}")
    say("")
    say("Run the platform again and connect as the device yourself:")
    say(f"  fleetpki serve --data {platform.data_dir} --https 127.0.0.1:8443 --no-coaps")
    say(
        f"  curl --cert {files['certificate']} --key {files['key']} "
        f"--cacert {platform.server_ca_file} https://localhost:8443/v1/device/whoami"
    )
    return summary
