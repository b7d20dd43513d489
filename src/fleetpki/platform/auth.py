"""The one authentication pipeline: presented chain → DeviceIdentity or Refusal (any transport).

1. the transport's handshake proved possession of the leaf's key;
2. the leaf's O names the project (unknown → refused);
3. a path to an enabled CA certificate of that project only (fleetpki.verify.build_path):
   signatures, validity, CA flags, path lengths; device-leaf policy;
4. revocation by the project's CRLs; disabled devices refused;
5. the certificate-ID rules (provisioning.py);
6. every attempt is recorded as an auth event with its reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from cryptography import x509

from fleetpki.errors import FleetPKIError, VerificationError
from fleetpki.naming import parse_device_subject, validate_certificate_id
from fleetpki.platform.events import EventRecorder
from fleetpki.platform.identity import DeviceIdentity, PresentedChain, Refusal
from fleetpki.platform.provisioning import DeviceRecord, find_device, resolve_device
from fleetpki.platform.store import Store
from fleetpki.platform.trust import MAX_CACHED, ProjectTrust, TrustCache
from fleetpki.verify import VerifiedPath, build_path, check_device_leaf, check_revocation, describe

log = logging.getLogger("fleetpki.platform")
MAX_PRESENTED = 8  # certificates a device may send; more is refused before any work


class _Refused(Exception):
    def __init__(self, reason: str, device_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.device_id = device_id


@dataclass(frozen=True, slots=True)
class _Verified:
    """A chain that passed steps 2-4, and what it was checked against."""

    trust: ProjectTrust  # identity matters: a changed project has a new trust set
    project_id: str
    certificate_id: str
    not_before: dt.datetime  # the path is valid from the latest notBefore ...
    not_after: dt.datetime  # ... to the earliest notAfter
    leaf_issuer: str  # for the auth event, without formatting the name again on the hot path


class PlatformAuthenticator:
    """The Authenticator of fleetpki.platform.identity, over a Store."""

    def __init__(self, store: Store, trust: TrustCache, recorder: EventRecorder) -> None:
        self.store = store
        self.trust = trust
        self.recorder = recorder
        # Chains already verified, keyed by the certificates themselves (hashed over their DER):
        # a device reconnecting costs a dict lookup, not a subject parse and a signature check.
        self._verified: dict[tuple[x509.Certificate, ...], _Verified] = {}

    def authenticate(
        self, presented: PresentedChain | None, *, transport: str, peer: str
    ) -> DeviceIdentity | Refusal:
        """Run the pipeline and record the attempt; never raises for a bad chain."""
        now = dt.datetime.now(dt.UTC)
        project_id = certificate_id = serial = issuer = None
        device_id = not_after = None
        try:
            if presented is None:
                raise _Refused("no client certificate")
            serial = f"{presented.leaf.serial_number:x}"
            not_after = presented.leaf.not_valid_after_utc
            key = (presented.leaf, *presented.intermediates)
            hit = self._verified.get(key)
            issuer = hit.leaf_issuer if hit is not None else presented.leaf.issuer.rfc4514_string()
            identity = self._known(hit, now)
            if identity is None:
                try:
                    name = parse_device_subject(presented.leaf.subject)
                except (FleetPKIError, ValueError) as exc:
                    raise _Refused(f"unreadable subject: {exc}") from None
                project_id, certificate_id = name.project_slug, name.certificate_id
                identity = self._decide(key, presented, project_id, certificate_id, now)
            project_id, certificate_id = identity.project_id, identity.certificate_id
            device_id = identity.device_id
            result: DeviceIdentity | Refusal = identity
            reason = "accepted"
        except _Refused as refused:
            reason, device_id = refused.reason, refused.device_id
            result = Refusal(reason)
        except Exception as exc:  # a database outage must refuse, not crash the transport
            log.exception("authentication failed unexpectedly")
            reason = f"internal error ({type(exc).__name__})"
            result = Refusal(reason)
        self.recorder.record(
            {
                "time": now,
                "project_id": (project_id or None) and project_id[:63],
                "outcome": "accepted" if isinstance(result, DeviceIdentity) else "refused",
                "reason": reason[:1000],
                "certificate_id": certificate_id[:200] if certificate_id else None,
                "serial": serial,
                "transport": transport[:16],
                "peer": peer[:100],
                "device_id": device_id,
                "issuer": issuer[:1000] if issuer is not None else None,
                "not_after": not_after,
            },
            seen_device=device_id if isinstance(result, DeviceIdentity) else None,
        )
        return result

    def _known(self, hit: _Verified | None, now: dt.datetime) -> DeviceIdentity | None:
        """The hot path: a chain verified before against the project's current trust set, of an
        enabled device in the cache; None sends the attempt down the whole pipeline."""
        if hit is None or not hit.not_before <= now <= hit.not_after:
            return None
        if self.trust.project(hit.project_id) is not hit.trust:
            return None
        device, _ = self.trust.device(hit.project_id, hit.certificate_id)
        if device is None or not device.enabled:
            return None
        return DeviceIdentity(hit.project_id, device.id, device.name, hit.certificate_id)

    def _decide(
        self,
        key: tuple[x509.Certificate, ...],
        presented: PresentedChain,
        project_id: str | None,
        certificate_id: str | None,
        now: dt.datetime,
    ) -> DeviceIdentity:
        if not project_id:
            raise _Refused("certificate subject has no O (project)")
        trust = self.trust.project(project_id)
        if trust is None:
            raise _Refused(f"unknown project {project_id[:63]!r}")
        if len(presented.intermediates) >= MAX_PRESENTED:
            raise _Refused(f"too many certificates presented ({len(presented.intermediates) + 1})")
        path = self._verify(presented, trust, now)
        if not certificate_id:
            raise _Refused("certificate subject has no CN (certificate ID)")
        try:
            validate_certificate_id(certificate_id)
        except FleetPKIError as exc:
            raise _Refused(str(exc)) from None
        if len(self._verified) >= MAX_CACHED:
            self._verified.clear()
        self._verified[key] = _Verified(
            trust,
            project_id,
            certificate_id,
            max(c.not_valid_before_utc for c in path.certificates),
            min(c.not_valid_after_utc for c in path.certificates),
            presented.leaf.issuer.rfc4514_string(),
        )
        device = self._device(project_id, certificate_id)
        if not device.enabled:
            raise _Refused(f"device {device.name!r} is disabled", device.id)
        return DeviceIdentity(project_id, device.id, device.name, certificate_id)

    def _verify(
        self, presented: PresentedChain, trust: ProjectTrust, now: dt.datetime
    ) -> VerifiedPath:
        if not trust.anchors and not trust.disabled:
            raise _Refused(f"project {trust.project_id!r} has no CA certificate")
        try:
            path = build_path(presented.leaf, presented.intermediates, trust.anchors, at=now)
            check_device_leaf(presented.leaf, trust.project_id)
            check_revocation(path, trust.crls, at=now)
            for issuer in path.certificates[1:]:
                problem = trust.unreadable_crls.get(issuer.subject.rfc4514_string())
                if problem is not None:
                    raise VerificationError(f"revocation cannot be checked: {problem}")
        except VerificationError as exc:
            raise _Refused(self._explain(presented, trust, now, str(exc))) from None
        return path

    @staticmethod
    def _explain(
        presented: PresentedChain, trust: ProjectTrust, now: dt.datetime, reason: str
    ) -> str:
        # Say "disabled" when the chain would verify against a disabled CA of the project.
        if trust.disabled and "not found" in reason:
            try:
                path: VerifiedPath = build_path(
                    presented.leaf, presented.intermediates, trust.disabled, at=now
                )
            except VerificationError:
                return reason
            anchor = describe(path.anchor)
            return f"CA certificate {anchor} is disabled in project {trust.project_id!r}"
        return reason

    def _device(self, project_id: str, certificate_id: str) -> DeviceRecord:
        cached, token = self.trust.device(project_id, certificate_id)
        if cached is not None:
            return cached
        with self.store.reader.connect() as conn:
            record = find_device(conn, project_id, certificate_id)
        if record is None:
            resolution = resolve_device(self.store.engine, project_id, certificate_id)
            record = resolution.device
            if resolution.rule != "a":
                log.info("device %s: certificate ID rule %s", record.id, resolution.rule)
        if record.enabled:
            self.trust.remember_device(project_id, record, token)
        return record
