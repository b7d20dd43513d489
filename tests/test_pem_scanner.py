"""The linear-time PEM block scanner (der.pem_spans), fuzzed against references.

- cryptography's ``load_pem_x509_certificates`` and the stdlib's ``ssl.PEM_cert_to_DER_cert``
  on valid bundles with noise around the blocks: the same certificates, in order;
- the regex it replaces (quadratic, but exact) on arbitrary text made of PEM-like pieces: the
  same (label, body) spans;
- and it stays linear on the inputs that made the regex quadratic.
"""

from __future__ import annotations

import re
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpki import formats
from fleetpki.ca import CertificateAuthority
from fleetpki.der import pem_armor, pem_spans
from fleetpki.errors import InputError

CPU_BOUND_S = 10.0
REFERENCE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)
FUZZ = settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def reference_spans(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(m.group(1), m.group(2)) for m in REFERENCE.finditer(data)]


@pytest.fixture(scope="module")
def certificates() -> list[x509.Certificate]:
    root, _ = CertificateAuthority.create_root("r1", common_name="Scanner Root")
    inter, _ = root.create_intermediate("i1", common_name="Scanner Intermediate")
    other, _ = CertificateAuthority.create_root("r2", common_name="Other", key_type="rsa2048")
    return [root.certificate, inter.certificate, other.certificate]


# Text between blocks: what openssl and people put there (never a BEGIN line of its own).
NOISE = st.sampled_from(
    [b"", b"\n", b"\r\n", b"subject=CN = x\n", b"issuer=CN = y\r\n", b"# comment -----\n"]
)


@FUZZ
@given(data=st.data())
def test_valid_bundles_agree_with_cryptography_and_ssl(
    certificates: list[x509.Certificate], data: st.DataObject
) -> None:
    chosen = data.draw(st.lists(st.sampled_from(certificates), min_size=1, max_size=5))
    crlf = data.draw(st.booleans())
    parts = []
    for cert in chosen:
        block = pem_armor("CERTIFICATE", cert.public_bytes(Encoding.DER))
        if crlf:
            block = block.replace(b"\n", b"\r\n")
        parts.append(data.draw(NOISE) + block)
    bundle = b"".join(parts) + data.draw(NOISE)
    ours = [x509.load_der_x509_certificate(b.der) for b in formats.pem_blocks(bundle)]
    assert ours == x509.load_pem_x509_certificates(bundle) == chosen
    if not crlf:  # the stdlib reads one LF-armoured certificate
        single = pem_armor("CERTIFICATE", chosen[0].public_bytes(Encoding.DER)).decode()
        assert formats.pem_blocks(single.encode())[0].der == ssl.PEM_cert_to_DER_cert(single)


# Pieces that make the regex's corner cases: labels that match or not, missing newlines,
# nested and unterminated blocks, CR before LF, dashes that almost form a marker.
PIECES = st.sampled_from(
    [
        b"-----BEGIN CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\r\n",
        b"-----BEGIN CERTIFICATE-----",
        b"-----END CERTIFICATE-----",
        b"-----END CERTIFICATE-----\n",
        b"-----BEGIN X509 CRL-----\n",
        b"-----END X509 CRL-----",
        b"-----BEGIN A-----\n",
        b"-----END A-----",
        b"-----END A -----",
        b"-----BEGIN -----\n",
        b"-----END -----",
        b"-----BEGIN a-----\n",
        b"-----BEGIN ",
        b"-----END ",
        b"-----",
        b"----",
        b"-",
        b"MIIB",
        b"QUJD\n",
        b"\n",
        b"\r",
        b" ",
        b"A",
        b"\x00\xff",
    ]
)


@FUZZ
@given(pieces=st.lists(PIECES | st.binary(max_size=6), max_size=40))
def test_agrees_with_the_regex_it_replaces(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert pem_spans(data) == reference_spans(data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_agrees_with_the_regex_on_arbitrary_bytes(data: bytes) -> None:
    assert pem_spans(data) == reference_spans(data)


@pytest.mark.parametrize(
    "line",
    [
        b"-----BEGIN X509 CRL-----\n",  # the upload that held the process for two minutes
        b"-----BEGIN CERTIFICATE-----\n-----END X509 CRL-----\n",  # ENDs of another label
        b"-----BEGIN A",  # labels that never close
    ],
)
def test_one_mebibyte_of_unterminated_blocks_is_linear(line: bytes) -> None:
    data = line * ((1 << 20) // len(line))
    started = time.process_time()
    with pytest.raises(InputError, match=r"no complete BEGIN/END block|not a certificate"):
        formats.read_blocks(data)
    # The regex took minutes on 700 KiB; linear work on 1 MiB takes ~0.2 s of CPU. The bound
    # is CPU time, and loose, so other load on the machine cannot make it flaky.
    assert time.process_time() - started < CPU_BOUND_S


def test_many_distinct_labels_stay_linear() -> None:
    data = b"".join(b"-----BEGIN L%d-----\n-----END M%d-----\n" % (i, i) for i in range(30_000))
    started = time.process_time()
    assert pem_spans(data) == []
    assert time.process_time() - started < CPU_BOUND_S
