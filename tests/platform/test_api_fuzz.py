"""Fuzzing the management API: no input gets a 500, every error is in the JSON shape.

- schemathesis over the app's own OpenAPI document, against the app served by uvicorn on
  loopback (real HTTP): positive and negative cases of every operation, with the path naming
  real objects half of the time so the calls reach the store;
- hypothesis mutations of a valid CA certificate and CRL (bytes flipped, cut, inserted in the
  DER, and mutated bodies signed again so they pass the signature checks): never a 500, and
  whatever was accepted can be listed, shown and deleted, and devices still authenticate.

Derandomized with bounded example counts: the same cases on every run, in well under a minute.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from platform_testing import PKI, der_parts, issue, pem, resign
from schemathesis import GenerationMode

from fleetpki.der import pem_armor
from fleetpki.platform.api import create_app
from fleetpki.platform.app import Platform
from fleetpki.platform.identity import DeviceIdentity, PresentedChain

ADMIN = "admin-key-for-fuzzing-0123456789"
# Per operation variant; PostgreSQL runs fewer (the same front door, a second store).
EXAMPLES_PER_VARIANT = {"sqlite": 10, "postgresql": 5}
FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


class LoopbackApi:
    """The management app served by uvicorn on 127.0.0.1 in a thread."""

    def __init__(self, platform: Platform) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(platform, ADMIN), log_level="critical", access_log=False, lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})

    def __enter__(self) -> LoopbackApi:
        self.thread.start()
        started = threading.Event()
        while not self.server.started and self.thread.is_alive():
            started.wait(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def assert_error_shape(response: Any, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/json", what
        error = response.json()["error"]
        assert set(error) == {"code", "message"}, what
        assert isinstance(error["message"], str) and error["message"], what


@pytest.fixture
def served(platform: Platform, pki: PKI) -> Iterator[tuple[LoopbackApi, dict[str, str]]]:
    """The API on loopback, project acme with a CA and a device: ids the fuzzer can name."""
    store = platform.store
    store.create_project("acme", "Acme")
    ca = store.upload_ca("acme", pem(pki.root_a.certificate), "root")[0]
    device = store.create_device("acme", "pump-1")
    store.create_project("doomed")  # what the fuzzer's project deletion may take
    with LoopbackApi(platform) as api:
        yield api, {"projectId": "acme", "certificateId": ca["id"], "deviceId": device["id"]}


def test_schemathesis_finds_no_500(
    served: tuple[LoopbackApi, dict[str, str]], platform: Platform, db_url: str | None
) -> None:
    """Every operation, positive and negative cases, with random and with real path ids."""
    api, known = served
    schema = schemathesis.openapi.from_dict(create_app(platform, ADMIN).openapi())
    examples = EXAMPLES_PER_VARIANT["sqlite" if db_url is None else "postgresql"]
    seen: set[int] = set()
    failures: list[str] = []
    with httpx.Client(base_url=api.url, timeout=10) as client:

        def send(case: Any, as_admin: bool) -> None:
            kwargs = case.as_transport_kwargs(base_url=api.url)
            headers = dict(kwargs.get("headers") or {})
            if as_admin:
                headers["x-api-key"] = ADMIN
            what = f"{case.method} {case.formatted_path}"
            try:
                response = client.request(
                    kwargs["method"],
                    kwargs["url"],
                    params=kwargs.get("params"),
                    headers=headers,
                    content=_content(kwargs),
                )
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                return  # the client cannot even send it: nothing reached the server
            except httpx.TransportError as exc:
                raise AssertionError(f"{what}: {exc!r}") from None
            seen.add(response.status_code)
            assert_error_shape(response, what)

        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            real = {name: value for name, value in known.items() if name in names}
            if (
                operation.method.upper() == "DELETE"
                and operation.path == "/v1/projects/{projectId}"
            ):
                # Deleting acme would leave nothing for the other operations to reach.
                real = {"projectId": "doomed"}
            # Negative cases need something that can be invalid: a body or a typed query
            # parameter (any string is a valid path segment or header).
            modes = [GenerationMode.POSITIVE]
            if operation.body or operation.query:
                modes.append(GenerationMode.NEGATIVE)
            variants = [(mode, None) for mode in modes]
            variants += [(mode, real) for mode in modes if real]
            for mode, path_parameters in variants:
                strategy = operation.as_strategy(
                    generation_mode=mode, path_parameters=path_parameters
                )

                @settings(FUZZ, max_examples=examples)
                @given(case=strategy, as_admin=st.booleans())
                def run(case: Any, as_admin: bool) -> None:
                    send(case, as_admin)

                try:
                    run()
                except Unsatisfiable:
                    # Nothing in this operation can be made invalid (only free-form strings).
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except AssertionError as exc:
                    failures.append(f"{operation.label} ({mode.value}): {str(exc)[:500]}")
    assert not failures, "\n".join(failures)
    # The run reached the store, not only the front door.
    assert {200, 201, 204, 400, 401, 404, 422} <= seen, seen


def _content(kwargs: dict[str, Any]) -> bytes | None:
    import json

    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    if isinstance(data, str):
        return data.encode()
    return data  # type: ignore[no-any-return]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_framework_errors_are_json(served: tuple[LoopbackApi, dict[str, str]]) -> None:
    api, _ = served
    headers = {"x-api-key": ADMIN}
    with httpx.Client(base_url=api.url, timeout=10, headers=headers) as client:
        for method, path, content, status, code in (
            ("GET", "/no/such/path", None, 404, "not_found"),
            ("DELETE", "/v1/projects", None, 405, "method_not_allowed"),
            ("POST", "/v1/projects", b'{"id": "acme"', 400, "invalid_json"),
            ("POST", "/v1/projects", b'{"id": 5}', 422, "invalid_request"),
            ("POST", "/v1/projects", b"\xff\xfe", 400, "invalid_json"),
            ("POST", "/v1/projects", b'{"id": "x", "' + b"k" * 70_000 + b'": 1}', 413, "too_large"),
            ("GET", "/v1/projects/acme/devices?limit=-1", None, 422, "invalid_request"),
            ("GET", "/v1/projects/NOT%20A%20SLUG/certificates", None, 404, "not_found"),
            ("GET", "/v1/projects/acme%00/devices", None, 404, "not_found"),
        ):
            kwargs: dict[str, Any] = {"content": content}
            if content is not None:
                kwargs["headers"] = {"content-type": "application/json"}
            response = client.request(method, path, **kwargs)
            assert response.status_code == status, (method, path, response.text)
            assert response.json()["error"]["code"] == code, (method, path, response.text)
            assert_error_shape(response, path)

        # A body with no Content-Length (chunked) is counted as it arrives.
        def chunks() -> Iterator[bytes]:
            yield b'{"certFile": "'
            for _ in range(100):
                yield b"A" * 8192
            yield b'"}'

        response = client.post("/v1/projects/acme/certificates", content=chunks())
        assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"


# -- mutated CA certificates and CRLs ---------------------------------------------------------


def mutations(der: bytes) -> st.SearchStrategy[bytes]:
    """``der`` with a few bytes flipped, cut out or inserted, or cut short."""
    position = st.integers(0, len(der) - 1)

    # Positions are taken modulo the current length: an earlier step may have shortened it.
    def flip(data: bytes, at: int, value: int) -> bytes:
        at %= len(data)
        return data[:at] + bytes([data[at] ^ value]) + data[at + 1 :]

    def cut(data: bytes, at: int, length: int) -> bytes:
        at %= len(data)
        return data[:at] + data[at + length :]

    def insert(data: bytes, at: int, extra: bytes) -> bytes:
        at %= len(data)
        return data[:at] + extra + data[at:]

    one = st.one_of(
        st.tuples(position, st.integers(1, 255)).map(lambda a: lambda d: flip(d, *a)),
        st.tuples(position, st.integers(1, 8)).map(lambda a: lambda d: cut(d, *a)),
        st.tuples(position, st.binary(min_size=1, max_size=4)).map(
            lambda a: lambda d: insert(d, *a)
        ),
        position.map(lambda at: lambda d: d[: at % len(d)]),
    )

    def apply(steps: list[Any]) -> bytes:
        data = der
        for step in steps:
            data = step(data) if data else data
        return data

    return st.lists(one, min_size=1, max_size=3).map(apply)


def signed_mutations(der: bytes, key: Any) -> st.SearchStrategy[bytes]:
    """Mutations of the to-be-signed part, signed again: they pass the signature checks."""
    tbs, _, _ = der_parts(der)
    return mutations(tbs).map(lambda body: resign(der, body, key))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_mutated_uploads_never_500(platform: Platform, pki: PKI) -> None:
    store = platform.store
    store.create_project("acme", "Acme")
    store.upload_ca("acme", pem(pki.inter_a.certificate), "intermediate")
    device = issue(pki.inter_a, "acme", "fuzz-device")
    root_der = pki.root_a.certificate.public_bytes(Encoding.DER)
    key = pki.root_a.signer.builder_key()
    crl_der = pki.root_a.sign_crl(
        [(device.cert.serial_number + 1, dt.datetime.now(dt.UTC), "keyCompromise")],
        crl_number=1,
    ).public_bytes(Encoding.DER)
    outcomes: dict[str, set[int]] = {"ca": set(), "crl": set()}

    with TestClient(create_app(platform, ADMIN), headers={"x-api-key": ADMIN}) as client:

        def check_listing_and_devices() -> None:
            listed = client.get("/v1/projects/acme/certificates")
            assert listed.status_code == 200, listed.text
            result = platform.authenticator.authenticate(
                PresentedChain(device.cert), transport="https", peer="fuzz"
            )
            assert isinstance(result, DeviceIdentity), result

        @settings(FUZZ, max_examples=150)
        @given(
            data=st.one_of(mutations(root_der), signed_mutations(root_der, key)),
            armour=st.booleans(),
        )
        def upload_ca(data: bytes, armour: bool) -> None:
            body = pem_armor("CERTIFICATE", data) if armour else data
            response = client.post(
                "/v1/projects/acme/certificates",
                json={"certFile": base64.b64encode(body).decode()},
            )
            outcomes["ca"].add(response.status_code)
            assert_error_shape(response, "CA upload")
            if response.status_code == 201:
                for item in response.json().get("list") or [response.json()["data"]]:
                    path = f"/v1/projects/acme/certificates/{item['id']}"
                    assert client.get(path).status_code == 200
                    check_listing_and_devices()
                    assert client.delete(path).status_code == 204
            check_listing_and_devices()

        @settings(FUZZ, max_examples=150)
        @given(data=st.one_of(mutations(crl_der), signed_mutations(crl_der, key)))
        def upload_crl(data: bytes) -> None:
            response = client.post(
                "/v1/projects/acme/crls", json={"crlFile": base64.b64encode(data).decode()}
            )
            outcomes["crl"].add(response.status_code)
            assert_error_shape(response, "CRL upload")
            check_listing_and_devices()

        upload_ca()
        # The CRLs are the root's: with the root uploaded they can be accepted.
        assert client.post(
            "/v1/projects/acme/certificates",
            json={"certFile": base64.b64encode(root_der).decode(), "certType": "root"},
        ).is_success
        upload_crl()
    # Both refusals and acceptances were reached (a fuzzer that only ever hits 400 proves little).
    assert {201, 400} <= outcomes["ca"], outcomes
    assert {201, 400} <= outcomes["crl"], outcomes
