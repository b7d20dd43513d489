"""Every answer of the management API that is not a success: ``{"error": {"code", "message"}}``.

FastAPI's and Starlette's own errors (unknown path, wrong method, malformed JSON, validation)
and storage faults (a locked, full or unreachable database: 503 with the reason) all come back
in the documented shape, never as ``text/plain``; request bodies are bounded before they are
read (413).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetpki.db import short_db_error
from fleetpki.errors import ConflictError, FleetPKIError, NotFoundError

log = logging.getLogger("fleetpki.platform")

CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "store_unavailable",
}
RETRY_AFTER_SECONDS = "2"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}},
        status_code=status,
        headers=dict(headers) if headers else None,
    )


class BodyTooLarge(HTTPException):
    """A request body over its limit (an HTTPException, so FastAPI's body reader re-raises it)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large (at most {limit} bytes for this call)")


class BodyLimit:
    """ASGI middleware: refuse a body over ``limit_for(method, path)`` bytes before it is parsed.

    A declared Content-Length over the limit is answered at once; a body without one (chunked)
    is counted as it arrives and refused as soon as it passes the limit. The rest of the body
    is read and dropped (up to ``DRAIN_LIMIT``) before the 413 goes out: closing a socket with
    unread data resets the connection, and the client would never see the answer.
    """

    DRAIN_LIMIT = 16 * 1024 * 1024

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        received = 0
        drained = False
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit, await _drain(receive, int(value) <= self.DRAIN_LIMIT))
                return
        started = False

        async def counted() -> Message:
            nonlocal received, drained
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    drained = not message.get("more_body") or await _drain(receive, True)
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # read outside FastAPI's handlers (they answer it otherwise)
            if started:
                raise
            await _too_large(send, limit, drained)


async def _drain(receive: Receive, allowed: bool) -> bool:
    """Read and drop the rest of the request body; whether it was all read."""
    dropped = 0
    while allowed and dropped <= BodyLimit.DRAIN_LIMIT:
        message = await receive()
        if message["type"] != "http.request":
            return False
        dropped += len(message.get("body", b""))
        if not message.get("more_body"):
            return True
    return False


async def _too_large(send: Send, limit: int, body_read: bool) -> None:
    body = json.dumps(
        {"error": {"code": "too_large", "message": str(BodyTooLarge(limit).detail)}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if not body_read:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return 400, "invalid_json", "the request body is not valid JSON"
    parts = []
    # Never echo the input back: an upload may hold a private key. Field names are cut short.
    for error in errors[:3]:
        where = ".".join(str(p)[:40] for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return 422, "invalid_request", "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure of ``app`` in the documented JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(FleetPKIError)
    async def _fleetpki_error(_: Request, exc: FleetPKIError) -> JSONResponse:
        if isinstance(exc, NotFoundError):
            return error_response(404, "not_found", str(exc))
        if isinstance(exc, ConflictError):
            return error_response(409, "conflict", str(exc))
        return error_response(400, "bad_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        status = exc.status_code
        message = str(exc.detail)
        if status == 404 and message == "Not Found":
            message = f"no such path: {request.method} {request.url.path[:200]}"
        elif status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on this path (allowed: {allowed})"
        return error_response(status, CODES.get(status, "http_error"), message, exc.headers)

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _store(_: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        reason = short_db_error(exc)
        if isinstance(exc, sa.exc.IntegrityError):
            # A race with another writer (both passed the checks, one insert lost).
            return error_response(
                409, "conflict", f"the change clashes with stored data ({reason})"
            )
        if isinstance(exc, sa.exc.DataError):
            return error_response(400, "bad_request", f"a value cannot be stored ({reason})")
        log.warning("management API: database unavailable: %s", reason)
        return error_response(
            503,
            "store_unavailable",
            f"the database is unavailable ({reason}); try again",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The last resort: still the documented shape; the traceback goes to the log.
        log.error("management API: unexpected %s", type(exc).__name__, exc_info=exc)
        return error_response(500, "internal_error", "internal error (the server log has details)")
