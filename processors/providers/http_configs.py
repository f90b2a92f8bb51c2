"""The workspace's HTTP enrichment providers and its enrichment settings (tables of 0023).

A provider's configuration is stored as JSON; the value of its auth header (an API key) only
encrypted, under a data key of its own wrapped by the master key (ledger/crypto.py), and it is
decrypted only to make a request: listing providers reports whether a secret is set, never the
secret. All SQL against `enrichment_providers` and `enrichment_settings` lives here.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.crypto import Keyring
from processors.providers.http_mapping import HttpProviderConfig

_decode = msgspec.json.Decoder(HttpProviderConfig).decode
_encode = msgspec.json.Encoder().encode


class StoredProvider(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    config: HttpProviderConfig
    enabled: bool
    has_secret: bool
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None


class ProviderWithSecret(msgspec.Struct, frozen=True, kw_only=True):
    """For the enrichment processor only: what a request needs, the secret decrypted."""

    provider: StoredProvider
    secret: str | None = None


_COLUMNS = "name, config, enabled, secret IS NOT NULL, created_at, updated_at, updated_by"
_LIST = f"SELECT {_COLUMNS} FROM enrichment_providers WHERE workspace = %s ORDER BY name"
_GET = f"SELECT {_COLUMNS} FROM enrichment_providers WHERE workspace = %s AND name = %s"
_ENABLED = f"""
SELECT {_COLUMNS}, secret, secret_key FROM enrichment_providers
WHERE workspace = %s AND enabled ORDER BY name
"""
_SAVE = """
INSERT INTO enrichment_providers (workspace, name, config, enabled, secret, secret_key,
                                  updated_by)
VALUES (%(workspace)s, %(name)s, %(config)s, %(enabled)s, %(secret)s, %(secret_key)s, %(by)s)
ON CONFLICT (workspace, name) DO UPDATE SET
    config = excluded.config, enabled = excluded.enabled, updated_at = now(),
    updated_by = excluded.updated_by,
    secret = CASE WHEN %(keep_secret)s THEN enrichment_providers.secret ELSE excluded.secret END,
    secret_key = CASE WHEN %(keep_secret)s THEN enrichment_providers.secret_key
                      ELSE excluded.secret_key END
"""
_DELETE = "DELETE FROM enrichment_providers WHERE workspace = %s AND name = %s"
_OVERWRITE = "SELECT overwrite FROM enrichment_settings WHERE workspace = %s"
_SAVE_OVERWRITE = """
INSERT INTO enrichment_settings (workspace, overwrite, updated_by) VALUES (%s, %s, %s)
ON CONFLICT (workspace) DO UPDATE SET overwrite = excluded.overwrite, updated_at = now(),
    updated_by = excluded.updated_by
"""


def _subject(name: str) -> str:
    return f"enrichment-provider/{name}"


def _aad(workspace: str, name: str) -> bytes:
    return f"enrichment-provider\x1f{workspace}\x1f{name}".encode()


def _stored(row: tuple) -> StoredProvider:  # type: ignore[type-arg]
    name, config, enabled, has_secret, created_at, updated_at, updated_by = row[:7]
    return StoredProvider(
        name=name, config=msgspec.convert(config, HttpProviderConfig), enabled=enabled,
        has_secret=has_secret, created_at=created_at, updated_at=updated_at,
        updated_by=updated_by,
    )


class EnrichmentConfigs:
    def __init__(self, pool: AsyncConnectionPool, keyring: Keyring) -> None:
        self.pool = pool
        self.keyring = keyring

    async def list(self, workspace: str) -> list[StoredProvider]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LIST, (workspace,))
            return [_stored(r) for r in await cur.fetchall()]

    async def get(self, workspace: str, name: str) -> StoredProvider | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_GET, (workspace, name))
            row = await cur.fetchone()
        return _stored(row) if row else None

    async def save(
        self, workspace: str, name: str, config: HttpProviderConfig, *, enabled: bool,
        secret: str | None, keep_secret: bool, actor: str,
    ) -> StoredProvider:
        """`keep_secret`: leave the stored secret as it is (a change of mapping or limits
        without sending the key again); otherwise `secret` replaces it (None clears it)."""
        sealed = wrapped = None
        if secret is not None and not keep_secret:
            key = self.keyring.new_key(workspace, _subject(name))
            sealed, wrapped = key.encrypt(secret.encode(), _aad(workspace, name)), key.wrapped
        async with self.pool.connection() as conn:
            await conn.execute(_SAVE, {
                "workspace": workspace, "name": name, "config": _encode(config).decode(),
                "enabled": enabled, "secret": sealed, "secret_key": wrapped, "by": actor,
                "keep_secret": keep_secret,
            })
            cur = await conn.execute(_GET, (workspace, name))
            row = await cur.fetchone()
        return _stored(row)  # type: ignore[arg-type]

    async def delete(self, workspace: str, name: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_DELETE, (workspace, name))
            return cur.rowcount > 0

    async def enabled(
        self, workspace: str, conn: psycopg.AsyncConnection | None = None
    ) -> list[ProviderWithSecret]:
        """The workspace's enabled providers with their secrets decrypted."""
        if conn is None:
            async with self.pool.connection() as own:
                return await self.enabled(workspace, own)
        cur = await conn.execute(_ENABLED, (workspace,))
        found = []
        for row in await cur.fetchall():
            stored, (sealed, wrapped) = _stored(row), row[7:]
            secret = None
            if sealed is not None:
                key = self.keyring.unwrap(workspace, _subject(stored.name), bytes(wrapped))
                secret = key.decrypt(bytes(sealed), _aad(workspace, stored.name)).decode()
            found.append(ProviderWithSecret(provider=stored, secret=secret))
        return found

    async def overwrite(self, workspace: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_OVERWRITE, (workspace,))
            row = await cur.fetchone()
        return bool(row and row[0])

    async def set_overwrite(self, workspace: str, overwrite: bool, actor: str) -> bool:
        async with self.pool.connection() as conn:
            await conn.execute(_SAVE_OVERWRITE, (workspace, overwrite, actor))
        return overwrite


def decode_config(raw: bytes) -> HttpProviderConfig:
    return _decode(raw)
