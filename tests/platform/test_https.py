"""The HTTPS mTLS device endpoint: real handshakes on loopback with curl, openssl s_client and
Python's ssl module; every refusal is recorded with its reason."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_testing import PKI, Device, issue, pem

from fleetpki.platform.app import Platform
from fleetpki.platform.transports.https import (
    HttpsDeviceServer,
    listen,
    server_context,
    start_in_thread,
)
from fleetpki_testing import run_openssl


@pytest.fixture
def server(acme: Platform) -> Iterator[tuple[str, int]]:
    sock = listen("127.0.0.1", 0)
    context = server_context(acme.server_cert_file, acme.server_key_file)
    https = HttpsDeviceServer(acme.authenticator, acme.resources, context, sock)
    thread = start_in_thread(https)
    yield https.address
    https.shutdown()
    thread.join(5)
    sock.close()


def curl(
    platform: Platform, address: tuple[str, int], files: tuple[Path, Path] | None, *extra: str
) -> tuple[int, str]:
    """(HTTP status, body) of a curl request to the device endpoint."""
    cmd = ["curl", "-sS", "--max-time", "10", "--cacert", str(platform.server_ca_file)]
    if files is not None:
        cmd += ["--cert", str(files[0]), "--key", str(files[1])]
    cmd += ["-w", "\n%{http_code}", *extra]
    if not any(a.startswith("https://") for a in extra):
        cmd.append(f"https://localhost:{address[1]}/v1/device/whoami")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


def python_client(
    platform: Platform, address: tuple[str, int], device: Device | None, tmp: Path
) -> tuple[int, dict[str, object]]:
    """A device written with the stdlib ssl module: (status, JSON body)."""
    context = ssl.create_default_context(cafile=str(platform.server_ca_file))
    if device is not None:
        cert_file, key_file = device.write(tmp)
        context.load_cert_chain(cert_file, key_file)
    with socket.create_connection(address, timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(
                b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_curl_and_openssl_s_client_get_whoami(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    files = issue(pki.root_a, "acme", "curl-1").write(tmp_path)
    status, body = curl(acme, server, files)
    assert status == 200, body
    who = json.loads(body)
    assert who["projectId"] == "acme" and who["certificateId"] == "curl-1"
    assert who["name"] == "curl-1" and len(who["deviceId"]) == 32
    # openssl s_client as a device, over TLS 1.2 this time.
    request = b"GET /v1/device/whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    out = run_openssl(
        "s_client",
        "-connect",
        f"127.0.0.1:{server[1]}",
        "-servername",
        "localhost",
        "-cert",
        files[0],
        "-key",
        files[1],
        "-CAfile",
        acme.server_ca_file,
        "-verify_return_error",
        "-tls1_2",
        "-quiet",
        "-ign_eof",
        input=request,
    )
    assert "HTTP/1.1 200 OK" in out.stdout
    assert json.loads(out.stdout.split("\r\n\r\n", 1)[1])["deviceId"] == who["deviceId"]


def test_state_put_and_get_with_curl(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    files = issue(pki.root_a, "acme", "state-1").write(tmp_path)
    url = f"https://localhost:{server[1]}/v1/device/state"
    status, _ = curl(acme, server, files, "-X", "PUT", "--data", '{"temp": 21.5}', url)
    assert status == 204
    status, body = curl(acme, server, files, url)
    assert (status, json.loads(body)) == (200, {"temp": 21.5})
    status, body = curl(acme, server, files, "-X", "PUT", "--data", "nope", url)
    assert status == 400 and "JSON" in body
    status, _ = curl(acme, server, files, f"https://localhost:{server[1]}/v1/projects/acme/devices")
    assert status == 404


def test_device_sending_its_intermediate(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    device = issue(pki.inter_a, "acme", "chained-1", chain=(pki.inter_a.certificate,))
    status, body = curl(acme, server, device.write(tmp_path))
    assert status == 200 and json.loads(body)["certificateId"] == "chained-1"


def test_seed_openssl_recipe_v1_device(
    acme: Platform, server: tuple[str, int], tmp_path: Path
) -> None:
    """The seed's plain openssl commands: req -x509 root, x509 -req v1 device certificate."""

    def sh(*args: str) -> None:
        run_openssl(*args, cwd=tmp_path)

    sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "root.key")
    sh(
        "req",
        "-x509",
        "-new",
        "-key",
        "root.key",
        "-sha256",
        "-days",
        "365",
        "-subj",
        "/CN=Seed Root",
        "-out",
        "root.pem",
    )
    sh("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "dev.key")
    sh("req", "-new", "-key", "dev.key", "-subj", "/O=seed/CN=seed-dev-1", "-out", "dev.csr")
    sh(
        "x509",
        "-req",
        "-in",
        "dev.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-sha256",
        "-out",
        "dev.pem",
    )
    text = run_openssl("x509", "-in", tmp_path / "dev.pem", "-noout", "-text").stdout
    assert "Version: 1" in text
    acme.store.create_project("seed")
    acme.store.upload_ca("seed", (tmp_path / "root.pem").read_bytes(), "root")
    status, body = curl(acme, server, (tmp_path / "dev.pem", tmp_path / "dev.key"))
    assert status == 200, body
    assert json.loads(body)["projectId"] == "seed"


def _cases(pki: PKI) -> dict[str, tuple[Device | None, str]]:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=3)
    parent = issue(pki.root_a, "acme", "parent-dev")
    return {
        "no client certificate": (None, "no client certificate"),
        "unknown project": (issue(pki.root_a, "nosuch", "d1"), "unknown project 'nosuch'"),
        "A's CA, says O=other": (issue(pki.root_a, "other", "d2"), "no path"),
        "leaf signed by a device": (
            issue(parent, "acme", "d3", chain=(parent.cert,)),
            "is not a CA",
        ),
        "expired leaf": (issue(pki.root_a, "acme", "d4", now=past, days=2), "expired"),
        "not yet valid leaf": (issue(pki.root_a, "acme", "d5", now=future), "not yet valid"),
        "stranger CA": (issue(pki.stranger, "acme", "d6"), "no path"),
    }


def test_refusals_over_real_handshakes(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    for label, (device, fragment) in _cases(pki).items():
        status, body = python_client(acme, server, device, tmp_path / label.replace(" ", "_"))
        assert status in (401, 403), label
        assert fragment in str(body["error"]["message"]), (label, body)  # type: ignore[index]
        project = None
        if device is not None:
            project = device.cert.subject.rfc4514_string().split("O=")[1].split(",")[0]
        event = acme.store.list_auth_events(project, transport="https", limit=1)[0]
        assert event["outcome"] == "refused" and fragment in str(event["reason"]), label
        if device is not None:
            assert event["serial"] == f"{device.cert.serial_number:x}"
    # The device chaining to acme's CA but saying O=other is recorded under other only.
    assert not acme.store.list_auth_events("acme", certificate_id="d2")
    # Nothing was created by any refused device.
    assert acme.store.list_devices("acme")[1] == 0
    assert acme.store.list_devices("other")[1] == 0


def test_ca_disable_delete_and_device_disable_without_restart(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    [inter] = acme.store.upload_ca("acme", pem(pki.inter_a.certificate), "intermediate")
    files = issue(pki.inter_a, "acme", "live-1").write(tmp_path)
    assert curl(acme, server, files)[0] == 200
    acme.store.set_ca_enabled("acme", inter["id"], False)
    status, body = curl(acme, server, files)
    assert status == 403 and "disabled" in body
    acme.store.set_ca_enabled("acme", inter["id"], True)
    assert curl(acme, server, files)[0] == 200
    acme.store.delete_ca("acme", inter["id"])
    status, body = curl(acme, server, files)
    assert status == 403 and "no path" in body
    # A CA uploaded to another project does not count for acme.
    acme.store.upload_ca("other", pem(pki.inter_a.certificate), "intermediate")
    assert curl(acme, server, files)[0] == 403
    # A disabled device.
    acme.store.upload_ca("acme", pem(pki.inter_a.certificate), "intermediate")
    status, body = curl(acme, server, files)
    assert status == 200
    device_id = json.loads(body)["deviceId"]
    acme.store.update_device("acme", device_id, enabled=False)
    status, body = curl(acme, server, files)
    assert status == 403 and "disabled" in body
    reasons = [e["reason"] for e in acme.store.list_auth_events("acme", certificate_id="live-1")]
    assert reasons[0] == "device 'live-1' is disabled"
    assert any("is disabled in project 'acme'" in r for r in reasons)


def test_keep_alive_and_malformed_requests(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    cert_file, key_file = issue(pki.root_a, "acme", "keepalive-1").write(tmp_path)
    context = ssl.create_default_context(cafile=str(acme.server_ca_file))
    context.load_cert_chain(cert_file, key_file)
    with socket.create_connection(server, timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            body = b'{"on": true}'
            tls.sendall(
                b"PUT /v1/device/state HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
                + b"GET /v1/device/state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    assert data.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert data.count(b"HTTP/1.1 ") == 2 and data.endswith(b'{"on":true}')
    for request in (b"NONSENSE\r\n\r\n", b"GET / SPDY/9\r\n\r\n"):
        with socket.create_connection(server, timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(request)
                assert tls.recv(65536).startswith(b"HTTP/1.1 400")
    # One device connection being idle does not hold up another device.
    idle = socket.create_connection(server, timeout=10)
    try:
        status, _ = python_client(acme, server, issue(pki.root_a, "acme", "busy-1"), tmp_path / "b")
        assert status == 200
    finally:
        idle.close()


def test_certificate_id_rules_over_real_handshakes(
    acme: Platform, server: tuple[str, int], pki: PKI, tmp_path: Path
) -> None:
    def whoami(certificate_id: str, folder: str) -> dict[str, object]:
        device = issue(pki.root_a, "acme", certificate_id)
        status, body = python_client(acme, server, device, tmp_path / folder)
        assert status == 200, body
        return body

    made = acme.store.create_device("acme", "pump-9")
    assert whoami("pump-9", "b")["deviceId"] == made["id"]  # rule b: claims the pre-created
    created = whoami("new-1", "c")  # rule c: a new device named after the ID
    assert created["name"] == "new-1"
    acme.store.update_device("acme", str(created["deviceId"]), name="taken")
    again = whoami("new-1", "a")  # rule a, with a renewed certificate (new key)
    assert again["deviceId"] == created["deviceId"] and again["certificateId"] == "new-1"
    assert again["name"] == "taken"
    clash = whoami("taken", "suffix")  # the name is held by a device with another ID
    assert clash["deviceId"] != created["deviceId"]
    assert str(clash["name"]).startswith("taken-") and clash["certificateId"] == "taken"
    got = acme.store.get_device("acme", str(created["deviceId"]))
    assert got["certificateId"] == "new-1"  # never changed


def test_idle_peers_cost_no_thread_and_are_dropped(
    acme: Platform, pki: PKI, tmp_path: Path
) -> None:
    sock = listen("127.0.0.1", 0)
    context = server_context(acme.server_cert_file, acme.server_key_file)
    https = HttpsDeviceServer(
        acme.authenticator, acme.resources, context, sock, handshake_timeout=0.5, idle_timeout=0.5
    )
    thread = start_in_thread(https)
    try:
        idle = [socket.create_connection(https.address, timeout=5) for _ in range(100)]
        device = issue(pki.root_a, "acme", "among-idle")
        assert python_client(acme, https.address, device, tmp_path / "d")[0] == 200
        # A device that completes its handshake and then says nothing is dropped too.
        client_context = ssl.create_default_context(cafile=str(acme.server_ca_file))
        client_context.load_cert_chain(*device.write(tmp_path / "quiet"))
        quiet = client_context.wrap_socket(
            socket.create_connection(https.address, timeout=5), server_hostname="localhost"
        )
        for peer in [*idle, quiet]:
            try:
                assert peer.recv(1) == b""  # closed by the server within the timeouts
            except (ConnectionResetError, ssl.SSLError):
                pass
            peer.close()
    finally:
        https.shutdown()
        thread.join(5)
        sock.close()
