"""DTLS record framing helpers of the session layer, and the CoAP status mapping."""

from __future__ import annotations

import struct

import aiocoap

from fleetpki.platform.transports.coaps import coap_code
from fleetpki.platform.transports.dtls_records import (
    DTLS1_2_VERSION,
    access_denied_alert,
    pack_datagrams,
    split_records,
)


def _record(kind: int, epoch: int, seq: int, body: bytes) -> bytes:
    return (
        struct.pack("!BHH", kind, DTLS1_2_VERSION, epoch)
        + seq.to_bytes(6, "big")
        + (struct.pack("!H", len(body)) + body)
    )


def test_split_and_pack_records() -> None:
    records = [_record(22, 0, i, bytes([i]) * 500) for i in range(5)]
    assert split_records(b"".join(records)) == records
    datagrams = pack_datagrams(records, mtu=1200)
    # 513-byte records: two per 1,200-byte datagram, never split across datagrams.
    assert [len(d) for d in datagrams] == [1026, 1026, 513]
    assert b"".join(datagrams) == b"".join(records)
    # A record larger than the MTU still goes out whole, alone.
    big = _record(23, 1, 9, b"x" * 1300)
    assert pack_datagrams([records[0], big, records[1]]) == [records[0], big, records[1]]


def test_access_denied_alert_takes_the_change_cipher_spec_sequence() -> None:
    held = _record(20, 0, 7, b"\x01") + _record(22, 1, 0, b"f" * 40)  # CCS, then Finished
    alert = access_denied_alert(held)
    kind, version, epoch = struct.unpack_from("!BHH", alert)
    assert (kind, version, epoch) == (21, DTLS1_2_VERSION, 0)
    assert int.from_bytes(alert[5:11], "big") == 7
    assert alert[-2:] == bytes([2, 49])  # fatal, access_denied


def test_status_mapping() -> None:
    expected = {
        200: aiocoap.CONTENT,
        204: aiocoap.CHANGED,
        400: aiocoap.BAD_REQUEST,
        403: aiocoap.FORBIDDEN,
        404: aiocoap.NOT_FOUND,
        405: aiocoap.METHOD_NOT_ALLOWED,
        413: aiocoap.REQUEST_ENTITY_TOO_LARGE,
        500: aiocoap.INTERNAL_SERVER_ERROR,
    }
    for status, code in expected.items():
        assert coap_code(status) == code
    assert coap_code(418) == aiocoap.BAD_REQUEST
    assert coap_code(503) == aiocoap.INTERNAL_SERVER_ERROR
