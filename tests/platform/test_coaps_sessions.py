"""The DTLS session layer under load and abuse: cookies before state, 1,000 sessions, expiry, caps,
retransmission, and CoAP exchange rules (duplicates, non-confirmable) through aiocoap."""

from __future__ import annotations

import json
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import aiocoap
import pytest
from coaps_fixtures import CoapsEnv, DeviceFiles, DtlsClient, coap_request, run_load
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from fleetpki.platform.transports.dtls import DtlsSettings
from fleetpki.platform.transports.dtls_records import split_records

SETTINGS = DtlsSettings(
    max_sessions=2000, idle_timeout=60.0, handshake_timeout=1.5, sweep_interval=0.1
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoapsEnv]:
    opened = CoapsEnv(tmp_path_factory.mktemp("coaps-sessions"), SETTINGS)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def device(env: CoapsEnv) -> DeviceFiles:
    return env.pki.device("fleet-member")


def _endpoint(env: CoapsEnv) -> object:
    assert env.server.server is not None
    return env.server.server.endpoint


def _stat(env: CoapsEnv, name: str) -> int:
    return int(env.server.call(lambda: _endpoint(env).stats[name]))  # type: ignore[attr-defined]


def _settings(env: CoapsEnv, **changes: float) -> None:
    def apply() -> None:
        endpoint = _endpoint(env)
        endpoint.settings = replace(endpoint.settings, **changes)  # type: ignore[attr-defined]

    env.server.call(apply)


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _client_hello(device: DeviceFiles, env: CoapsEnv) -> bytes:
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        client.conn.do_handshake()
    except SSL.WantReadError:
        pass
    hello = client.conn.bio_read(65536)
    client.close()
    return hello


def _is_hello_verify(datagram: bytes) -> bool:
    return datagram[0] == 22 and datagram[13] == 3  # handshake record, HelloVerifyRequest


def test_clienthello_flood_from_spoofed_sources_keeps_no_state(
    env: CoapsEnv, device: DeviceFiles
) -> None:
    hello = _client_hello(device, env)
    before = _stat(env, "hello_verify")
    # 40 source addresses (127.0.0.2-41: loopback answers for all of 127/8) x 25 ports each.
    # Sent in bursts of 100 so that the test measures the server, not the socket buffer.
    sockets = []
    for host in range(2, 42):
        for _ in range(25):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.0.{host}", 0))
            sock.setblocking(False)
            sock.sendto(hello, ("127.0.0.1", env.port))
            sockets.append(sock)
        if len(sockets) % 100 == 0:
            sent = len(sockets)
            assert _wait_for(lambda n=sent: _stat(env, "hello_verify") - before >= n - 5)
            assert env.server.session_count() == 0
    answered = 0
    for sock in sockets:
        try:
            answered += _is_hello_verify(sock.recv(2048))
        except BlockingIOError:
            pass
        sock.close()
    assert answered >= 990  # each spoofed source got a stateless HelloVerifyRequest
    assert env.server.session_count() == 0


def test_cookie_is_bound_to_the_peer_address(env: CoapsEnv, device: DeviceFiles) -> None:
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    thief = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    thief.bind(("127.0.0.99", 0))
    thief.settimeout(1)
    try:
        try:
            client.conn.do_handshake()
        except SSL.WantReadError:
            client._flush()
        client.conn.bio_write(client.sock.recv(65536))  # the HelloVerifyRequest
        try:
            client.conn.do_handshake()
        except SSL.WantReadError:
            pass
        hello_with_cookie = client.conn.bio_read(65536)
        thief.sendto(hello_with_cookie, ("127.0.0.1", env.port))
        assert _is_hello_verify(thief.recv(2048))  # another address: the cookie is worthless
        assert env.server.session_count() == 0
        client.sock.send(hello_with_cookie)
        assert split_records(client.sock.recv(65536))[0][13] == 2  # ServerHello: accepted
        assert env.server.session_count() == 1
        # The server retransmits its flight when the client goes quiet (timer starts at 1 s).
        flight_again = client.sock.recv(65536) if _drain_until_retransmit(client) else b""
        assert split_records(flight_again)[0][0] == 22
        # A handshake never finished is dropped after handshake_timeout.
        assert _wait_for(lambda: env.server.session_count() == 0, 3.0)
    finally:
        thief.close()
        client.close()


def _drain_until_retransmit(client: DtlsClient) -> bool:
    # Swallow the rest of the first flight, then wait for the retransmission.
    client.sock.settimeout(0.3)
    try:
        while True:
            client.sock.recv(65536)
    except TimeoutError:
        pass
    client.sock.settimeout(2.0)
    return True


def test_thousand_concurrent_sessions_then_idle_expiry(env: CoapsEnv, device: DeviceFiles) -> None:
    completed, seconds, slots = run_load(
        env.port, device.cert, device.key, 1000, 64, keep_open=True, timeout=30
    )
    try:
        assert completed == 1000
        assert all(slot.answered for slot in slots)  # each got 2.05 for GET whoami
        assert env.server.session_count() == 1000
        _settings(env, idle_timeout=0.3)
        assert _wait_for(lambda: env.server.session_count() == 0, 5.0)
        # Expiry says close_notify; the session's later records are dropped unanswered.
        slot = slots[0]
        slot.sock.settimeout(1.0)
        assert split_records(slot.sock.recv(2048))[0][0] == 21  # an alert record
        slot.conn.write(coap_request(aiocoap.GET, "whoami").encode())
        slot.flush()
        slot.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            slot.sock.recv(2048)
    finally:
        _settings(env, idle_timeout=60.0)
        for slot in slots:
            slot.sock.close()
    print(f"1000 DTLS sessions + GET whoami in {seconds:.2f} s (client and server share a CPU)")


def test_session_cap(env: CoapsEnv, device: DeviceFiles) -> None:
    assert _wait_for(lambda: env.server.session_count() == 0)
    _settings(env, max_sessions=3)
    refused_before = _stat(env, "refused_full")
    try:
        completed, _seconds, slots = run_load(
            env.port, device.cert, device.key, 5, 5, keep_open=True, timeout=1.2
        )
        assert completed == 3
        assert env.server.session_count() == 3
        assert _stat(env, "refused_full") > refused_before
        for slot in slots:
            slot.sock.close()
    finally:
        _settings(env, max_sessions=2000, idle_timeout=0.2)
        _wait_for(lambda: env.server.session_count() == 0)
        _settings(env, idle_timeout=60.0)


def test_duplicate_confirmable_request_runs_once(env: CoapsEnv, device: DeviceFiles) -> None:
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        client.handshake()
        first = client.request(coap_request(aiocoap.PUT, "state", mid=42, payload=b'{"n":1}'))
        assert first.code == aiocoap.CHANGED and first.mtype == aiocoap.ACK
        # Same message ID again (a retransmission as the server sees it): answered from the
        # duplicate cache, the handler does not run again.
        again = client.request(coap_request(aiocoap.PUT, "state", mid=42, payload=b'{"n":2}'))
        assert again.code == aiocoap.CHANGED and again.mid == 42
        state = client.request(coap_request(aiocoap.GET, "state", mid=43))
        assert json.loads(state.payload) == {"n": 1}
    finally:
        client.close()


def test_non_confirmable_request(env: CoapsEnv, device: DeviceFiles) -> None:
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        client.handshake()
        reply = client.request(coap_request(aiocoap.GET, "whoami", mid=7, confirmable=False))
        assert reply.mtype == aiocoap.NON
        assert reply.code == aiocoap.CONTENT
        assert json.loads(reply.payload)["certificateId"] == "fleet-member"
        unknown = client.request(coap_request(aiocoap.GET, "nothing", mid=8))
        assert unknown.code == aiocoap.NOT_FOUND
        wrong = client.request(coap_request(aiocoap.POST, "whoami", mid=9))
        assert wrong.code == aiocoap.METHOD_NOT_ALLOWED
    finally:
        client.close()


def test_new_handshake_from_same_address_replaces_session(
    env: CoapsEnv, device: DeviceFiles
) -> None:
    first = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        first.handshake()
        before = env.server.session_count()
        assert first.get_json("whoami")["certificateId"] == "fleet-member"
        # The device rebooted and kept its port (RFC 6347 4.2.8): a fresh handshake wins.
        second = DtlsClient(env.port, device.cert, device.key, env.ca_file, sock=first.sock)
        second.handshake()
        assert second.get_json("whoami")["certificateId"] == "fleet-member"
        assert env.server.session_count() == before
    finally:
        first.close()


def test_ecdhe_p256_when_the_device_offers_only_p256(env: CoapsEnv, device: DeviceFiles) -> None:
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file, group=ec.SECP256R1())
    try:
        client.handshake()
        assert client.conn.get_group_name() == "secp256r1"
        assert client.conn.get_protocol_version_name() == "DTLSv1.2"
        assert client.get_json("whoami")["certificateId"] == "fleet-member"
    finally:
        client.close()


def test_lost_final_flight_is_retransmitted(env: CoapsEnv, device: DeviceFiles) -> None:
    """The server's ChangeCipherSpec+Finished (sent once the pipeline accepted) gets lost: the
    device retransmits its last flight and the server answers it again."""
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    conn = client.conn
    try:
        client.sock.send(_next_flight(conn))  # ClientHello
        conn.bio_write(client.sock.recv(65536))  # HelloVerifyRequest
        client.sock.send(_next_flight(conn))  # ClientHello with the cookie
        final = b""
        while not final:  # the server's flight, in as many datagrams as it takes
            conn.bio_write(client.sock.recv(65536))
            final = _next_flight(conn)
        client.sock.send(final)  # Certificate ... Finished
        lost = client.sock.recv(65536)
        assert split_records(lost)[0][0] == 20  # ChangeCipherSpec: dropped on the floor
        time.sleep(conn.DTLSv1_get_timeout() or 1.0)
        conn.DTLSv1_handle_timeout()
        client.sock.send(conn.bio_read(65536))  # the device's last flight, again
        conn.bio_write(client.sock.recv(65536))
        conn.do_handshake()  # completes: the server resent ChangeCipherSpec+Finished
        assert client.get_json("whoami")["certificateId"] == "fleet-member"
    finally:
        client.close()


def _next_flight(conn: SSL.Connection) -> bytes:
    """Advance the client's handshake; what it wants to send (empty: waiting for the server)."""
    try:
        conn.do_handshake()
    except SSL.WantReadError:
        pass
    try:
        return bytes(conn.bio_read(65536))
    except SSL.WantReadError:
        return b""


def test_garbage_from_a_session_address_is_ignored(env: CoapsEnv, device: DeviceFiles) -> None:
    """Off-path junk spoofing a device's address (random bytes, forged record headers) neither
    ends its session nor produces answers."""
    rng = random.Random(5684)
    client = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        client.handshake()
        junk = [rng.randbytes(rng.randrange(1, 300)) for _ in range(100)]
        for kind in (20, 21, 22, 23):  # forged record headers, epochs 0 and 1
            junk += [bytes([kind, 0xFE, 0xFD, 0, epoch]) + rng.randbytes(60) for epoch in (0, 1)]
        for datagram in junk:
            client.sock.send(datagram)
        assert client.get_json("whoami")["certificateId"] == "fleet-member"
    finally:
        client.close()


def test_half_open_handshakes_are_capped(env: CoapsEnv, device: DeviceFiles) -> None:
    """A peer that answers cookies but stalls its handshakes cannot fill the session table."""
    _settings(env, max_handshakes=2)
    before = env.server.session_count()
    refused = _stat(env, "refused_full")
    clients = [DtlsClient(env.port, device.cert, device.key, env.ca_file) for _ in range(3)]
    try:
        answers = []
        for client in clients:
            client.sock.send(_next_flight(client.conn))  # ClientHello
            client.conn.bio_write(client.sock.recv(65536))  # HelloVerifyRequest
            client.sock.send(_next_flight(client.conn))  # ClientHello with the cookie, then stall
            try:
                answers.append(split_records(client.sock.recv(65536))[0][13])
            except TimeoutError:
                answers.append(None)
        assert answers == [2, 2, None]  # ServerHello, ServerHello, nothing
        assert _stat(env, "refused_full") == refused + 1
        assert env.server.session_count() == before + 2
        # The stalled ones go after handshake_timeout; then handshakes are welcome again.
        assert _wait_for(lambda: env.server.session_count() == before, 4.0)
    finally:
        _settings(env, max_handshakes=1000)
        for client in clients:
            client.close()
    fresh = DtlsClient(env.port, device.cert, device.key, env.ca_file)
    try:
        fresh.handshake()
        assert fresh.get_json("whoami")["certificateId"] == "fleet-member"
    finally:
        fresh.close()
