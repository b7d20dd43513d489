"""Signing in and out, and the admin's project list (pick or create a project)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from fleetpki.errors import ConflictError, InputError
from fleetpki.platform.console.web import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    Console,
    PageError,
    Visitor,
    text_field,
    tokens_match,
)

SIGNIN_COOKIE_SECONDS = 3600


def _home(console: Console, request: Request, visitor: Visitor) -> Response:
    if visitor.project_id is None:
        return console.redirect(request, "projects")
    return console.redirect(request, "certificates", project=visitor.project_id)


def router(console: Console) -> APIRouter:
    routes = APIRouter()

    @routes.get("/", name="home")
    def home(request: Request) -> Response:
        visitor = console.visitor(request)
        if visitor is None:
            return console.redirect(request, "signin")
        return _home(console, request, visitor)

    def signin_page(request: Request, error: str | None = None, status: int = 200) -> Response:
        nonce = secrets.token_urlsafe(24)
        response = console.render(
            request, "signin.html", status=status, csrf=nonce, error=error, project=None,
            section=None,
        )  # fmt: skip
        console.set_cookie(request, response, SIGNIN_COOKIE, nonce, max_age=SIGNIN_COOKIE_SECONDS)
        return response

    @routes.get("/signin", name="signin")
    def signin(request: Request) -> Response:
        visitor = console.visitor(request)
        if visitor is not None:
            return _home(console, request, visitor)
        return signin_page(request)

    @routes.post("/signin", name="signin_post")
    async def signin_post(request: Request) -> Response:
        form = await console.read_form(request)
        given = text_field(form, CSRF_FIELD)
        expected = request.cookies.get(SIGNIN_COOKIE, "")
        if not expected or not tokens_match(given, expected):
            raise PageError(403, "this sign-in form has expired: open the sign-in page again")
        key = text_field(form, "apiKey", 512).strip()
        if not key:
            return signin_page(request, "Enter an API key.", 400)
        made = await run_in_threadpool(console.sign_in, key)
        if made is None:
            # The same words for a wrong key and a revoked one: nothing to learn from them.
            return signin_page(request, "This key is not valid: it is mistyped or revoked.", 401)
        token, session = made
        target = (
            console.path(request, "projects")
            if session.project_id is None
            else console.path(request, "certificates", project=session.project_id)
        )
        response = RedirectResponse(target, status_code=303)
        console.set_cookie(request, response, SESSION_COOKIE, token)
        response.delete_cookie(SIGNIN_COOKIE, path=request.scope.get("root_path") or "/console")
        return response

    @routes.post("/signout", name="signout")
    async def signout(request: Request) -> Response:
        await console.changed_form(request)
        await run_in_threadpool(console.sign_out, request)
        response = console.redirect(request, "signin", done="signed-out")
        response.delete_cookie(SESSION_COOKIE, path=request.scope.get("root_path") or "/console")
        return response

    def projects_page(
        request: Request, visitor: Visitor, errors: dict[str, str], status: int = 200, **form: str
    ) -> Response:
        visitor.caller.require_admin()
        return console.render(
            request, "projects.html", visitor=visitor, status=status, project=None,
            section=None, projects=console.store.list_projects(), errors=errors, form=form,
        )  # fmt: skip

    @routes.get("/projects", name="projects")
    def projects(request: Request) -> Response:
        visitor = console.require_visitor(request)
        if not visitor.admin:
            return _home(console, request, visitor)
        return projects_page(request, visitor, {})

    @routes.post("/projects", name="projects_create")
    async def projects_create(request: Request) -> Response:
        visitor, form = await console.changed_form(request)
        visitor.caller.require_admin()
        slug = text_field(form, "slug", 63).strip()
        name = text_field(form, "name", 200).strip()
        try:
            await run_in_threadpool(console.store.create_project, slug, name or None)
        except (InputError, ConflictError) as exc:
            field = "name" if str(exc).startswith("project name") else "slug"
            return await run_in_threadpool(
                projects_page, request, visitor, {field: str(exc)}, 400, slug=slug, name=name
            )
        return console.redirect(request, "certificates", done="project-created", project=slug)

    return routes
