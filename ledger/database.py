"""Connection pools for leadledger's own connections, with the session settings they need."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

# A session stuck inside a transaction holds back the gap-safe readers' horizon (they read only
# below the oldest running transaction); our own sessions give up after this long.
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000


def session_options() -> str:
    return f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"


async def _configure(conn: AsyncConnection) -> None:
    await conn.set_autocommit(True)


async def open_pool(
    conninfo: str, *, min_size: int = 2, max_size: int = 16, name: str = "leadledger"
) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs={"options": session_options(), "application_name": name},
        configure=_configure,
        open=False,
        name=name,
    )
    await pool.open(wait=True, timeout=30)
    return pool
