"""The console's core: templates, sign-in sessions, CSRF tokens, errors rendered as pages.

A session cookie holds a random token (never an API key); the store keeps only its SHA-256,
with the API key it was made with, so revoking the key ends the session at once. Every form
that changes something carries a CSRF token derived from the session token (HMAC), and the
sign-in form one from a short-lived cookie of its own (double submit).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from fleetpki.platform.api.app import Caller
from fleetpki.platform.app import Platform
from fleetpki.platform.console import views
from fleetpki.platform.store import ConsoleSession, hash_api_key, utcnow
from fleetpki.platform.store.cas import MAX_UPLOAD_BYTES

HERE = Path(__file__).parent
MOUNT_NAME = "console"
SESSION_COOKIE = "fleetpki_session"
SIGNIN_COOKIE = "fleetpki_signin"
IDLE = dt.timedelta(hours=1)  # signed out after an hour without a page
LIFETIME = dt.timedelta(hours=12)  # and after twelve hours in any case
EXTEND_EVERY = dt.timedelta(minutes=5)  # at most one write per session per five minutes
MAX_FORM_BYTES = MAX_UPLOAD_BYTES + 64 * 1024  # an upload plus the multipart framing
CSRF_FIELD = "csrf"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; script-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class SignInRequired(Exception):
    """No live session: the visitor is sent to the sign-in page."""


class PageError(Exception):
    """A refusal shown as an error page with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A page that asks before something is deleted or revoked: its words and its two ways out.

    ``action`` and ``cancel`` are console route names; ``params`` fills both (``cancel_params``
    the second, when it takes others). With
    ``confirm_text`` the visitor must type it (a project slug) before the button counts.
    """

    title: str
    message: str
    button: str
    action: str
    cancel: str
    params: dict[str, str]
    confirm_text: str | None = None
    error: str | None = None
    cancel_params: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Visitor:
    """A signed-in visitor: the session, what it may reach, the CSRF token for its forms."""

    session: ConsoleSession
    caller: Caller
    csrf: str

    @property
    def admin(self) -> bool:
        return self.caller.admin

    @property
    def project_id(self) -> str | None:
        return self.caller.project_id


def _hmac(key: bytes, message: bytes) -> str:
    return base64.urlsafe_b64encode(hmac.digest(key, message, "sha256")).decode().rstrip("=")


def tokens_match(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


class Console:
    """What every console page needs: the platform, the admin key, templates, sessions."""

    def __init__(self, platform: Platform, admin_key: str | None) -> None:
        self.platform = platform
        self.store = platform.store
        self._admin_key = admin_key.encode() if admin_key else None
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,  # every value is text: subjects, names and reasons included
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(views.FILTERS)

    # -- pages -------------------------------------------------------------------------------

    def render(
        self,
        request: Request,
        template: str,
        *,
        visitor: Visitor | None = None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        """The page ``template`` for ``visitor`` (None: signed out)."""

        def url(name: str, **params: Any) -> str:
            return self.path(request, name, **params)

        page = self.env.get_template(template).render(
            request=request,
            visitor=visitor,
            url=url,
            notice=views.NOTICES.get(request.query_params.get("done", "")),
            **context,
        )
        return HTMLResponse(page, status_code=status)

    def confirm(
        self,
        request: Request,
        visitor: Visitor,
        project: dict[str, Any],
        section: str,
        asked: Confirmation,
    ) -> HTMLResponse:
        """The confirmation page; its form posts to ``asked.action`` with the CSRF token."""
        return self.render(
            request, "confirm.html", visitor=visitor, project=project, section=section,
            status=400 if asked.error else 200, asked=asked,
            action=self.path(request, asked.action, **asked.params),
            cancel=self.path(request, asked.cancel, **(asked.cancel_params or asked.params)),
        )  # fmt: skip

    @staticmethod
    def path(request: Request, name: str, **params: Any) -> str:
        """The path of the console route ``name`` (the console is mounted as "console")."""
        return request.url_for(f"{MOUNT_NAME}:{name}", **params).path

    def redirect(
        self, request: Request, name: str, done: str | None = None, **params: Any
    ) -> Response:
        """303 to the page ``name`` (after a change), telling it which notice to show."""
        target = self.path(request, name, **params)
        return RedirectResponse(target + (f"?done={done}" if done else ""), status_code=303)

    def project(self, visitor: Visitor, project_id: str) -> dict[str, Any]:
        """The project if this visitor may see it; raises ApiError/NotFoundError (both 404)."""
        visitor.caller.require_project(project_id)
        return self.store.get_project(project_id)

    # -- sessions ----------------------------------------------------------------------------

    def _admin_tag(self, token: str) -> str | None:
        return None if self._admin_key is None else _hmac(self._admin_key, token.encode())

    def sign_in(self, key: str) -> tuple[str, ConsoleSession] | None:
        """A new session for the admin key or a project API key, or None for any other key."""
        token = secrets.token_urlsafe(32)
        admin_tag = None
        api_key_id = project_id = None
        if self._admin_key is not None and hmac.compare_digest(
            hashlib.sha256(key.encode()).digest(), hashlib.sha256(self._admin_key).digest()
        ):
            admin_tag = self._admin_tag(token)
        else:
            found = self.store.api_key_of(key)
            if found is None:
                return None
            api_key_id, project_id = found
        session = self.store.create_console_session(
            hash_api_key(token),
            api_key_id=api_key_id,
            project_id=project_id,
            admin_tag=admin_tag,
            idle=IDLE,
            lifetime=LIFETIME,
        )
        return token, session

    def visitor(self, request: Request) -> Visitor | None:
        """The signed-in visitor of this request, or None."""
        token = request.cookies.get(SESSION_COOKIE, "")
        if not 20 <= len(token) <= 100:
            return None
        session = self.store.console_session(hash_api_key(token))
        if session is None:
            return None
        if session.admin:
            expected = self._admin_tag(token)
            # No admin key now, or another one than at sign-in: the admin session is over.
            if expected is None or session.admin_tag is None:
                return None
            if not tokens_match(session.admin_tag, expected):
                return None
        now = utcnow()
        if session.expires_at - now < IDLE - EXTEND_EVERY:
            self.store.extend_console_session(session.token_hash, now + IDLE)
        caller = Caller(session.admin, session.project_id)
        return Visitor(session, caller, _hmac(token.encode(), b"fleetpki console csrf"))

    def require_visitor(self, request: Request) -> Visitor:
        """The signed-in visitor; raises SignInRequired."""
        visitor = self.visitor(request)
        if visitor is None:
            raise SignInRequired
        return visitor

    def sign_out(self, request: Request) -> None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            self.store.end_console_session(hash_api_key(token))

    @staticmethod
    def set_cookie(request: Request, response: Response, name: str, value: str, **kw: Any) -> None:
        """HttpOnly, SameSite=Strict, scoped to the console; Secure when served over TLS."""
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=request.scope.get("root_path") or "/console",
            **kw,
        )

    # -- forms -------------------------------------------------------------------------------

    async def read_form(self, request: Request) -> FormData:
        """The posted form, bounded in size; raises PageError (411, 413, 400)."""
        length = request.headers.get("content-length")
        if length is None or not length.isdigit():
            raise PageError(411, "the form must be sent with a Content-Length")
        if int(length) > MAX_FORM_BYTES:
            # Read what was sent first: a browser whose upload is cut off shows a reset
            # connection, not this page (the API's body limit bounds how much that is).
            async for _ in request.stream():
                pass
            raise PageError(
                413, f"the file is too large (the form may have {MAX_FORM_BYTES} bytes)"
            )
        return await request.form(max_files=1, max_fields=20)

    async def changed_form(self, request: Request) -> tuple[Visitor, FormData]:
        """A signed-in visitor's form with a valid CSRF token; raises SignInRequired,
        PageError (403 without the token or with a wrong one)."""
        visitor = await run_in_threadpool(self.require_visitor, request)
        form = await self.read_form(request)
        given = form.get(CSRF_FIELD)
        if not isinstance(given, str) or not tokens_match(given, visitor.csrf):
            raise PageError(403, "this form has expired or did not come from this console")
        return visitor, form


def text_field(form: FormData, name: str, limit: int = 200) -> str:
    """A text field of the form ("" when absent), at most ``limit`` characters."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    return value[: limit + 1]


async def file_field(form: FormData, name: str) -> bytes | None:
    """The bytes of an uploaded file (None when no file was chosen), read up to the bound."""
    upload = form.get(name)
    if not isinstance(upload, UploadFile) or (not upload.filename and not upload.size):
        return None
    return await upload.read(MAX_UPLOAD_BYTES + 1)
