"""Project settings: the slug devices carry in O=, the server CA file, API keys, deletion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleetpki.platform.console.web import Confirmation, Console, PageError, Visitor, text_field

SECTION = "settings"


def router(console: Console) -> APIRouter:
    routes = APIRouter()
    store = console.store

    def settings_page(
        request: Request,
        visitor: Visitor,
        project_id: str,
        *,
        new_key: dict[str, Any] | None = None,
    ) -> Response:
        project = console.project(visitor, project_id)
        return console.render(
            request, "settings.html", visitor=visitor, project=project, section=SECTION,
            keys=store.list_api_keys(project_id), new_key=new_key,
            status=201 if new_key else 200,
        )  # fmt: skip

    @routes.get("/p/{project}/settings", name="settings")
    def settings(request: Request, project: str) -> Response:
        return settings_page(request, console.require_visitor(request), project)

    @routes.get("/p/{project}/server-ca.crt.pem", name="server_ca")
    def server_ca(request: Request, project: str) -> Response:
        visitor = console.require_visitor(request)
        console.project(visitor, project)
        path = getattr(console.platform, "server_ca_file", None)
        if path is None or not path.exists():
            raise PageError(404, "this instance has no server CA file")
        return Response(
            path.read_bytes(),
            media_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="server-ca.crt.pem"'},
        )

    @routes.post("/p/{project}/apikeys", name="apikey_create")
    async def apikey_create(request: Request, project: str) -> Response:
        visitor, _ = await console.changed_form(request)
        visitor.caller.require_admin()
        await run_in_threadpool(console.project, visitor, project)
        made = await run_in_threadpool(store.create_api_key, project)
        # Shown in this answer only (not stored, not in a URL); the page is never cached.
        return await run_in_threadpool(
            lambda: settings_page(request, visitor, project, new_key=made)
        )

    @routes.get("/p/{project}/apikeys/{key_id}/revoke", name="apikey_revoke")
    def apikey_revoke(request: Request, project: str, key_id: str) -> Response:
        visitor = console.require_visitor(request)
        visitor.caller.require_admin()
        found = console.project(visitor, project)
        if not any(k["id"] == key_id for k in store.list_api_keys(project)):
            raise PageError(404, f"no API key {key_id[:40]!r} in project {project!r}")
        asked = Confirmation(
            "Revoke API key",
            f"Revoke the API key {key_id}? Scripts using it get 401 from now on, and everyone "
            "signed in to the console with it is signed out.",
            "Revoke API key",
            "apikey_revoke_post",
            "settings",
            {"project": project, "key_id": key_id},
            cancel_params={"project": project},
        )
        return console.confirm(request, visitor, found, SECTION, asked)

    @routes.post("/p/{project}/apikeys/{key_id}/revoke", name="apikey_revoke_post")
    async def apikey_revoke_post(request: Request, project: str, key_id: str) -> Response:
        visitor, _ = await console.changed_form(request)
        visitor.caller.require_admin()
        await run_in_threadpool(console.project, visitor, project)
        await run_in_threadpool(store.revoke_api_key, project, key_id)
        return console.redirect(request, "settings", done="key-revoked", project=project)

    def delete_page(
        request: Request, visitor: Visitor, project_id: str, error: str | None = None
    ) -> Response:
        visitor.caller.require_admin()
        found = console.project(visitor, project_id)
        asked = Confirmation(
            "Delete project",
            f"Delete the project {found['name']} ({project_id}) with all its CA certificates, "
            "CRLs, devices, API keys and auth events? Its devices are refused from their next "
            "connection. This cannot be undone.",
            "Delete project",
            "project_delete_post",
            "settings",
            {"project": project_id},
            confirm_text=project_id,
            error=error,
        )
        return console.confirm(request, visitor, found, SECTION, asked)

    @routes.get("/p/{project}/delete", name="project_delete")
    def project_delete(request: Request, project: str) -> Response:
        return delete_page(request, console.require_visitor(request), project)

    @routes.post("/p/{project}/delete", name="project_delete_post")
    async def project_delete_post(request: Request, project: str) -> Response:
        visitor, form = await console.changed_form(request)
        visitor.caller.require_admin()
        if text_field(form, "confirm", 100).strip() != project:
            return await run_in_threadpool(
                delete_page, request, visitor, project, "Type the project slug to confirm."
            )
        await run_in_threadpool(store.delete_project, project)
        return console.redirect(request, "projects", done="project-deleted")

    return routes
