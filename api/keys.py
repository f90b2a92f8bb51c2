"""API keys: issue, list, revoke and verify the bearer keys that every HTTP request carries.

A key reads `llk_<key id>_<secret>`. The key id is public: it locates the row and names the
actor in every event the key writes. The secret is 256 random bits, shown once at creation and
stored only as its SHA-256 digest (a slow password hash adds nothing to a secret that cannot be
guessed), and the digest is compared in constant time. Every key belongs to exactly one
workspace and one role; a revoked key keeps its row so that history can still name it, and fails
on its very next request (verification reads the row every time, nothing is cached).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime

import msgspec
from psycopg import AsyncConnection
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from schema.vocabularies import ROLES

TOKEN_PREFIX = "llk"
KEY_ROLES: tuple[str, ...] = tuple(r for r in ROLES if r != "system")
"""Roles a key can carry; `system` is reserved for the platform's own processors."""
READ_ONLY_ROLES: frozenset[str] = frozenset({"analyst"})

WORKSPACE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")
_DUMMY_DIGEST = hashlib.sha256(b"no such key").digest()


class KeyStoreError(ValueError):
    """An invalid request to the key store (bad workspace, role or name)."""


class ApiKey(msgspec.Struct, kw_only=True, frozen=True):
    key_id: str
    workspace: str
    name: str
    role: str
    rate_limit: int | None = None
    """Requests per minute; None means the server's default."""
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def can_write(self) -> bool:
        return self.role not in READ_ONLY_ROLES


class IssuedKey(msgspec.Struct, frozen=True):
    key: ApiKey
    token: str
    """The bearer token. It is never stored and cannot be shown again."""


class Verified(msgspec.Struct, kw_only=True, frozen=True):
    """A key that authenticated, with the workspace policy the API needs on every request."""

    key: ApiKey
    require_if_match: bool = False


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not _KEY_ID.match(key_id) or not _SECRET.match(secret):
        return None
    return key_id, secret


_COLUMNS = "key_id, workspace, name, role, rate_limit, created_at, revoked_at"

_INSERT = f"""
INSERT INTO api_keys (workspace, key_id, name, role, secret_sha256, rate_limit)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING {_COLUMNS}
"""

_VERIFY = f"""
SELECT {", ".join("k." + c.strip() for c in _COLUMNS.split(","))}, k.secret_sha256,
       coalesce(s.require_if_match, false)
FROM api_keys k
LEFT JOIN workspace_settings s ON s.workspace = k.workspace
WHERE k.key_id = %s
"""

_REVOKE = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE key_id = %s AND (%s::text IS NULL OR workspace = %s)
RETURNING {_COLUMNS}
"""


class KeyStore:
    """All SQL against `api_keys`. Works on a pool (the server) or one connection (the CLI)."""

    def __init__(self, db: AsyncConnectionPool | AsyncConnection) -> None:
        self._db = db

    def _connection(self):  # type: ignore[no-untyped-def]
        if isinstance(self._db, AsyncConnectionPool):
            return self._db.connection()
        return _Borrowed(self._db)

    async def create(
        self, workspace: str, role: str, name: str, *, rate_limit: int | None = None
    ) -> IssuedKey:
        if not WORKSPACE_PATTERN.match(workspace):
            raise KeyStoreError(
                f"workspace {workspace!r} must be 1-63 lowercase letters, digits, _ or -"
            )
        if role not in KEY_ROLES:
            raise KeyStoreError(f"role {role!r} is not one of {', '.join(KEY_ROLES)}")
        name = name.strip()
        if not name or len(name) > 200:
            raise KeyStoreError("a key needs a name of 1-200 characters")
        if rate_limit is not None and rate_limit <= 0:
            raise KeyStoreError("a rate limit is a positive number of requests per minute")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiKey))
            await cur.execute(
                _INSERT, (workspace, key_id, name, role, digest(secret), rate_limit)
            )
            key = await cur.fetchone()
        assert key is not None
        return IssuedKey(key, f"{TOKEN_PREFIX}_{key_id}_{secret}")

    async def list(self, workspace: str | None = None) -> list[ApiKey]:
        query = f"SELECT {_COLUMNS} FROM api_keys"
        params: tuple[str, ...] = ()
        if workspace is not None:
            query += " WHERE workspace = %s"
            params = (workspace,)
        query += " ORDER BY workspace, created_at, key_id"
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiKey))
            await cur.execute(query, params)
            return await cur.fetchall()

    async def revoke(self, key_id: str, *, workspace: str | None = None) -> ApiKey | None:
        """Revokes a key (again is harmless). With `workspace`, only a key of that workspace."""
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=class_row(ApiKey))
            await cur.execute(_REVOKE, (key_id, workspace, workspace))
            return await cur.fetchone()

    async def verify(self, token: str) -> Verified | None:
        """The live key this token belongs to, or None (unknown, wrong secret, revoked)."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self._connection() as conn:
            cur = await conn.execute(_VERIFY, (key_id,))
            row = await cur.fetchone()
        presented = digest(secret)
        stored = row[7] if row is not None else _DUMMY_DIGEST
        # Compare even when the key id is unknown, so timing does not tell ids apart.
        matches = hmac.compare_digest(presented, stored)
        if row is None or not matches or row[6] is not None:
            return None
        key = ApiKey(
            key_id=row[0], workspace=row[1], name=row[2], role=row[3], rate_limit=row[4],
            created_at=row[5], revoked_at=row[6],
        )
        return Verified(key=key, require_if_match=row[8])


class _Borrowed:
    """`async with` over a connection the caller owns: nothing is closed on exit."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __aenter__(self) -> AsyncConnection:
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        return None
