"""Migrations: ordered, applied once each, recorded, and a changed applied file is an error."""

from __future__ import annotations

import shutil

import psycopg
import pytest
from psycopg import sql

from ledger.migrations import MIGRATIONS_DIR, MigrationError, migrate, migration_files


@pytest.fixture
def empty_db(servers):
    name = "ll_mig_" + __import__("uuid").uuid4().hex[:8]
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield servers.database_url(name)
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_files_are_numbered_uniquely_in_order():
    versions = [v for v, _, _ in migration_files()]
    assert versions == sorted(set(versions)) and versions[0] == 1


async def test_migrate_applies_every_file_once_and_records_it(empty_db):
    applied = await migrate(empty_db)
    assert applied == [v for v, _, _ in migration_files()]
    assert await migrate(empty_db) == []
    with psycopg.connect(empty_db) as conn:
        recorded = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert recorded == applied
    assert {"events", "subject_keys", "checkpoints", "leads"} <= tables


async def test_concurrent_starts_apply_each_migration_once(empty_db):
    import asyncio

    results = await asyncio.gather(*(migrate(empty_db) for _ in range(4)))
    assert sorted(len(r) for r in results)[:-1] == [0, 0, 0]


async def test_a_changed_applied_migration_is_refused(empty_db, tmp_path):
    copy = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy)
    await migrate(empty_db, copy)
    first = sorted(copy.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(empty_db, copy)
