"""DTLS 1.2 record framing (RFC 6347 4.1): what the session layer needs to see of the wire.

OpenSSL does the protocol; these helpers only recognise a ClientHello before any state exists,
cut the memory BIO's output into records, group records into datagrams, and build the one
record OpenSSL cannot be asked for: the alert that replaces a held-back final flight.
"""

from __future__ import annotations

import struct

DTLS1_2_VERSION = 0xFEFD
# Ciphertext MTU: fits an IPv6 minimum-MTU path (1280) with room for IP and UDP headers.
MTU = 1200
_RECORD_HEADER = struct.Struct("!BHH6sH")  # type, version, epoch, sequence, length
_HANDSHAKE, _ALERT = 22, 21
_ACCESS_DENIED = 49


def is_client_hello(data: bytes) -> bool:
    """True for a datagram starting with an epoch-0 handshake record carrying a ClientHello."""
    if len(data) < _RECORD_HEADER.size + 1:
        return False
    kind, _version, epoch, _seq, _length = _RECORD_HEADER.unpack_from(data)
    return kind == _HANDSHAKE and epoch == 0 and data[_RECORD_HEADER.size] == 1


def split_records(data: bytes) -> list[bytes]:
    """Cut the memory BIO's output into whole DTLS records (each write is one or more records)."""
    records = []
    offset = 0
    while offset + _RECORD_HEADER.size <= len(data):
        length = _RECORD_HEADER.unpack_from(data, offset)[4]
        end = offset + _RECORD_HEADER.size + length
        records.append(data[offset:end])
        offset = end
    return records


def pack_datagrams(records: list[bytes], mtu: int = MTU) -> list[bytes]:
    """Group records into datagrams of at most ``mtu`` bytes (RFC 6347 4.1.1 allows several)."""
    datagrams: list[bytes] = []
    current = b""
    for record in records:
        if current and len(current) + len(record) > mtu:
            datagrams.append(current)
            current = b""
        current += record
    if current:
        datagrams.append(current)
    return datagrams


def access_denied_alert(held: bytes) -> bytes:
    """A plaintext fatal access_denied alert that takes the place of the held-back last flight.

    The device has switched its write epoch but still reads epoch 0 until our ChangeCipherSpec,
    so the alert goes out at epoch 0 with the sequence number the ChangeCipherSpec would have had.
    """
    sequence = b"\x00" * 6
    for record in split_records(held):
        _kind, _version, epoch, seq, _length = _RECORD_HEADER.unpack_from(record)
        if epoch == 0:
            sequence = seq
            break
    return _RECORD_HEADER.pack(_ALERT, DTLS1_2_VERSION, 0, sequence, 2) + bytes([2, _ACCESS_DENIED])
