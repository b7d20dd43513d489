"""The PKI home: CA certificates and keys on disk, the inventory, and the stateful operations.

Layout::

    HOME/config.json
    HOME/inventory.sqlite3
    HOME/cas/<name>/ca.crt.pem      the CA certificate
    HOME/cas/<name>/ca.key.pem      its key: PKCS#8, encrypted (PBES2, 600k PBKDF2), 0600
    HOME/cas/<name>/ca.json         kind, parent, whether encrypted, CRL number
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fleetpki.ca import CertificateAuthority
from fleetpki.csr import check_csr
from fleetpki.errors import ConflictError, FleetPKIError, InputError, NotFoundError
from fleetpki.files import write_file
from fleetpki.formats import load_certificate
from fleetpki.keys import (
    KeyFileSigner,
    KeyType,
    PrivateKey,
    is_encrypted_key,
    load_private_key,
    serialize_private_key,
)

if TYPE_CHECKING:  # SQLAlchemy is imported when the inventory is first opened, not before
    from fleetpki.inventory import Inventory

CA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_HOME = "FLEETPKI_HOME"


def validate_ca_name(name: str) -> str:
    if not CA_NAME.fullmatch(name or ""):
        raise InputError(
            f"invalid CA name {name!r}: 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--home, else $FLEETPKI_HOME, else ~/.fleetpki."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(ENV_HOME):
        return Path(os.environ[ENV_HOME]).expanduser()
    return Path.home() / ".fleetpki"


@dataclass(frozen=True, slots=True)
class CAInfo:
    name: str
    kind: str  # root | intermediate
    parent: str | None
    encrypted: bool
    certificate: x509.Certificate
    imported: bool

    def summary(self) -> dict[str, Any]:
        cert = self.certificate
        return {
            "name": self.name,
            "kind": self.kind,
            "parent": self.parent,
            "subject": cert.subject.rfc4514_string(),
            "serialNumber": f"{cert.serial_number:x}",
            "notAfter": f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            "keyEncrypted": self.encrypted,
            "imported": self.imported,
        }


class Home:
    """One PKI home folder. Operations that issue record to the inventory before returning."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- layout ------------------------------------------------------------------------------

    @property
    def cas_dir(self) -> Path:
        return self.path / "cas"

    def ca_dir(self, name: str) -> Path:
        return self.cas_dir / validate_ca_name(name)

    def ensure(self) -> None:
        """Create the home (0700) if missing."""
        try:
            self.cas_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path, 0o700)
        except OSError as exc:
            raise FleetPKIError(f"cannot create PKI home {self.path}: {exc.strerror}") from None
        config = self.path / "config.json"
        if not config.exists():
            write_file(
                config, json.dumps({"version": 1}).encode() + b"\n", private=True, force=True
            )

    @cached_property
    def inventory(self) -> Inventory:
        from fleetpki.inventory import Inventory

        self.ensure()
        path = self.path / "inventory.sqlite3"
        if not path.exists():
            # SQLite creates its -wal/-shm files with the database's mode: private from the start.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        return Inventory.at(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock on the home, for changes to CA folders and CRL numbers."""
        self.ensure()
        fd = os.open(self.path / ".lock", os.O_CREAT | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- CAs ---------------------------------------------------------------------------------

    def ca_names(self) -> list[str]:
        if not self.cas_dir.is_dir():
            return []
        return sorted(p.name for p in self.cas_dir.iterdir() if (p / "ca.json").is_file())

    def ca_info(self, name: str) -> CAInfo:
        folder = self.ca_dir(name)
        try:
            meta = json.loads((folder / "ca.json").read_text())
            cert = load_certificate((folder / "ca.crt.pem").read_bytes())
        except FileNotFoundError:
            known = ", ".join(self.ca_names()) or "none yet; run 'fleetpki ca init'"
            raise NotFoundError(f"unknown CA {name!r} (known: {known})") from None
        return CAInfo(
            name,
            meta["kind"],
            meta.get("parent"),
            bool(meta["encrypted"]),
            cert,
            bool(meta.get("imported")),
        )

    def ca_key_encrypted(self, name: str) -> bool:
        return self.ca_info(name).encrypted

    def ca_chain(self, name: str) -> list[x509.Certificate]:
        """The CA's certificate followed by its issuers up to the root."""
        chain = []
        seen = set()
        current: str | None = name
        while current is not None and current not in seen:
            seen.add(current)
            info = self.ca_info(current)
            chain.append(info.certificate)
            current = info.parent
        return chain

    def load_ca(self, name: str, passphrase: bytes | None) -> CertificateAuthority:
        """The CA with its key loaded; raises NotFoundError, PassphraseError."""
        info = self.ca_info(name)
        key_bytes = (self.ca_dir(name) / "ca.key.pem").read_bytes()
        key = load_private_key(key_bytes, passphrase if info.encrypted else None)
        chain = tuple(self.ca_chain(name)[1:])
        return CertificateAuthority(name, info.certificate, KeyFileSigner(key), chain)

    @contextlib.contextmanager
    def _new_ca(self, name: str) -> Iterator[None]:
        """Hold the home's lock while a CA named ``name`` (free and valid) is made."""
        validate_ca_name(name)
        with self.lock():
            if self.ca_dir(name).exists():
                raise ConflictError(f"a CA named {name!r} already exists in {self.path}")
            yield

    def _save_ca(
        self,
        ca: CertificateAuthority,
        key: PrivateKey,
        *,
        kind: str,
        parent: str | None,
        passphrase: bytes | None,
        imported: bool = False,
    ) -> None:
        # Everything goes into a temporary folder that is renamed into place: a CA exists whole
        # or not at all.
        folder = self.ca_dir(ca.name)
        if folder.exists():
            raise ConflictError(f"a CA named {ca.name!r} already exists in {self.path}")
        tmp = Path(tempfile.mkdtemp(dir=self.cas_dir, prefix=f".{ca.name}."))
        try:
            write_file(tmp / "ca.key.pem", serialize_private_key(key, passphrase), private=True)
            write_file(tmp / "ca.crt.pem", ca.certificate.public_bytes(serialization.Encoding.PEM))
            meta = {
                "name": ca.name,
                "kind": kind,
                "parent": parent,
                "encrypted": passphrase is not None,
                "imported": imported,
                "crl_number": 0,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
            write_file(tmp / "ca.json", json.dumps(meta, indent=2).encode() + b"\n")
            from fleetpki.inventory import IssuedRecord

            self.inventory.record(
                [
                    IssuedRecord.from_certificate(
                        ca.certificate, kind=kind, issuer_ca=parent or ca.name
                    )
                ],
                action="import-ca" if imported else "create-ca",
            )
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def init_root(
        self,
        name: str,
        *,
        common_name: str | None = None,
        key_type: KeyType | str = KeyType.P256,
        days: int | None = None,
        passphrase: bytes | None,
    ) -> CertificateAuthority:
        """Create a root CA in this home; ``passphrase=None`` stores the key unencrypted."""
        with self._new_ca(name):
            ca, key = CertificateAuthority.create_root(
                name, common_name=common_name, key_type=key_type, days=days
            )
            self._save_ca(ca, key, kind="root", parent=None, passphrase=passphrase)
        return ca

    def create_intermediate(
        self,
        name: str,
        *,
        parent: str,
        parent_passphrase: bytes | None,
        common_name: str | None = None,
        key_type: KeyType | str | None = None,
        days: int | None = None,
        passphrase: bytes | None,
    ) -> CertificateAuthority:
        """Create an intermediate under ``parent``; raises NotFoundError, PolicyError."""
        with self._new_ca(name):
            parent_ca = self.load_ca(parent, parent_passphrase)
            ca, key = parent_ca.create_intermediate(
                name, common_name=common_name, key_type=key_type, days=days
            )
            self._save_ca(ca, key, kind="intermediate", parent=parent, passphrase=passphrase)
        return ca

    def import_ca(
        self,
        name: str,
        *,
        cert_data: bytes,
        key_data: bytes,
        key_passphrase: bytes | None,
        passphrase: bytes | None,
        parent: str | None = None,
    ) -> CertificateAuthority:
        """Adopt a CA made elsewhere (e.g. the seed's openssl root); stores its key re-encrypted."""
        validate_ca_name(name)
        cert = load_certificate(cert_data)
        key = load_private_key(key_data, key_passphrase if is_encrypted_key(key_data) else None)
        self_signed = cert.subject == cert.issuer
        if not self_signed and parent is None:
            parent = self._find_issuer(cert)
        chain = tuple(self.ca_chain(parent)) if parent else ()
        ca = CertificateAuthority.adopt(name, cert, KeyFileSigner(key), chain)
        with self.lock():
            self._save_ca(
                ca,
                key,
                kind="root" if self_signed else "intermediate",
                parent=parent,
                passphrase=passphrase,
                imported=True,
            )
        return ca

    def _find_issuer(self, cert: x509.Certificate) -> str | None:
        for other in self.ca_names():
            candidate = self.ca_info(other).certificate
            if candidate.subject == cert.issuer:
                with contextlib.suppress(Exception):
                    cert.verify_directly_issued_by(candidate)
                    return other
        return None

    # -- issuance ----------------------------------------------------------------------------

    def sign(
        self,
        ca: CertificateAuthority,
        csr: x509.CertificateSigningRequest,
        *,
        project_slug: str,
        certificate_id: str | None = None,
        days: int | None = None,
        renew: bool = False,
    ) -> x509.Certificate:
        """Check and sign ``csr``, then commit its inventory row; returns the certificate.

        Nothing is recorded when the policy refuses; the caller writes files only after this
        returns, so no certificate exists without its row.
        """
        request = check_csr(csr, project_slug, certificate_id)
        if not renew:
            active = self.inventory.find(
                project=project_slug, certificate_id=request.certificate_id, status="active"
            )
            if active:
                raise ConflictError(
                    f"certificate ID {request.certificate_id!r} in project {project_slug!r} "
                    f"already has an active certificate (serial {active[0]['serial']}); "
                    "use --renew to replace it"
                )
        cert = ca.issue(request, days=days)
        from fleetpki.inventory import IssuedRecord

        self.inventory.record(
            [IssuedRecord.from_certificate(cert, kind="device", issuer_ca=ca.name)], renew=renew
        )
        return cert

    def next_crl_number(self, name: str) -> int:
        with self.lock():
            path = self.ca_dir(name) / "ca.json"
            meta = json.loads(path.read_text())
            meta["crl_number"] = int(meta.get("crl_number", 0)) + 1
            write_file(path, json.dumps(meta, indent=2).encode() + b"\n", force=True)
            return int(meta["crl_number"])

    def crl(
        self, ca: CertificateAuthority, next_update_days: int = 30
    ) -> x509.CertificateRevocationList:
        """A fresh CRL listing every certificate this CA issued that is revoked."""
        crl = ca.sign_crl(
            self.inventory.revoked_by(ca.name),
            crl_number=self.next_crl_number(ca.name),
            next_update_days=next_update_days,
        )
        self.inventory.audit("crl", {"ca": ca.name, "entries": len(crl)})
        return crl
