"""Real device stacks against the CoAPS endpoint: libcoap (OpenSSL, GnuTLS), mbedTLS, openssl v1."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiocoap
import pytest
from coaps_fixtures import (
    CoapsEnv,
    Pki,
    coap_client,
    free_udp_port,
    mbedtls_get,
    openssl_recipe_device,
    pem,
)

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
def test_libcoap_whoami_and_state(
    env: CoapsEnv, binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetpki.platform.transports.dtls")
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
    handshakes = [r.getMessage() for r in caplog.records if "DTLS handshake with" in r.getMessage()]
    assert len(handshakes) == 4
    assert all("extended master secret yes" in h for h in handshakes), handshakes


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


def test_ipv6_loopback(tmp_path: Path) -> None:
    ipv6 = CoapsEnv(tmp_path, host="::1")
    try:
        device = ipv6.pki.device("v6-sensor")
        result = coap_client(
            "coap-client-gnutls", device, ipv6.ca_file, ipv6.port, "whoami", host="[::1]"
        )
        assert json.loads(_ok(result))["certificateId"] == "v6-sensor"
        assert ipv6.events()[0]["peer"].startswith("[::1]:")
    finally:
        ipv6.close()


def test_fleetpki_serve_coaps(tmp_path: Path) -> None:
    """The real `fleetpki serve --coaps HOST:PORT` process calls serve_coaps."""
    from fleetpki.platform.app import Platform

    pki = Pki(tmp_path / "pki", "served")
    with Platform.open(tmp_path / "data") as platform:
        platform.store.create_project("acme", "Acme")
        platform.store.upload_ca("acme", pem(pki.ca.certificate), "intermediate")
    port = free_udp_port()
    env = {**os.environ, "FLEETPKI_ADMIN_KEY": "coaps-test-admin-key-0123456789abcdef"}
    process = subprocess.Popen(
        [sys.executable, "-m", "fleetpki.cli.main", "serve", "--data", str(tmp_path / "data"),
         "--api", "127.0.0.1:0", "--https", "127.0.0.1:0", "--coaps", f"127.0.0.1:{port}",
         "--workers", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.strip() == "ready":
                break
        assert any(f"coaps://127.0.0.1:{port}" in line for line in lines), lines
        device = pki.device("served-1")
        ca_file = tmp_path / "data" / "server-ca.crt.pem"
        result = coap_client("coap-client-openssl", device, ca_file, port, "whoami")
        assert json.loads(_ok(result))["certificateId"] == "served-1"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def test_oversized_blockwise_put_is_refused(env: CoapsEnv, tmp_path: Path) -> None:
    device = env.pki.device("bw-big")
    args = ["coap-client-openssl", "-b", "1024", "-c", str(device.cert), "-j", str(device.key),
            "-C", str(env.ca_file), "-B", "5", "-m", "put"]  # fmt: skip
    url = f"coaps://127.0.0.1:{env.port}/state"
    # Over the platform's state limit (8 KiB) but within the endpoint's: the platform says 4.13.
    medium = tmp_path / "medium.json"
    medium.write_text(json.dumps({"blob": "x" * 10_000}))
    result = subprocess.run([*args, "-f", str(medium), url], capture_output=True, text=True)
    assert "4.13" in result.stdout + result.stderr
    # Over the endpoint's reassembly bound (64 KiB): refused before it is held in memory.
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"blob": "x" * 100_000}))
    result = subprocess.run([*args, "-f", str(huge), url], capture_output=True, text=True)
    assert "4.13" in result.stdout + result.stderr
    assert "65536" in result.stdout + result.stderr
