"""The service's connection pool: autocommit connections that always come back clean."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool

from ledger.database import IDLE_IN_TRANSACTION_TIMEOUT_MS, LedgerPool
from tests.conftest import Infra


async def test_connections_are_autocommit_with_the_session_timeout(
    pool: AsyncConnectionPool,
) -> None:
    assert isinstance(pool, LedgerPool)
    async with pool.connection() as conn:
        assert conn.autocommit
        cur = await conn.execute("SHOW idle_in_transaction_session_timeout")
        row = await cur.fetchone()
    assert row is not None and row[0] == f"{IDLE_IN_TRANSACTION_TIMEOUT_MS // 1000}s"


async def test_a_connection_left_inside_a_transaction_comes_back_rolled_back(
    pool: AsyncConnectionPool,
) -> None:
    async with pool.connection() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS pool_probe (n int)")
    with pytest.raises(RuntimeError):
        async with pool.connection() as conn:
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO pool_probe VALUES (1)")
            raise RuntimeError("the caller failed mid-transaction")
    # every connection the pool hands out afterwards is idle, and the insert never landed
    for _ in range(pool.max_size):
        async with pool.connection() as conn:
            assert conn.pgconn.transaction_status == TransactionStatus.IDLE
            cur = await conn.execute("SELECT count(*) FROM pool_probe")
            row = await cur.fetchone()
            assert row == (0,)


async def test_a_broken_connection_is_replaced(
    pool: AsyncConnectionPool, infra: Infra
) -> None:
    async with pool.connection() as conn:
        pid = conn.info.backend_pid
    async with await psycopg.AsyncConnection.connect(infra.database_url) as killer:
        await killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(psycopg.OperationalError):
        async with pool.connection() as conn:
            assert conn.info.backend_pid == pid  # the pool holds one idle connection
            await conn.execute("SELECT 1")
    async with pool.connection() as conn:
        assert conn.info.backend_pid != pid
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)
