"""Applies the versioned SQL files of schema/migrations in order, once each, recording them.

Migrations run under an advisory lock so that several processes starting together apply each
file exactly once; a file already applied whose text changed is an error, not a silent skip.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import structlog

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "schema" / "migrations"
_LOCK_ID = 0x1EAD_0001

log = structlog.get_logger(__name__)


class MigrationError(RuntimeError):
    pass


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[tuple[int, str, str]]:
    """(version, name, sql) for every `NNNN_name.sql`, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        found.append((int(number), name, path.read_text()))
    return found


async def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Applies pending migrations; returns the versions applied now."""
    applied_now = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(await cur.fetchall())
            for version, name, sql in migration_files(directory):
                checksum = hashlib.sha256(sql.encode()).hexdigest()
                if version in done:
                    if done[version] != checksum:
                        raise MigrationError(
                            f"migration {version:04d}_{name} changed after it was applied"
                        )
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) "
                        "VALUES (%s, %s, %s)",
                        (version, name, checksum),
                    )
                log.info("migration applied", version=version, name=name)
                applied_now.append(version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
