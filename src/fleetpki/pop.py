"""Proof of possession at signature speed: P-256 CSR signatures checked in libcrypto directly.

Checking a CSR's signature through cryptography costs about 120 µs here, of which only ~85 µs
is the ECDSA verification: loading the key costs ~13 µs, and the first operation on every new
key exports it to an OpenSSL 3 provider (~20 µs). A bulk run checks one new key per
certificate, so that overhead is a sixth of its whole budget. OpenSSL's own EC_KEY-level
``ECDSA_verify`` — the function OpenSSL's provider calls in the end — does the same check on a
key object reused for every CSR: about 84 µs, all included.

Only one exact case takes this path: ecdsa-with-SHA256 over a P-256 key given as the
uncompressed point of the canonical SubjectPublicKeyInfo. Anything else, or no usable
libcrypto (OpenSSL 3, loaded by its soname), answers None and the caller uses cryptography;
``FLEETPKI_LIBCRYPTO=0`` turns the path off. tests/test_pop.py checks that both paths agree on
valid, altered, non-DER, high-S and off-curve inputs.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
from typing import Any

_NID_P256 = 415  # NID_X9_62_prime256v1


class _LibCrypto:
    """The few libcrypto calls used, and one EC_KEY on P-256 per process (workers fork)."""

    def __init__(self, lib: Any) -> None:
        self.new_key = lib.EC_KEY_new_by_curve_name
        self.new_key.restype = ctypes.c_void_p
        self.new_key.argtypes = [ctypes.c_int]
        self.set_point = lib.o2i_ECPublicKey
        self.set_point.restype = ctypes.c_void_p
        self.set_point.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_char_p),
            ctypes.c_long,
        ]
        self.verify = lib.ECDSA_verify
        self.verify.restype = ctypes.c_int
        self.verify.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self.clear_errors = lib.ERR_clear_error
        self.clear_errors.restype = None
        self.clear_errors.argtypes = []
        self._key: ctypes.c_void_p | None = None
        self._pid = -1

    def key(self) -> ctypes.c_void_p | None:
        if self._pid != os.getpid():  # a forked child makes its own
            made = self.new_key(_NID_P256)
            self._key = ctypes.c_void_p(made) if made else None
            self._pid = os.getpid()
        return self._key


@functools.cache
def _lib() -> _LibCrypto | None:
    if os.environ.get("FLEETPKI_LIBCRYPTO", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL("libcrypto.so.3")
        version = lib.OpenSSL_version_num
        version.restype = ctypes.c_ulong
        version.argtypes = []
        if version() < 0x30000000:
            return None
        return _LibCrypto(lib)
    except (OSError, AttributeError):  # no OpenSSL 3, or one built without these calls
        return None


def available() -> bool:
    return _lib() is not None


def verify_p256_sha256(point: bytes, signature: bytes, message: bytes) -> bool | None:
    """Whether ``signature`` (DER ECDSA) over ``message`` verifies with P-256 key ``point``.

    ``point`` is the 65-byte uncompressed encoding (04 || X || Y); a point that is not on the
    curve makes the answer False. None means "cannot tell here": use cryptography.
    """
    lib = _lib()
    if lib is None or len(point) != 65 or point[0] != 4:
        return None
    key = lib.key()
    if key is None:
        return None
    cursor = ctypes.c_char_p(point)
    if not lib.set_point(ctypes.byref(key), ctypes.byref(cursor), 65):
        lib.clear_errors()  # not on the curve, or a coordinate out of range
        return False
    digest = hashlib.sha256(message).digest()
    # 1: valid; 0: invalid; -1: malformed (OpenSSL also refuses a signature that is not
    # strict DER or has trailing bytes).
    result: int = lib.verify(0, digest, 32, signature, len(signature), key)
    if result != 1:
        lib.clear_errors()
    return result == 1
