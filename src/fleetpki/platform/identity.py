"""The contract between transports, the auth pipeline and the device resources.

A transport's only job: prove the peer holds the key of the leaf it presented (the TLS/DTLS
handshake), build a PresentedChain, ask the Authenticator, then carry requests for the
DeviceIdentity it got to DeviceResources. Nothing here knows TCP from UDP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cryptography import x509


@dataclass(frozen=True, slots=True)
class PresentedChain:
    """What a device showed in its handshake: the leaf, then any certificates it sent with it."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """An authenticated device."""

    project_id: str
    device_id: str
    name: str
    certificate_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """An authentication refused, with the reason recorded in the auth events."""

    reason: str


class Authenticator(Protocol):
    def authenticate(
        self, presented: PresentedChain | None, *, transport: str, peer: str
    ) -> DeviceIdentity | Refusal:
        """Run the one pipeline; ``presented=None`` means no client certificate was sent.

        Records an auth event for every call, accepted or not. Thread-safe; may block briefly
        on the database.
        """
        ...


@dataclass(frozen=True, slots=True)
class DeviceResponse:
    """A transport-neutral response: HTTP-style status; CoAP maps it (200→2.05, 204→2.04...)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"


class DeviceResources(Protocol):
    def handle(self, device: DeviceIdentity, method: str, path: str, body: bytes) -> DeviceResponse:
        """Serve ``method`` on ``path`` ("whoami", "state") for ``device`` only."""
        ...
