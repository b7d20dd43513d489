"""The platform's own TLS credentials: a server CA made on first start (or supplied) and a
server certificate whose subjectAltName carries the names devices dial."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetpki import profiles
from fleetpki.ca import CertificateAuthority
from fleetpki.files import read_file, write_file
from fleetpki.formats import certificate_bytes, load_certificate
from fleetpki.keys import (
    KeyFileSigner,
    generate_private_key,
    load_private_key,
    serialize_private_key,
)
from fleetpki.profiles import utcnow

SERVER_CA_CERT = "server-ca.crt.pem"
SERVER_CA_KEY = "server-ca.key.pem"
SERVER_CERT = "server.crt.pem"
SERVER_KEY = "server.key.pem"
RENEW_BEFORE_DAYS = 30


def default_server_names() -> list[str]:
    """localhost, 127.0.0.1, ::1 and this machine's hostname."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = socket.gethostname()
    if host and host not in names:
        names.append(host)
    return names


@dataclass(frozen=True, slots=True)
class ServerFiles:
    cert_file: Path
    key_file: Path
    ca_file: Path


def _load_ca(cert_path: Path, key_path: Path) -> CertificateAuthority:
    passphrase = os.environ.get("FLEETPKI_PASSPHRASE")
    key = load_private_key(read_file(key_path), passphrase.encode() if passphrase else None)
    return CertificateAuthority.adopt(
        "server-ca", load_certificate(read_file(cert_path)), KeyFileSigner(key)
    )


def _alt_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in san]


def _current(cert_path: Path, ca: CertificateAuthority, names: list[str]) -> bool:
    if not cert_path.exists():
        return False
    cert = load_certificate(cert_path.read_bytes())
    remaining = cert.not_valid_after_utc - utcnow()
    wanted = [str(n.value) for n in profiles.server_alt_names(names)]
    return (
        cert.issuer == ca.certificate.subject
        and remaining.days > RENEW_BEFORE_DAYS
        and sorted(_alt_names(cert)) == sorted(wanted)
        and cert.public_key() != ca.certificate.public_key()
    )


def ensure_server_credentials(
    data_dir: Path,
    server_names: list[str] | None = None,
    server_ca: tuple[Path, Path] | None = None,
) -> ServerFiles:
    """Create (first start) or reuse the server CA and a current server certificate.

    ``server_ca`` = (certificate file, key file) of an operator's CA to use instead; its
    certificate is copied to ``<data>/server-ca.crt.pem``, what devices trust. Keys written here
    are unencrypted, 0600, inside the data folder: the server needs them at every start.
    """
    names = server_names or default_server_names()
    ca_cert = data_dir / SERVER_CA_CERT
    if server_ca is not None:
        ca = _load_ca(*server_ca)
        write_file(ca_cert, certificate_bytes(ca.certificate), force=True)
    elif (data_dir / SERVER_CA_KEY).exists():
        ca = _load_ca(ca_cert, data_dir / SERVER_CA_KEY)
    else:
        ca, key = CertificateAuthority.create_root("server-ca", common_name="fleetpki server CA")
        write_file(
            data_dir / SERVER_CA_KEY, serialize_private_key(key, None), private=True, force=True
        )
        write_file(ca_cert, certificate_bytes(ca.certificate), force=True)
    cert_path, key_path = data_dir / SERVER_CERT, data_dir / SERVER_KEY
    if not (_current(cert_path, ca, names) and key_path.exists()):
        server_key = generate_private_key("p256")
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
        cert = (
            profiles.SERVER.builder(
                subject=subject, public_key=server_key.public_key(), issuer=ca.certificate
            )
            .add_extension(profiles.server_alt_names(names), critical=False)
            .sign(ca.signer.builder_key(), ca.signer.hash_algorithm())
        )
        write_file(key_path, serialize_private_key(server_key, None), private=True, force=True)
        write_file(cert_path, certificate_bytes(cert), force=True)
    return ServerFiles(cert_path, key_path, ca_cert)
