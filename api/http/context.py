"""Every request's ids and its one log line; the metadata every write records.

The outermost layer of the app (around routing, so 404s get it too): it takes the request id
from `X-Request-ID` (or makes one) and the correlation id from `X-Correlation-ID` (or the request
id), binds both to the structlog context, echoes `X-Request-ID` on the response, and logs one
line per request with its status, duration and the API key that made it.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from litestar import Request
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from schema.metadata import Actor, EventMetadata

_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
REASON_HEADER = "x-reason"
MAX_REASON = 1000
log = structlog.get_logger("leadledger.http")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _valid_id(value: str | None) -> str | None:
    return value if value is not None and _ID.match(value) else None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _valid_id(_header(scope, b"x-request-id")) or uuid.uuid4().hex
        correlation_id = _valid_id(_header(scope, b"x-correlation-id")) or request_id
        state = scope.setdefault("state", {})  # type: ignore[typeddict-item]
        state["request_id"] = request_id
        state["correlation_id"] = correlation_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers  # type: ignore[typeddict-unknown-key]
            await send(message)

        structlog.contextvars.bind_contextvars(
            request_id=request_id, correlation_id=correlation_id
        )
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            user = scope.get("user")
            key = getattr(user, "key", None)
            try:
                log.info(
                    "request",
                    method=scope.get("method"),
                    path=scope.get("path"),
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    key_id=getattr(key, "key_id", None),
                    workspace=getattr(key, "workspace", None),
                )
            except Exception:  # noqa: BLE001 - a log that cannot be written fails no request
                pass
            structlog.contextvars.unbind_contextvars("request_id", "correlation_id")


def reason_from(request: Request, body_reason: str | None = None) -> str | None:
    """The write's reason: the body's `reason` field, else the X-Reason header (UTF-8 allowed,
    though HTTP carries header bytes as Latin-1)."""
    if body_reason:
        return body_reason
    raw = request.headers.get(REASON_HEADER)
    if not raw:
        return None
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        text = raw
    text = "".join(c for c in text if c.isprintable() or c in "\t").strip()
    return text[:MAX_REASON] or None


def write_metadata(request: Request, body_reason: str | None = None) -> EventMetadata:
    """Who (the key and its role), through what (the API), why, and the request's ids."""
    verified = request.user
    state = request.scope.get("state", {})
    return EventMetadata(
        actor=Actor(key_id=verified.key.key_id, role=verified.key.role),
        source="api",
        request_id=state.get("request_id"),
        correlation_id=state.get("correlation_id"),
        reason=reason_from(request, body_reason),
    )
