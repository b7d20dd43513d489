"""Device resources (whoami, state), transport-agnostic: a device reaches only its own records."""

from __future__ import annotations

import json
import logging

import sqlalchemy as sa

from fleetpki.errors import InputError, NotFoundError
from fleetpki.platform.identity import DeviceIdentity, DeviceResponse
from fleetpki.platform.store import MAX_STATE_BYTES, Store

PREFIX = "v1/device/"
log = logging.getLogger("fleetpki.platform")


def _json(status: int, value: object) -> DeviceResponse:
    return DeviceResponse(status, json.dumps(value, separators=(",", ":")).encode())


def _error(status: int, code: str, message: str) -> DeviceResponse:
    return _json(status, {"error": {"code": code, "message": message}})


class PlatformResources:
    """The DeviceResources of fleetpki.platform.identity, over a Store.

    Paths: ``whoami`` (GET) and ``state`` (GET, PUT); a leading ``/`` and ``v1/device/`` are
    accepted so HTTPS paths can be passed as they come. The device is always the authenticated
    one: no path or body can name another.
    """

    max_state_bytes = MAX_STATE_BYTES

    def __init__(self, store: Store) -> None:
        self.store = store

    def handle(self, device: DeviceIdentity, method: str, path: str, body: bytes) -> DeviceResponse:
        """Serve one request; errors come back as JSON responses, never exceptions."""
        name = path.split("?", 1)[0].strip("/").removeprefix(PREFIX)
        method = method.upper()
        if name == "whoami":
            if method != "GET":
                return _error(405, "method_not_allowed", "whoami allows GET")
            return _json(
                200,
                {
                    "projectId": device.project_id,
                    "deviceId": device.device_id,
                    "name": device.name,
                    "certificateId": device.certificate_id,
                },
            )
        if name == "state":
            try:
                if method == "GET":
                    state = self.store.device_state(device.device_id)
                    return DeviceResponse(200, state if state is not None else b"{}")
                if method == "PUT":
                    if len(body) > MAX_STATE_BYTES:
                        return _error(413, "too_large", f"state is at most {MAX_STATE_BYTES} bytes")
                    self.store.set_device_state(device.device_id, body)
                    return DeviceResponse(204)
            except InputError as exc:
                return _error(400, "bad_request", str(exc))
            except NotFoundError as exc:
                return _error(404, "not_found", str(exc))
            except sa.exc.SQLAlchemyError as exc:  # locked, full or unreachable: say so, in JSON
                log.warning("device state: database unavailable: %s", type(exc).__name__)
                return _error(503, "store_unavailable", "the platform's store is unavailable")
            return _error(405, "method_not_allowed", "state allows GET and PUT")
        return _error(404, "not_found", "no such resource (try whoami or state)")
