"""Real device stacks against the CoAPS endpoint: libcoap (OpenSSL, GnuTLS), mbedTLS, openssl v1."""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiocoap
import pytest
from coaps_fixtures import CoapsEnv, coap_client, mbedtls_get, openssl_recipe_device

LIBCOAP = ["coap-client-openssl", "coap-client-gnutls"]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoapsEnv]:
    opened = CoapsEnv(tmp_path_factory.mktemp("coaps-devices"))
    yield opened
    opened.close()


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr  # libcoap logs to stdout
    assert "alert" not in output and "ERR" not in output and "WARN" not in output, output
    return result.stdout.strip()


@pytest.mark.parametrize("binary", LIBCOAP)
def test_libcoap_whoami_and_state(env: CoapsEnv, binary: str) -> None:
    device = env.pki.device(f"lc-{binary[-7:]}")
    whoami = json.loads(_ok(coap_client(binary, device, env.ca_file, env.port, "whoami")))
    assert whoami["projectId"] == "acme"
    assert whoami["certificateId"] == device.certificate_id
    assert whoami["name"] == device.certificate_id
    document = {"temperature": 21.5, "by": binary}
    put = coap_client(
        binary, device, env.ca_file, env.port, "state", method="put", payload=json.dumps(document)
    )
    _ok(put)
    got = _ok(coap_client(binary, device, env.ca_file, env.port, "state"))
    assert json.loads(got) == document
    links = _ok(coap_client(binary, device, env.ca_file, env.port, ".well-known/core"))
    assert "</whoami>" in links and "</state>" in links
    events = [e for e in env.events() if e["certificateId"] == device.certificate_id]
    assert len(events) == 4
    assert {e["outcome"] for e in events} == {"accepted"}
    assert {e["deviceId"] for e in events} == {whoami["deviceId"]}


@pytest.mark.parametrize("binary", LIBCOAP)
def test_libcoap_blockwise_state(env: CoapsEnv, binary: str, tmp_path: Path) -> None:
    device = env.pki.device(f"bw-{binary[-7:]}")
    # ~4 KiB compact JSON: block-wise both ways at 256-byte blocks, more than one datagram.
    document = {"readings": [{"i": i, "v": i * 1.5} for i in range(200)]}
    body = json.dumps(document, separators=(",", ":"))
    assert len(body) > 3000
    payload = tmp_path / "state.json"
    payload.write_text(body)
    args = [binary, "-b", "256", "-c", str(device.cert), "-j", str(device.key),
            "-C", str(env.ca_file), "-B", "5"]  # fmt: skip
    url = f"coaps://127.0.0.1:{env.port}/state"
    put = subprocess.run(
        [*args, "-m", "put", "-f", str(payload), url], capture_output=True, text=True, timeout=20
    )
    _ok(put)
    got = subprocess.run([*args, url], capture_output=True, text=True, timeout=20)
    assert json.loads(_ok(got)) == document


def test_libcoap_non_confirmable(env: CoapsEnv) -> None:
    device = env.pki.device("lc-non")
    result = subprocess.run(
        ["coap-client-openssl", "-N", "-c", str(device.cert), "-j", str(device.key),
         "-C", str(env.ca_file), "-B", "5", f"coaps://127.0.0.1:{env.port}/whoami"],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    assert json.loads(_ok(result))["certificateId"] == "lc-non"


@pytest.mark.parametrize(
    "suite",
    [
        "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256",
        "TLS-ECDHE-ECDSA-WITH-AES-128-CCM",
        "TLS-ECDHE-ECDSA-WITH-AES-128-CCM-8",
    ],
)
def test_mbedtls_device_p256(env: CoapsEnv, suite: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetpki.platform.transports.dtls")
    device = env.pki.device(f"mcu-{suite[-5:].lower()}", key_type="p256")
    reply, negotiated = mbedtls_get(env.port, device, env.ca_file, "whoami", suite)
    assert negotiated == suite
    assert reply.code == aiocoap.CONTENT
    assert reply.mtype == aiocoap.ACK  # piggybacked answer to a confirmable request
    assert json.loads(reply.payload)["certificateId"] == device.certificate_id
    # mbedTLS 2.28 and our server agree on the extended master secret (RFC 7627).
    assert "extended master secret yes" in caplog.text


def test_mbedtls_device_p384(env: CoapsEnv) -> None:
    device = env.pki.device("mcu-p384", key_type="p384")
    reply, _suite = mbedtls_get(env.port, device, env.ca_file, "whoami")
    assert json.loads(reply.payload)["certificateId"] == "mcu-p384"


def test_openssl_recipe_v1_device(env: CoapsEnv, tmp_path: Path) -> None:
    device = openssl_recipe_device(tmp_path, "acme", "seed-v1")
    text = subprocess.run(
        ["openssl", "x509", "-in", str(device.cert), "-noout", "-text"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "Version: 1 (0x0)" in text
    env.platform.store.upload_ca("acme", (tmp_path / "root.pem").read_bytes(), "root")
    result = coap_client("coap-client-openssl", device, env.ca_file, env.port, "whoami")
    assert json.loads(_ok(result))["certificateId"] == "seed-v1"
    assert env.events()[0]["certificateId"] == "seed-v1"
    assert env.events()[0]["outcome"] == "accepted"
