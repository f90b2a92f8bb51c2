"""Test wiring: real PostgreSQL and NATS, embedded by default.

Set LEADLEDGER_TEST_DATABASE_URL and LEADLEDGER_TEST_NATS_URL to run the same suite against
external servers (CI does both: embedded, then the machine's system servers). Every test gets
its own database (cloned from a migrated template) and its own JetStream stream and subject
prefix, so tests never see each other's events and run in parallel under pytest-xdist.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import nats
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from api.embedded import EmbeddedNats, EmbeddedPostgres
from ledger.crypto import Keyring, generate_master_key, parse_master_key
from ledger.database import open_pool
from ledger.migrations import migrate
from ledger.store import EventStore


class Servers(msgspec.Struct):
    admin_url: str
    """A URL to any database on the server, used to create and drop per-test databases."""
    nats_url: str
    embedded_nats: EmbeddedNats | None = None
    base_dir: Path | None = None

    def database_url(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_url, dbname=name)


class Infra(msgspec.Struct):
    """What one test gets: its own database, stream and subject prefix."""

    database_url: str
    nats_url: str
    stream: str
    subject_prefix: str
    master_key: str


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    db_url = os.environ.get("LEADLEDGER_TEST_DATABASE_URL")
    nats_url = os.environ.get("LEADLEDGER_TEST_NATS_URL")
    base = Path(tempfile.mkdtemp(prefix=f"leadledger-test-{_worker()}-"))
    postgres = None
    embedded_nats = None
    if db_url is None:
        postgres = EmbeddedPostgres(base, delete_on_stop=True)
        db_url = postgres.url("postgres")
    if nats_url is None:
        embedded_nats = EmbeddedNats(base)
        nats_url = embedded_nats.url
    yield Servers(admin_url=db_url, nats_url=nats_url, embedded_nats=embedded_nats, base_dir=base)
    if embedded_nats is not None:
        embedded_nats.stop()
    if postgres is not None:
        postgres.stop()


@pytest.fixture(scope="session")
def template_db(servers: Servers) -> str:
    """A migrated database that every test's database is cloned from."""
    name = f"ll_template_{_worker()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    asyncio.run(migrate(servers.database_url(name)))
    yield name
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def infra(servers: Servers, template_db: str) -> Iterator[Infra]:
    suffix = uuid.uuid4().hex[:10]
    name = f"ll_test_{suffix}"
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield Infra(
        database_url=servers.database_url(name),
        nats_url=servers.nats_url,
        stream=f"LLTEST_{suffix}",
        subject_prefix=f"lltest{suffix}",
        master_key=generate_master_key(),
    )
    with psycopg.connect(servers.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    asyncio.run(_delete_stream(servers.nats_url, f"LLTEST_{suffix}"))


async def _delete_stream(url: str, stream: str) -> None:
    try:
        nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=1)
    except Exception:  # the server may have been stopped by the test itself
        return
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:
        pass
    finally:
        await nc.close()


@pytest.fixture
async def pool(infra: Infra) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(infra.database_url, min_size=1, max_size=20, name="test")
    yield pool
    await pool.close()


@pytest.fixture
def keyring(infra: Infra) -> Keyring:
    return Keyring(parse_master_key(infra.master_key))


@pytest.fixture
def store(pool: AsyncConnectionPool, keyring: Keyring) -> EventStore:
    return EventStore(pool, keyring)
