"""The libcrypto proof-of-possession path (``fleetpki.pop``) answers exactly as cryptography does.

Each CSR below is checked twice by ``check_csr``: through ``pop`` (OpenSSL 3's ECDSA_verify,
via the system's libcrypto) and with that path turned off (cryptography). Both must give the
expected outcome, so neither a laxer nor a stricter fast path goes unnoticed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from fleetpki import pop
from fleetpki.csr import check_csr
from fleetpki.errors import PolicyError
from fleetpki.fastsign import _ECDSA_SHA256, _tlv, device_csr_der

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_PRIME = 2**256 - 2**224 + 2**192 + 2**96 - 1


def _parts(der: bytes) -> tuple[bytes, bytes]:
    """(CertificationRequestInfo DER, signature DER) of a CSR made by ``device_csr_der``."""
    csr = x509.load_der_x509_csr(der)
    return csr.tbs_certrequest_bytes, csr.signature


def _assemble(info: bytes, signature: bytes) -> bytes:
    return _tlv(0x30, info + _ECDSA_SHA256 + _tlv(0x03, b"\x00" + signature))


def _integer(value: int, pad: bytes = b"") -> bytes:
    body = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return _tlv(0x02, pad + body)


def _valid() -> bytes:
    return device_csr_der(ec.generate_private_key(ec.SECP256R1()), "acme", "dev-1")


def _altered_info() -> bytes:
    info, signature = _parts(_valid())
    return _assemble(info.replace(b"dev-1", b"dev-2"), signature)


def _altered_signature() -> bytes:
    info, signature = _parts(_valid())
    r, s = decode_dss_signature(signature)
    return _assemble(info, encode_dss_signature(r, s ^ 1))


def _other_key() -> bytes:
    info, _ = _parts(_valid())
    other = ec.generate_private_key(ec.SECP256R1())
    return _assemble(info, other.sign(info, ec.ECDSA(hashes.SHA256())))


def _high_s() -> bytes:
    info, signature = _parts(_valid())
    r, s = decode_dss_signature(signature)
    return _assemble(info, encode_dss_signature(r, P256_ORDER - s))  # also a valid signature


def _non_minimal_der() -> bytes:
    info, signature = _parts(_valid())
    r, s = decode_dss_signature(signature)
    return _assemble(info, _tlv(0x30, _integer(r, pad=b"\x00") + _integer(s)))


def _trailing_bytes() -> bytes:
    info, signature = _parts(_valid())
    return _assemble(info, signature + b"\x00")


def _point_off_curve() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    info, _ = _parts(device_csr_der(key, "acme", "dev-1"))
    bent = info[:-3] + bytes([info[-3] ^ 1]) + info[-2:]  # last byte of Y (before "a0 00")
    return _assemble(bent, key.sign(bent, ec.ECDSA(hashes.SHA256())))


def _coordinate_too_large() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    info, _ = _parts(device_csr_der(key, "acme", "dev-1"))
    start = len(info) - 66  # X of the point (04 || X || Y), before the empty attributes
    bent = info[:start] + (P256_PRIME + 3).to_bytes(32, "big") + info[start + 32 :]
    return _assemble(bent, key.sign(bent, ec.ECDSA(hashes.SHA256())))


CASES: dict[str, tuple[Callable[[], bytes], bool]] = {
    "valid": (_valid, True),
    "high S (valid: ECDSA has no low-S rule)": (_high_s, True),
    "altered request info": (_altered_info, False),
    "altered signature": (_altered_signature, False),
    "signed by another key": (_other_key, False),
    "signature not minimal DER": (_non_minimal_der, False),
    "signature with trailing bytes": (_trailing_bytes, False),
    "public key not on the curve": (_point_off_curve, False),
    "public key coordinate not below the prime": (_coordinate_too_large, False),
}


def _outcome(der: bytes) -> str:
    try:
        request = check_csr(x509.load_der_x509_csr(der), "acme")
    except PolicyError as exc:
        return f"refused: {exc}"
    return f"accepted: {request.certificate_id}"


def test_libcrypto_path_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup.sh installs openssl, hence OpenSSL 3's libcrypto: check_csr must take the path."""
    assert pop.available()
    answers: list[bool | None] = []
    real = pop.verify_p256_sha256

    def spy(point: bytes, signature: bytes, message: bytes) -> bool | None:
        answers.append(real(point, signature, message))
        return answers[-1]

    monkeypatch.setattr(pop, "verify_p256_sha256", spy)
    assert _outcome(_valid()) == "accepted: dev-1"
    assert _outcome(_altered_info()).startswith("refused")
    assert answers == [True, False]


@pytest.mark.parametrize("case", list(CASES))
def test_same_answer_as_cryptography(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, accepted = CASES[case]
    der = make()
    fast = _outcome(der)
    monkeypatch.setattr(pop, "_lib", lambda: None)
    slow = _outcome(der)
    assert fast == slow
    assert fast.startswith("accepted" if accepted else "refused: CSR signature does not verify")


def test_only_the_exact_case_is_answered() -> None:
    info, signature = _parts(_valid())
    point = info[-67:-2]
    assert pop.verify_p256_sha256(b"\x02" + point[1:33], signature, info) is None  # compressed
    assert pop.verify_p256_sha256(point[:-1], signature, info) is None


def test_turned_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPKI_LIBCRYPTO", "0")
    pop._lib.cache_clear()
    try:
        assert not pop.available()
        assert _outcome(_valid()).startswith("accepted")
    finally:
        monkeypatch.delenv("FLEETPKI_LIBCRYPTO")
        pop._lib.cache_clear()
    assert pop.available()
