"""Refused handshakes: the device gets a fatal access_denied alert, the auth events the reason."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator

import pytest
from coaps_fixtures import CoapsEnv, DeviceFiles, DtlsClient, Pki, coap_client, mbedtls_get, pem
from OpenSSL import SSL


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoapsEnv]:
    opened = CoapsEnv(tmp_path_factory.mktemp("coaps-refusals"))
    yield opened
    opened.close()


def _refused(env: CoapsEnv, device: DeviceFiles, binary: str = "coap-client-openssl") -> None:
    result = coap_client(binary, device, env.ca_file, env.port, "whoami")
    output = result.stdout + result.stderr  # libcoap logs to stdout
    # OpenSSL says "tlsv1 alert access denied", GnuTLS "Alert '49': Access was denied".
    assert "alert access denied" in output or "Access was denied" in output, output
    assert "certificateId" not in output


def _last_reason(env: CoapsEnv, certificate_id: str) -> str:
    events = [e for e in env.events() if e["certificateId"] == certificate_id]
    assert events, f"no auth event for {certificate_id}"
    assert events[0]["outcome"] == "refused"
    assert events[0]["transport"] == "coaps"
    return str(events[0]["reason"])


def test_no_client_certificate(env: CoapsEnv) -> None:
    client = DtlsClient(env.port, None, None, env.ca_file)
    try:
        with pytest.raises(SSL.Error, match="access denied"):
            client.handshake()
        peer = f"127.0.0.1:{client.sock.getsockname()[1]}"
    finally:
        client.close()
    events = [e for e in env.events(project=None) if e["peer"] == peer]
    assert len(events) == 1
    assert events[0]["outcome"] == "refused"
    assert "no client certificate" in events[0]["reason"]


@pytest.mark.parametrize("binary", ["coap-client-openssl", "coap-client-gnutls"])
def test_libcoap_without_certificate(env: CoapsEnv, binary: str) -> None:
    result = subprocess.run(
        [binary, "-C", str(env.ca_file), "-B", "5", f"coaps://127.0.0.1:{env.port}/whoami"],
        capture_output=True, text=True, timeout=15,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "alert access denied" in output or "Access was denied" in output, output
    port = re.search(r"127\.0\.0\.1:(\d+) <-> ", output)
    assert port is not None, output
    events = [e for e in env.events(project=None) if e["peer"] == f"127.0.0.1:{port[1]}"]
    assert [e["reason"] for e in events] == ["no client certificate"]


@pytest.mark.parametrize("binary", ["coap-client-openssl", "coap-client-gnutls"])
def test_other_projects_ca(env: CoapsEnv, binary: str) -> None:
    # O=acme, but issued by the CA uploaded to project "other".
    device = env.other_pki.device(f"intruder-{binary[-7:]}", project="acme")
    _refused(env, device, binary)
    assert "no path to a trusted CA certificate" in _last_reason(env, device.certificate_id)


def test_expired_certificate(env: CoapsEnv) -> None:
    device = env.pki.device("old-sensor", expired=True)
    _refused(env, device)
    assert "expired" in _last_reason(env, "old-sensor")


def test_disabled_ca(env: CoapsEnv) -> None:
    factory = Pki(env.dir / "pki-factory", "factory")
    ca_id = env.platform.store.upload_ca("acme", pem(factory.ca.certificate), "intermediate")[0][
        "id"
    ]
    device = factory.device("line-2")
    ok = coap_client("coap-client-openssl", device, env.ca_file, env.port, "whoami")
    assert json.loads(ok.stdout)["certificateId"] == "line-2"
    env.platform.store.set_ca_enabled("acme", ca_id, False)
    time.sleep(0.3)  # the trust cache refreshes every 0.25 s
    _refused(env, device)
    reason = _last_reason(env, "line-2")
    assert "disabled" in reason and "CA certificate" in reason


def test_disabled_device(env: CoapsEnv) -> None:
    device = env.pki.device("stolen-1")
    ok = coap_client("coap-client-gnutls", device, env.ca_file, env.port, "whoami")
    device_id = json.loads(ok.stdout)["deviceId"]
    env.platform.store.update_device("acme", device_id, enabled=False)
    time.sleep(0.3)
    _refused(env, device, "coap-client-gnutls")
    assert "disabled" in _last_reason(env, "stolen-1")


def test_mbedtls_device_refused(env: CoapsEnv) -> None:
    from mbedtls.exceptions import TLSError

    device = env.pki.device("mcu-expired", expired=True)
    with pytest.raises(TLSError, match="fatal alert"):
        mbedtls_get(env.port, device, env.ca_file, "whoami")
    assert "expired" in _last_reason(env, "mcu-expired")
