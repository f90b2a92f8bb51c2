"""Webhook endpoints: the `webhook_endpoints` table, their validation and their signing secrets.

An endpoint is a URL, the event types it subscribes to (none: all), an optional CEL filter
(processors/webhook_filters.py, compiled before anything is saved), and a signing secret
(`whsec_` + base64 of 32 random bytes, per Standard Webhooks). Secrets are encrypted at rest
with a data key of the endpoint's own, wrapped by the master key (ledger/crypto.py). They leave
this module in two ways only: once, in the answer to a create or rotate, and as
`SigningSecrets` for the sender, whose repr hides them (so no log line can carry one).

Rotation keeps the previous secret valid until `previous_expires_at` (24 h by default): the
sender signs with both meanwhile, and a receiver holding either verifies.
"""

from __future__ import annotations

import base64
import os
import uuid
from datetime import datetime

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from ledger.crypto import Keyring
from ledger.errors import InvalidValue
from processors.webhook_events import BY_WEBHOOK_TYPE
from processors.webhook_filters import compile_filter

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
DEFAULT_PREVIOUS_VALID_S = 86_400
MAX_URL_LENGTH = 2_000
MAX_EVENT_TYPES = 100
WILDCARDS = ("lead.*", "*")


class EndpointSpec(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    event_types: tuple[str, ...] = ()
    filter: str | None = None
    description: str = ""


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint without its secrets."""

    workspace: str
    id: str
    url: str
    description: str
    event_types: tuple[str, ...]
    filter: str | None
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class SigningSecrets:
    """The secrets an endpoint signs with now: the current one, and the previous one while its
    rotation overlap lasts."""

    __slots__ = ("current", "previous")

    def __init__(self, current: str, previous: str | None) -> None:
        self.current = current
        self.previous = previous

    def all(self) -> tuple[str, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)

    def __repr__(self) -> str:
        return "SigningSecrets(<hidden>)"


class SealedSecrets(msgspec.Struct, frozen=True):
    """The secrets as stored: the endpoint's wrapped data key and the ciphertexts (`previous`
    only while it is still valid)."""

    key: bytes
    current: bytes
    previous: bytes | None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def check_secret(secret: str) -> None:
    """A secret someone brings (rotation with a given secret): whsec_ + base64 of 24-64 bytes."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        decoded = base64.b64decode(raw, validate=True)
    except ValueError:
        decoded = b""
    if not secret.startswith(SECRET_PREFIX) or not 24 <= len(decoded) <= 64:
        raise InvalidValue("secret", "whsec_ followed by the base64 of 24 to 64 random bytes")
    Webhook(secret)  # the library must accept what it will sign with


def check_spec(spec: EndpointSpec) -> None:
    """Raises InvalidValue for the first bad field (the filter's with its line and column)."""
    texts = [("url", spec.url), ("description", spec.description), ("filter", spec.filter or "")]
    for field, text in texts + [("event_types", t) for t in spec.event_types]:
        if "\x00" in text:  # PostgreSQL text cannot hold it
            raise InvalidValue(field, "must not contain NUL characters")
    if not spec.url.startswith(("https://", "http://")) or len(spec.url) > MAX_URL_LENGTH:
        raise InvalidValue("url", f"an http(s) URL of at most {MAX_URL_LENGTH} characters")
    if len(spec.event_types) > MAX_EVENT_TYPES:
        raise InvalidValue("event_types", f"at most {MAX_EVENT_TYPES} types")
    for index, name in enumerate(spec.event_types):
        if name not in BY_WEBHOOK_TYPE and name not in WILDCARDS:
            raise InvalidValue(f"event_types[{index}]", f"{name!r} is not an event type "
                               "(GET /v1/webhooks/event-types lists them)")
    if spec.filter is not None:
        compile_filter(spec.filter)


_COLUMNS = (
    "workspace, id, url, description, event_types, filter, enabled, disabled_reason, "
    "previous_expires_at, created_by, created_at, updated_at"
)
_CREATE = f"""
INSERT INTO webhook_endpoints
    (workspace, id, url, description, event_types, filter, secret_key, secret, created_by)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workspace, id) DO NOTHING
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE workspace = %s AND id = %s"
_PAGE = f"""
SELECT {_COLUMNS} FROM webhook_endpoints WHERE workspace = %s AND id > %s ORDER BY id LIMIT %s
"""
_ENABLED = f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE workspace = %s AND enabled"
_ENABLED_IN_ANY = f"""
SELECT {_COLUMNS} FROM webhook_endpoints WHERE workspace = ANY(%s) AND enabled
ORDER BY workspace, created_at, id
"""
_UPDATE = f"""
UPDATE webhook_endpoints SET url = %s, description = %s, event_types = %s, filter = %s,
    updated_at = now()
WHERE workspace = %s AND id = %s RETURNING {_COLUMNS}
"""
_SET_ENABLED = f"""
UPDATE webhook_endpoints SET enabled = %s, disabled_reason = %s, updated_at = now()
WHERE workspace = %s AND id = %s RETURNING {_COLUMNS}
"""
_DELETE = "DELETE FROM webhook_endpoints WHERE workspace = %s AND id = %s"
_KEYS = """
SELECT secret_key, secret, previous_secret, previous_expires_at > now()
FROM webhook_endpoints WHERE workspace = %s AND id = %s
"""
# The current secret becomes the previous one; FOR UPDATE in the caller's transaction keeps two
# concurrent rotations from both demoting the same secret.
_LOCK_KEYS = "SELECT secret_key, secret FROM webhook_endpoints WHERE workspace = %s AND id = %s " \
    "FOR UPDATE"
_ROTATE = f"""
UPDATE webhook_endpoints SET secret = %s, previous_secret = secret,
    previous_expires_at = now() + make_interval(secs => %s), updated_at = now()
WHERE workspace = %s AND id = %s RETURNING {_COLUMNS}
"""


def _endpoint(row: tuple) -> Endpoint:
    (workspace, id_, url, description, types, filter_, enabled, reason, expires, created_by,
     created_at, updated_at) = row
    return Endpoint(
        workspace=workspace, id=id_, url=url, description=description,
        event_types=tuple(types), filter=filter_, enabled=enabled, disabled_reason=reason,
        previous_secret_expires_at=expires, created_by=created_by, created_at=created_at,
        updated_at=updated_at,
    )


class WebhookEndpoints:
    def __init__(self, pool: AsyncConnectionPool, keyring: Keyring) -> None:
        self.pool = pool
        self.keyring = keyring

    def _aad(self, workspace: str, endpoint_id: str) -> bytes:
        return f"webhook-secret\x1f{workspace}\x1f{endpoint_id}".encode()

    def _subject(self, endpoint_id: str) -> str:
        return f"webhook-endpoint/{endpoint_id}"

    async def create(self, workspace: str, spec: EndpointSpec, created_by: str, *,
                     endpoint_id: str | None = None) -> tuple[Endpoint, str] | None:
        """The endpoint and its secret (shown once); None if `endpoint_id` (derived from an
        Idempotency-Key) exists already."""
        check_spec(spec)
        endpoint_id = endpoint_id or str(uuid.uuid4())
        secret = new_secret()
        key = self.keyring.new_key(workspace, self._subject(endpoint_id))
        sealed = key.encrypt(secret.encode(), self._aad(workspace, endpoint_id))
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CREATE, (
                workspace, endpoint_id, spec.url, spec.description, list(spec.event_types),
                spec.filter, key.wrapped, sealed, created_by,
            ))
            row = await cur.fetchone()
        return None if row is None else (_endpoint(row), secret)

    async def get(self, workspace: str, endpoint_id: str) -> Endpoint | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_GET, (workspace, endpoint_id))
            row = await cur.fetchone()
        return _endpoint(row) if row else None

    async def page(self, workspace: str, after_id: str, limit: int) -> list[Endpoint]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PAGE, (workspace, after_id, limit))
            return [_endpoint(r) for r in await cur.fetchall()]

    async def enabled_in(self, workspace: str) -> list[Endpoint]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_ENABLED, (workspace,))
            return [_endpoint(r) for r in await cur.fetchall()]

    async def enabled_by_workspace(self, workspaces: list[str]) -> dict[str, list[Endpoint]]:
        """The enabled endpoints of each of `workspaces` (an empty list for one with none)."""
        found: dict[str, list[Endpoint]] = {w: [] for w in workspaces}
        if not workspaces:
            return found
        async with self.pool.connection() as conn:
            cur = await conn.execute(_ENABLED_IN_ANY, (workspaces,))
            for row in await cur.fetchall():
                endpoint = _endpoint(row)
                found[endpoint.workspace].append(endpoint)
        return found

    async def update(self, workspace: str, endpoint_id: str, spec: EndpointSpec
                     ) -> Endpoint | None:
        check_spec(spec)
        async with self.pool.connection() as conn:
            cur = await conn.execute(_UPDATE, (
                spec.url, spec.description, list(spec.event_types), spec.filter,
                workspace, endpoint_id,
            ))
            row = await cur.fetchone()
        return _endpoint(row) if row else None

    async def set_enabled(
        self, workspace: str, endpoint_id: str, enabled: bool, reason: str | None = None,
        *, conn: psycopg.AsyncConnection | None = None,
    ) -> Endpoint | None:
        params = (enabled, None if enabled else reason, workspace, endpoint_id)
        if conn is not None:
            cur = await conn.execute(_SET_ENABLED, params)
            row = await cur.fetchone()
        else:
            async with self.pool.connection() as own:
                cur = await own.execute(_SET_ENABLED, params)
                row = await cur.fetchone()
        return _endpoint(row) if row else None

    async def delete(self, workspace: str, endpoint_id: str) -> bool:
        """Deletes the endpoint with its delivery log."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DELETE, (workspace, endpoint_id))
            return cur.rowcount > 0

    async def rotate(
        self, workspace: str, endpoint_id: str, *,
        previous_valid_s: int = DEFAULT_PREVIOUS_VALID_S, secret: str | None = None,
    ) -> tuple[Endpoint, str] | None:
        """A new current secret (given, or generated); the old one signs too for
        `previous_valid_s` seconds (0: it stops at once). None if there is no such endpoint."""
        if secret is not None:
            check_secret(secret)
        secret = secret or new_secret()
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_LOCK_KEYS, (workspace, endpoint_id))
            row = await cur.fetchone()
            if row is None:
                return None
            key = self.keyring.unwrap(workspace, self._subject(endpoint_id), row[0])
            sealed = key.encrypt(secret.encode(), self._aad(workspace, endpoint_id))
            cur = await conn.execute(_ROTATE, (sealed, previous_valid_s, workspace, endpoint_id))
            updated = await cur.fetchone()
        assert updated is not None
        return _endpoint(updated), secret

    async def secrets(self, workspace: str, endpoint_id: str) -> SigningSecrets | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_KEYS, (workspace, endpoint_id))
            row = await cur.fetchone()
        if row is None:
            return None
        wrapped, sealed, previous, previous_valid = row
        return self.open(workspace, endpoint_id, SealedSecrets(
            wrapped, sealed, previous if previous_valid else None))

    def open(self, workspace: str, endpoint_id: str, sealed: SealedSecrets) -> SigningSecrets:
        """Decrypts secrets read with the endpoint (the sender's claim reads them along)."""
        key = self.keyring.unwrap(workspace, self._subject(endpoint_id), sealed.key)
        aad = self._aad(workspace, endpoint_id)
        current = key.decrypt(sealed.current, aad).decode()
        old = None if sealed.previous is None else key.decrypt(sealed.previous, aad).decode()
        return SigningSecrets(current, old)

