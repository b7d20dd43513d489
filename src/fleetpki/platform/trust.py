"""Per-project trust sets and known devices, cached in memory and refreshed on store changes.

Every instance polls the store's change counters at most every ``refresh_interval`` seconds (one
primary-key read), and drops what changed; changes made through this process's own store are
seen at once. So a CA upload, disable or delete counts on the next handshake here, and within
``refresh_interval`` on every other instance sharing the database.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from cryptography import x509

from fleetpki.platform.provisioning import DeviceRecord
from fleetpki.platform.store import Store

MAX_CACHED = 200_000  # entries per cache; past that the cache starts over


@dataclass(slots=True)
class ProjectTrust:
    """One project's CA certificates and CRLs; replaced (a new object) whenever they change."""

    project_id: str
    anchors: tuple[x509.Certificate, ...]
    disabled: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]
    # {issuer (RFC 4514): why} of stored CRLs that cannot be read: their issuers' paths are
    # refused rather than checked against nothing.
    unreadable_crls: dict[str, str] = field(default_factory=dict)


class TrustCache:
    """Projects' trust sets and devices by (project, certificate ID), kept fresh."""

    def __init__(self, store: Store, refresh_interval: float = 0.25) -> None:
        self.store = store
        self.refresh_interval = refresh_interval
        self._lock = threading.Lock()
        self._projects: dict[str, ProjectTrust | None] = {}
        self._devices: dict[tuple[str, str], DeviceRecord] = {}
        self._versions: tuple[int, int] | None = None
        self._checked = 0.0
        # Bumped whenever entries are dropped: a load that began before cannot be stored after.
        self._generation = 0
        store.on_change(self.invalidate)

    def invalidate(self) -> None:
        """Forget everything (called after a change through this process's store)."""
        with self._lock:
            self._projects.clear()
            self._devices.clear()
            self._versions = None
            self._checked = 0.0
            self._generation += 1

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_interval:
            return
        versions = self.store.counters()
        with self._lock:
            self._checked = now
            if self._versions is not None and versions[0] != self._versions[0]:
                self._projects.clear()
            if self._versions is not None and versions[1] != self._versions[1]:
                self._devices.clear()
            if self._versions is None:
                self._projects.clear()
                self._devices.clear()
            if self._versions != versions:
                self._generation += 1
            self._versions = versions

    def project(self, project_id: str) -> ProjectTrust | None:
        """The project's trust set, or None if there is no such project."""
        self._refresh()
        with self._lock:
            if project_id in self._projects:
                return self._projects[project_id]
            generation = self._generation
        trust: ProjectTrust | None = None
        if self.store.project_exists(project_id):
            cas = self.store.trust_anchors(project_id)
            stored_crls = self.store.project_crls(project_id)
            trust = ProjectTrust(
                project_id,
                anchors=tuple(cert for _, cert, enabled in cas if enabled),
                disabled=tuple(cert for _, cert, enabled in cas if not enabled),
                crls=stored_crls.crls,
                unreadable_crls=stored_crls.unreadable,
            )
        with self._lock:
            if generation == self._generation:
                if len(self._projects) >= MAX_CACHED:
                    self._projects.clear()
                self._projects[project_id] = trust
        return trust

    def device(self, project_id: str, certificate_id: str) -> tuple[DeviceRecord | None, int]:
        """(a known device from the cache or None, a token for ``remember_device``)."""
        self._refresh()
        with self._lock:
            return self._devices.get((project_id, certificate_id)), self._generation

    def remember_device(self, project_id: str, record: DeviceRecord, token: int) -> None:
        """Cache ``record`` unless the cache was invalidated since ``device`` gave ``token``."""
        with self._lock:
            if token != self._generation:
                return
            if len(self._devices) >= MAX_CACHED:
                self._devices.clear()
            self._devices[(project_id, record.certificate_id)] = record
