"""Devices (search, keyset pages, a device's page and its actions) and Auth events."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fleetpki.errors import ConflictError, InputError
from fleetpki.platform.console.web import Confirmation, Console, Visitor, text_field

PAGE_SIZE = 50
RECENT_EVENTS = 10
SEARCH_BY = {"name": "Name", "certificateId": "Certificate ID"}
OUTCOMES = ("accepted", "refused")


def _query(**params: str | int | None) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(kept) if kept else ""


def router(console: Console) -> APIRouter:
    routes = APIRouter()
    store = console.store

    def devices_page(
        request: Request,
        visitor: Visitor,
        project_id: str,
        *,
        errors: dict[str, str] | None = None,
        new_name: str = "",
        status: int = 200,
    ) -> Response:
        project = console.project(visitor, project_id)
        params = request.query_params
        by = params.get("by", "name")
        by = by if by in SEARCH_BY else "name"
        prefix = params.get("q", "")[:100]
        after, before = params.get("after"), params.get("before")
        page = store.search_devices(
            project_id, by=by, prefix=prefix, after=after, before=before, limit=PAGE_SIZE
        )
        here = console.path(request, "devices", project=project_id)
        return console.render(
            request, "devices.html", visitor=visitor, status=status, project=project,
            section="devices", page=page, by=by, q=prefix, search_by=SEARCH_BY,
            next_url=page.after and here + _query(q=prefix, by=by, after=page.after),
            prev_url=page.before and here + _query(q=prefix, by=by, before=page.before),
            first_url=(after or before) and here + _query(q=prefix, by=by),
            errors=errors or {}, new_name=new_name,
        )  # fmt: skip

    @routes.get("/p/{project}/devices", name="devices")
    def devices(request: Request, project: str) -> Response:
        return devices_page(request, console.require_visitor(request), project)

    @routes.post("/p/{project}/devices", name="device_create")
    async def device_create(request: Request, project: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        name = text_field(form, "name", 100)
        try:
            made = await run_in_threadpool(store.create_device, project, name)
        except (InputError, ConflictError) as exc:
            errors = {"name": str(exc)}
            return await run_in_threadpool(
                lambda: devices_page(
                    request, visitor, project, errors=errors, new_name=name, status=400
                )
            )
        return console.redirect(
            request, "device", done="device-created", project=project, device_id=made["id"]
        )

    def device_page(
        request: Request,
        visitor: Visitor,
        project_id: str,
        device_id: str,
        *,
        errors: dict[str, str] | None = None,
        new_name: str | None = None,
        status: int = 200,
    ) -> Response:
        project = console.project(visitor, project_id)
        device = store.get_device(project_id, device_id)
        events = store.list_auth_events(project_id, device_id=device_id, limit=RECENT_EVENTS)
        presented = next((e for e in events if e["serial"]), None)
        return console.render(
            request, "device.html", visitor=visitor, status=status, project=project,
            section="devices", device=device, events=events, presented=presented,
            errors=errors or {}, new_name=device["name"] if new_name is None else new_name,
        )  # fmt: skip

    @routes.get("/p/{project}/devices/{device_id}", name="device")
    def device(request: Request, project: str, device_id: str) -> Response:
        return device_page(request, console.require_visitor(request), project, device_id)

    @routes.post("/p/{project}/devices/{device_id}/rename", name="device_rename")
    async def device_rename(request: Request, project: str, device_id: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        name = text_field(form, "name", 100)
        try:
            await run_in_threadpool(lambda: store.update_device(project, device_id, name=name))
        except (InputError, ConflictError) as exc:
            errors = {"name": str(exc)}
            return await run_in_threadpool(
                lambda: device_page(
                    request, visitor, project, device_id, errors=errors, new_name=name, status=400
                )
            )
        return console.redirect(
            request, "device", done="device-renamed", project=project, device_id=device_id
        )

    @routes.post("/p/{project}/devices/{device_id}/enabled", name="device_enabled")
    async def device_enabled(request: Request, project: str, device_id: str) -> Response:
        visitor, form = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        enabled = text_field(form, "enabled", 5) == "true"
        await run_in_threadpool(lambda: store.update_device(project, device_id, enabled=enabled))
        done = "device-enabled" if enabled else "device-disabled"
        return console.redirect(request, "device", done=done, project=project, device_id=device_id)

    @routes.get("/p/{project}/devices/{device_id}/delete", name="device_delete")
    def device_delete(request: Request, project: str, device_id: str) -> Response:
        visitor = console.require_visitor(request)
        found = console.project(visitor, project)
        device = store.get_device(project, device_id)
        asked = Confirmation(
            "Delete device",
            f"Delete the device {device['name']}? Its state is lost, and its certificate ID "
            "becomes free: the next connection with a valid certificate for it creates a new "
            "device.",
            "Delete device",
            "device_delete_post",
            "device",
            {"project": project, "device_id": device_id},
        )
        return console.confirm(request, visitor, found, "devices", asked)

    @routes.post("/p/{project}/devices/{device_id}/delete", name="device_delete_post")
    async def device_delete_post(request: Request, project: str, device_id: str) -> Response:
        visitor, _ = await console.changed_form(request)
        await run_in_threadpool(console.project, visitor, project)
        await run_in_threadpool(store.delete_device, project, device_id)
        return console.redirect(request, "devices", done="device-deleted", project=project)

    @routes.get("/p/{project}/events", name="events")
    def events(request: Request, project: str) -> Response:
        visitor = console.require_visitor(request)
        found = console.project(visitor, project)
        params = request.query_params
        outcome = params.get("outcome", "")
        outcome = outcome if outcome in OUTCOMES else ""
        certificate_id = params.get("certificateId", "").strip()[:200]
        before_text = params.get("before", "")
        before = int(before_text) if before_text.isdigit() and len(before_text) < 19 else None
        items = store.list_auth_events(
            project,
            outcome=outcome or None,
            certificate_id=certificate_id or None,
            before=before,
            limit=PAGE_SIZE,
        )
        here = console.path(request, "events", project=project)
        older = (
            here + _query(outcome=outcome, certificateId=certificate_id, before=items[-1]["id"])
            if len(items) == PAGE_SIZE
            else None
        )
        return console.render(
            request, "events.html", visitor=visitor, project=found, section="events",
            events=items, outcome=outcome, outcomes=OUTCOMES, certificate_id=certificate_id,
            older_url=older,
            newest_url=here + _query(outcome=outcome, certificateId=certificate_id)
            if before is not None else None,
        )  # fmt: skip

    return routes
