"""The management API, shaped like the seed platform's: ``x-api-key``, ``{"data"}``/``{"list"}``.

Keys: one admin key (given at start, compared by hash) for everything, and per-project keys
(stored as SHA-256 hashes) for their own project only; another project looks like no project.
"""

import base64
import binascii
import hashlib
import hmac
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field

from fleetpki import __version__
from fleetpki.platform.api.errors import ApiError, BodyLimit, install_error_handlers
from fleetpki.platform.app import Platform
from fleetpki.platform.store.cas import MAX_CRL_BYTES, MAX_UPLOAD_BYTES

# Request bodies are bounded before they are read: an upload's base64 (4/3 of its size, plus
# line breaks) for CA certificates and CRLs, 64 KiB for every other JSON body.
CA_BODY_LIMIT = 512 * 1024
CRL_BODY_LIMIT = 2 * 1024 * 1024
JSON_BODY_LIMIT = 64 * 1024
MAX_OFFSET = 2**31 - 1  # databases take 32/64-bit offsets; larger is refused, not a crash


CONSOLE_BODY_LIMIT = 4 * 1024 * 1024  # a backstop: the console refuses > ~320 KiB with a page


def body_limit(method: str, path: str) -> int:
    """The most bytes a request body may have on ``method path``."""
    if path.startswith("/console/"):
        return CONSOLE_BODY_LIMIT
    if method == "POST" and path.endswith("/certificates"):
        return CA_BODY_LIMIT
    if method == "POST" and path.endswith("/crls"):
        return CRL_BODY_LIMIT
    return JSON_BODY_LIMIT


class Caller:
    """Who is calling: the admin, or the holder of one project's key."""

    def __init__(self, admin: bool, project_id: str | None) -> None:
        self.admin, self.project_id = admin, project_id

    def require_admin(self) -> None:
        if not self.admin:
            raise ApiError(403, "forbidden", "this call needs the admin key")

    def require_project(self, project_id: str) -> None:
        if not self.admin and self.project_id != project_id:
            # Same answer as for a project that does not exist: keys cannot probe other projects.
            raise ApiError(404, "not_found", f"no project {project_id[:63]!r}")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProjectIn(Model):
    id: str = Field(max_length=63, description="project slug")
    name: str | None = Field(default=None, max_length=200)


class CertificateIn(Model):
    certFile: str = Field(max_length=CA_BODY_LIMIT, description="base64 of PEM or DER")
    certType: Literal["root", "intermediate"] | None = None


class CertificatePatch(Model):
    enabled: bool


class CrlIn(Model):
    crlFile: str = Field(max_length=CRL_BODY_LIMIT, description="base64 of PEM or DER")


class DeviceIn(Model):
    name: str = Field(max_length=100)


class DevicePatch(Model):
    name: str | None = Field(default=None, max_length=100)
    enabled: bool | None = None


def _b64(value: str, field: str, limit: int) -> bytes:
    try:
        data = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_request", f"{field} is not valid base64") from None
    if len(data) > limit:
        raise ApiError(413, "too_large", f"{field} too large ({len(data)} bytes, at most {limit})")
    return data


def create_app(platform: Platform, admin_key: str | None) -> FastAPI:
    """The FastAPI app over ``platform``; ``admin_key=None`` disables admin calls."""
    store = platform.store
    admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
    # Swagger UI (/docs) and ReDoc from files in the fastapi-offline package, not a CDN.
    app: FastAPI = FastAPIOffline(
        title="fleetpki platform management API",
        version=__version__,
        description="Projects, CA certificates, devices and auth events. "
        "Authenticate with the x-api-key header.",
    )

    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit_for=body_limit)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"
        return response

    def caller(x_api_key: Annotated[str | None, Header()] = None) -> Caller:
        if not x_api_key:
            raise ApiError(401, "unauthorized", "missing x-api-key header")
        if admin_digest is not None and hmac.compare_digest(
            hashlib.sha256(x_api_key.encode()).digest(), admin_digest
        ):
            return Caller(True, None)
        project_id = store.project_for_api_key(x_api_key)
        if project_id is None:
            raise ApiError(401, "unauthorized", "invalid API key")
        return Caller(False, project_id)

    Auth = Annotated[Caller, Depends(caller)]

    def project(project_id: str, who: Caller) -> str:
        who.require_project(project_id)
        store.get_project(project_id)
        return project_id

    # -- projects ---------------------------------------------------------------------------

    @app.post("/v1/projects", status_code=201, tags=["projects"])
    def create_project(body: ProjectIn, who: Auth) -> dict[str, Any]:
        who.require_admin()
        return {"data": store.create_project(body.id, body.name)}

    @app.get("/v1/projects", tags=["projects"])
    def list_projects(who: Auth) -> dict[str, Any]:
        items = store.list_projects()
        if not who.admin:
            items = [p for p in items if p["id"] == who.project_id]
        return {"list": items, "total": len(items)}

    @app.get("/v1/projects/{projectId}", tags=["projects"])
    def get_project(projectId: str, who: Auth) -> dict[str, Any]:
        who.require_project(projectId)
        return {"data": store.get_project(projectId)}

    @app.delete("/v1/projects/{projectId}", status_code=204, tags=["projects"])
    def delete_project(projectId: str, who: Auth) -> Response:
        """Delete a project and everything in it (admin only); its devices are refused at once."""
        who.require_admin()
        store.delete_project(projectId)
        return Response(status_code=204)

    @app.post("/v1/projects/{projectId}/apikeys", status_code=201, tags=["projects"])
    def create_api_key(projectId: str, who: Auth) -> dict[str, Any]:
        who.require_admin()
        return {"data": store.create_api_key(projectId)}

    @app.get("/v1/projects/{projectId}/apikeys", tags=["projects"])
    def list_api_keys(projectId: str, who: Auth) -> dict[str, Any]:
        """The project's API keys: id and creation time (the keys themselves are not kept)."""
        items = store.list_api_keys(project(projectId, who))
        return {"list": items, "total": len(items)}

    @app.delete("/v1/projects/{projectId}/apikeys/{keyId}", status_code=204, tags=["projects"])
    def revoke_api_key(projectId: str, keyId: str, who: Auth) -> Response:
        """Revoke an API key (admin only): it stops working, and its console sessions end."""
        who.require_admin()
        store.revoke_api_key(project(projectId, who), keyId)
        return Response(status_code=204)

    # -- CA certificates and CRLs ------------------------------------------------------------

    @app.get("/v1/projects/{projectId}/certificates", tags=["certificates"])
    def list_certificates(projectId: str, who: Auth) -> dict[str, Any]:
        items = store.list_cas(project(projectId, who))
        return {"list": items, "total": len(items)}

    @app.post("/v1/projects/{projectId}/certificates", status_code=201, tags=["certificates"])
    def upload_certificate(projectId: str, body: CertificateIn, who: Auth) -> dict[str, Any]:
        data = _b64(body.certFile, "certFile", MAX_UPLOAD_BYTES)
        items = store.upload_ca(project(projectId, who), data, body.certType)
        if len(items) == 1:
            return {"data": items[0]}
        return {"list": items, "total": len(items)}

    @app.get("/v1/projects/{projectId}/certificates/{certificateId}", tags=["certificates"])
    def get_certificate(projectId: str, certificateId: str, who: Auth) -> dict[str, Any]:
        return {"data": store.get_ca(project(projectId, who), certificateId)}

    @app.patch("/v1/projects/{projectId}/certificates/{certificateId}", tags=["certificates"])
    def patch_certificate(
        projectId: str, certificateId: str, body: CertificatePatch, who: Auth
    ) -> dict[str, Any]:
        return {"data": store.set_ca_enabled(project(projectId, who), certificateId, body.enabled)}

    @app.delete(
        "/v1/projects/{projectId}/certificates/{certificateId}",
        status_code=204,
        tags=["certificates"],
    )
    def delete_certificate(projectId: str, certificateId: str, who: Auth) -> Response:
        store.delete_ca(project(projectId, who), certificateId)
        return Response(status_code=204)

    @app.post("/v1/projects/{projectId}/crls", status_code=201, tags=["certificates"])
    def upload_crl(projectId: str, body: CrlIn, who: Auth) -> dict[str, Any]:
        data = _b64(body.crlFile, "crlFile", MAX_CRL_BYTES)
        return {"data": store.upload_crl(project(projectId, who), data)}

    @app.get("/v1/projects/{projectId}/crls", tags=["certificates"])
    def list_crls(projectId: str, who: Auth) -> dict[str, Any]:
        items = store.list_crls(project(projectId, who))
        return {"list": items, "total": len(items)}

    # -- devices ----------------------------------------------------------------------------

    @app.get("/v1/projects/{projectId}/devices", tags=["devices"])
    def list_devices(
        projectId: str,
        who: Auth,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> dict[str, Any]:
        items, total = store.list_devices(project(projectId, who), limit=limit, offset=offset)
        return {"list": items, "total": total}

    @app.post("/v1/projects/{projectId}/devices", status_code=201, tags=["devices"])
    def create_device(projectId: str, body: DeviceIn, who: Auth) -> dict[str, Any]:
        return {"data": store.create_device(project(projectId, who), body.name)}

    @app.get("/v1/projects/{projectId}/devices/{deviceId}", tags=["devices"])
    def get_device(projectId: str, deviceId: str, who: Auth) -> dict[str, Any]:
        return {"data": store.get_device(project(projectId, who), deviceId)}

    @app.patch("/v1/projects/{projectId}/devices/{deviceId}", tags=["devices"])
    def patch_device(projectId: str, deviceId: str, body: DevicePatch, who: Auth) -> dict[str, Any]:
        updated = store.update_device(
            project(projectId, who), deviceId, name=body.name, enabled=body.enabled
        )
        return {"data": updated}

    @app.delete("/v1/projects/{projectId}/devices/{deviceId}", status_code=204, tags=["devices"])
    def delete_device(projectId: str, deviceId: str, who: Auth) -> Response:
        store.delete_device(project(projectId, who), deviceId)
        return Response(status_code=204)

    # -- auth events ------------------------------------------------------------------------

    @app.get("/v1/projects/{projectId}/auth-events", tags=["events"])
    def auth_events(
        projectId: str,
        who: Auth,
        outcome: Literal["accepted", "refused"] | None = None,
        certificateId: str | None = None,
        deviceId: str | None = None,
        transport: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before: Annotated[int | None, Query(ge=1, description="older than this event id")] = None,
    ) -> dict[str, Any]:
        items = store.list_auth_events(
            project(projectId, who),
            outcome=outcome,
            certificate_id=certificateId,
            device_id=deviceId,
            transport=transport,
            limit=limit,
            before=before,
        )
        return {"list": items, "total": len(items)}

    @app.get("/v1/auth-events", tags=["events"])
    def all_auth_events(
        who: Auth,
        projectId: str | None = None,
        noProject: bool = False,
        outcome: Literal["accepted", "refused"] | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        """Every attempt, whatever project it named (admin only): also unknown projects
        (``projectId=<what the certificate said>``) and none at all (``noProject=true``)."""
        who.require_admin()
        items = store.list_auth_events(
            None if noProject else projectId,
            outcome=outcome,
            limit=limit,
            all_projects=not noProject and projectId is None,
        )
        return {"list": items, "total": len(items)}

    @app.get("/healthz", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    from fleetpki.platform.console import create_console

    @app.get("/", include_in_schema=False)
    @app.get("/console", include_in_schema=False)
    def to_console(request: Request) -> Response:
        return RedirectResponse(request.url_for("console", path="/").path, status_code=307)

    app.mount("/console", create_console(platform, admin_key), name="console")  # MOUNT_NAME

    return app
