"""The web console at ``/console/``: server-rendered pages over the same Store as the REST API.

Credentials → Certificates (Add CA Certificate, CRLs), Devices, Auth events, Project settings.
Every rule (upload validation, enable/disable, device rules, who may reach what) lives in the
store and in the API's ``Caller``; this package only turns forms into those calls and results
into pages. It works without JavaScript; ``static/console.js`` only adds a copy button.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from fleetpki.db import short_db_error
from fleetpki.errors import ConflictError, FleetPKIError, NotFoundError
from fleetpki.platform.api.errors import ApiError
from fleetpki.platform.app import Platform
from fleetpki.platform.console import credentials, devices, settings, signin
from fleetpki.platform.console.web import (
    HERE,
    SECURITY_HEADERS,
    Console,
    PageError,
    SignInRequired,
)

__all__ = ["create_console"]
log = logging.getLogger("fleetpki.platform")


def create_console(platform: Platform, admin_key: str | None) -> FastAPI:
    """The console as an ASGI app, to be mounted at ``/console`` by the management API."""
    console = Console(platform, admin_key)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (signin, credentials, devices, settings):
        app.include_router(module.router(console))

    @app.middleware("http")
    async def _headers(request: Request, call_next: object) -> Response:
        response: Response = await call_next(request)  # type: ignore[operator]
        response.headers.update(SECURITY_HEADERS)
        return response

    def error_page(request: Request, status: int, message: str) -> HTMLResponse:
        try:  # the header shows who is signed in, unless the store itself is the problem
            visitor = console.visitor(request) if status not in (401, 503) else None
        except sa.exc.SQLAlchemyError:
            visitor = None
        return console.render(
            request, "error.html", visitor=visitor, status=status, status_code=status,
            message=message, project=None, section=None,
        )  # fmt: skip

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        return RedirectResponse(console.path(request, "signin"), status_code=303)

    @app.exception_handler(PageError)
    async def _page_error(request: Request, exc: PageError) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return error_page(request, exc.status, exc.message)

    @app.exception_handler(FleetPKIError)
    async def _fleetpki_error(request: Request, exc: FleetPKIError) -> Response:
        if isinstance(exc, NotFoundError):
            return error_page(request, 404, str(exc))
        return error_page(request, 409 if isinstance(exc, ConflictError) else 400, str(exc))

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _store(request: Request, exc: sa.exc.SQLAlchemyError) -> Response:
        if isinstance(exc, sa.exc.IntegrityError):  # lost a race with another writer
            return error_page(request, 409, "the change clashes with stored data: try again")
        log.warning("console: database unavailable: %s", short_db_error(exc))
        page = error_page(request, 503, f"the database is unavailable ({short_db_error(exc)})")
        page.headers["Retry-After"] = "2"
        return page

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        message = "no such page" if exc.status_code == 404 else str(exc.detail)
        return error_page(request, exc.status_code, message)

    return app
