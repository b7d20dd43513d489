"""The few DER and PEM primitives fleetpki writes and walks by hand (everything else is
cryptography's): TLV encoding, element bounds, PEM armour and the PEM block scanner.

Hand-made DER serves three places that cryptography cannot: the PBES2 key encryption
(``keys``), the bulk certificate template (``fastsign``) and reading the usual device subject
without building ``x509.Name`` objects (``naming``, ``csr``).
"""

from __future__ import annotations

import base64
import bisect
import re

# SubjectPublicKeyInfo of a P-256 key up to and including the uncompressed-point marker 04:
# SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (no unused bits) 04 ...}.
# 91 bytes in all with X and Y; the encoding cryptography writes.
P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004")
P256_SPKI_LENGTH = 91
# Encoded OIDs of the two attributes of a device subject, and the string type they use.
OID_ORGANIZATION = bytes.fromhex("060355040a")  # 2.5.4.10
OID_COMMON_NAME = bytes.fromhex("0603550403")  # 2.5.4.3
UTF8_STRING = 0x0C


def der_length(n: int) -> bytes:
    """The DER length octets of ``n``."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, body: bytes) -> bytes:
    """One DER element: ``tag``, the length of ``body``, ``body``."""
    return bytes((tag,)) + der_length(len(body)) + body


def der_bounds(data: bytes, pos: int, limit: int) -> tuple[int, int]:
    """(content start, element end) of the DER element at ``pos``, which must end by ``limit``.

    Raises ValueError (truncated, an indefinite or oversized length, an overrun) or
    IndexError.
    """
    if pos + 2 > limit:
        raise ValueError("truncated")
    first = data[pos + 1]
    if first < 0x80:
        start, end = pos + 2, pos + 2 + first
    else:
        count = first & 0x7F
        if count == 0 or count > 4:
            raise ValueError("bad DER length")
        start = pos + 2 + count
        end = start + int.from_bytes(data[pos + 2 : start], "big")
    if end > limit:
        raise ValueError("element overruns its parent")
    return start, end


def pem_armor(label: str, der: bytes) -> bytes:
    """Wrap DER in a PEM block with 64-character lines."""
    body = base64.b64encode(der)
    lines = b"".join(body[i : i + 64] + b"\n" for i in range(0, len(body), 64))
    return f"-----BEGIN {label}-----\n".encode() + lines + f"-----END {label}-----\n".encode()


_PEM_BEGIN = b"-----BEGIN "
_PEM_END = b"-----END "
_DASHES = b"-----"
# One character class, matched at a fixed position: linear, nothing to backtrack over.
_PEM_LABEL_RUN = re.compile(rb"[A-Z0-9 ]*")


def _pem_label(data: bytes, start: int) -> tuple[bytes, int] | None:
    """(label, end of the closing dashes) of a marker whose label starts at ``start``."""
    end = _PEM_LABEL_RUN.match(data, start).end()  # type: ignore[union-attr]
    if end == start or data[end : end + 5] != _DASHES:
        return None
    return data[start:end], end + 5


def pem_spans(data: bytes) -> list[tuple[bytes, bytes]]:
    """Every ``-----BEGIN L-----`` newline ... ``-----END L-----`` block: (label, body).

    What the regex ``-----BEGIN ([A-Z0-9 ]+)-----\\r?\\n(.*?)-----END \\1-----`` (DOTALL) finds
    with ``finditer``, in O(n log n) time: that regex takes quadratic time on many BEGIN lines
    without an END (a 700 KiB upload held the process for two minutes). The END markers are
    indexed in one pass; each BEGIN then looks up the first END of its label after it.
    """
    ends: dict[bytes, list[int]] = {}
    pos = data.find(_PEM_END)
    while pos >= 0:
        found = _pem_label(data, pos + len(_PEM_END))
        if found is not None:
            ends.setdefault(found[0], []).append(pos)
        pos = data.find(_PEM_END, pos + len(_PEM_END))
    spans = []
    pos = data.find(_PEM_BEGIN)
    while pos >= 0:
        found = _pem_label(data, pos + len(_PEM_BEGIN))
        if found is not None:
            label, after = found
            if data[after : after + 1] == b"\r":
                after += 1
            if data[after : after + 1] == b"\n":
                body_start = after + 1
                positions = ends.get(label, [])
                index = bisect.bisect_left(positions, body_start)
                if index < len(positions):
                    end = positions[index]
                    spans.append((label, data[body_start:end]))
                    pos = data.find(_PEM_BEGIN, end + len(_PEM_END) + len(label) + 5)
                    continue
        pos = data.find(_PEM_BEGIN, pos + 1)
    return spans
