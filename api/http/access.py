"""Who may call: bearer-key authentication, read/write by role, and per-key rate limits.

Runs on every route but the public ones (health, readiness, the OpenAPI document, the problem
catalogue). A request without a live key is 401; a read-only role (analyst) that sends anything
but GET/HEAD is 403; a key over its quota is 429. Every authenticated response carries the
RateLimit-Policy and RateLimit headers of draft-ietf-httpapi-ratelimit-headers:

    RateLimit-Policy: "default";q=6000;w=60
    RateLimit: "default";r=5998;t=42

Quotas are fixed one-minute windows per key, counted in this process (a deployment running N
server processes admits up to N times the quota; a shared counter comes with horizontal scale).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import msgspec
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.http.problems import ProblemError
from api.keys import KeyStore, Verified

WINDOW_S = 60
PUBLIC_PREFIXES = ("/health", "/ready", "/schema", "/problems")
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CSV_BODY_PATHS = ("/v1/enrichment/firmographics",)
"""Routes whose body is text/csv (firmographics uploads), not JSON."""


class Quota(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    reset_s: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-policy", f'"default";q={self.limit};w={WINDOW_S}'.encode()),
            (b"ratelimit", f'"default";r={self.remaining};t={self.reset_s}'.encode()),
        ]


class RateLimiter:
    """Fixed windows of WINDOW_S seconds per key, in memory."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, list[float]] = {}  # key id -> [window start, count]
        self._sweep_at = clock() + WINDOW_S

    def hit(self, key_id: str, limit: int) -> Quota:
        now = self._clock()
        if now >= self._sweep_at:
            self._windows = {k: w for k, w in self._windows.items() if now - w[0] < WINDOW_S}
            self._sweep_at = now + WINDOW_S
        window = self._windows.get(key_id)
        if window is None or now - window[0] >= WINDOW_S:
            window = [now, 0]
            self._windows[key_id] = window
        reset = max(1, math.ceil(window[0] + WINDOW_S - now))
        if window[1] >= limit:
            return Quota(False, limit, 0, reset)
        window[1] += 1
        return Quota(True, limit, limit - int(window[1]), reset)


def _json_body(scope: Scope) -> bool:
    """False when the request has a body that does not say it is JSON."""
    content_type, length, chunked = None, 0, False
    for key, value in scope.get("headers", ()):
        if key == b"content-type":
            content_type = value.split(b";", 1)[0].strip().lower()
        elif key == b"content-length":
            length = int(value) if value.isdigit() else 1
        elif key == b"transfer-encoding":
            chunked = True
    if length == 0 and not chunked:  # no body, whatever the client's default type says
        return True
    if content_type is None:
        return False
    return content_type == b"application/json" or content_type.endswith(b"+json")


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class AccessMiddleware:
    """Litestar middleware (route level): authenticate, authorize by method, rate-limit."""

    def __init__(
        self, app: ASGIApp, *, keys: KeyStore, limiter: RateLimiter, default_limit: int
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.default_limit = default_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(PUBLIC_PREFIXES):
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if token is None:
            raise ProblemError("unauthorized", "send the API key as `Authorization: Bearer <key>`")
        verified: Verified | None = await self.keys.verify(token)
        if verified is None:
            raise ProblemError("unauthorized", "the API key is unknown, wrong or revoked")
        scope["user"] = verified
        scope["auth"] = verified.key.role
        quota = self.limiter.hit(verified.key.key_id, verified.key.rate_limit or self.default_limit)
        extra = quota.headers()
        if not quota.allowed:
            raise ProblemError(
                "rate-limited",
                f"this key may make {quota.limit} requests per {WINDOW_S} s; "
                f"retry in {quota.reset_s} s",
                headers={"Retry-After": str(quota.reset_s),
                         **{k.decode(): v.decode() for k, v in extra}},
            )
        if (scope.get("method") in BODY_METHODS and not _json_body(scope)
                and not path.startswith(CSV_BODY_PATHS)):
            raise ProblemError(
                "unsupported-media-type", "send request bodies as application/json",
                headers={k.decode(): v.decode() for k, v in extra},
            )
        if scope.get("method") not in READ_METHODS and not verified.key.can_write:
            raise ProblemError(
                "forbidden",
                f"role {verified.key.role!r} is read-only",
                headers={k.decode(): v.decode() for k, v in extra},
            )

        async def send_with_quota(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]  # type: ignore[typeddict-unknown-key]
            await send(message)

        await self.app(scope, receive, send_with_quota)


def require_admin(connection, _handler) -> None:  # type: ignore[no-untyped-def]
    """Guard: only admin keys."""
    verified = connection.user
    if verified is None or verified.key.role != "admin":
        raise ProblemError("forbidden", "only an admin key may do this")
