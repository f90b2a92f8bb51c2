"""Leases: exactly one active holder per name (the relay, each projection runner) across processes.

A lease is a session-level `pg_advisory_lock` held on a connection of its own. PostgreSQL
releases it when that session ends, so a holder that dies (kill -9, lost host) gives the lease
up as soon as its connection drops; TCP keepalives bound how long a silent peer keeps it.
Standbys poll with `pg_try_advisory_lock` and take over within a poll interval.

The holder also writes through the lease connection (checkpoints, projection batches): if the
connection is gone, so is the lease, and the write fails instead of racing the new holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable

import psycopg
import structlog
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from ledger.database import session_options

log = structlog.get_logger(__name__)

# The server drops a client that stops answering after idle + interval * count seconds; the
# client side gives up on a server the same way. Unix sockets ignore both.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}
_SERVER_KEEPALIVES = (
    " -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
)


def lock_id(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name (`lease:relay`, `apply:lead`, ...)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def wait_for_stop(stop: asyncio.Event, timeout: float) -> bool:
    """Sleeps up to `timeout` seconds; returns True as soon as `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout)
    return stop.is_set()


def pool_conninfo(pool: AsyncConnectionPool) -> str:
    """The connection string a pool was opened with: leases connect beside the pool."""
    if not isinstance(pool.conninfo, str):
        raise TypeError("a lease needs a pool opened with a plain connection string")
    return pool.conninfo


class LeaseLost(RuntimeError):
    """The lease connection dropped: another holder may be active now."""


class Lease:
    def __init__(self, conninfo: str, name: str, *, poll_s: float = 0.5) -> None:
        self.conninfo = conninfo
        self.name = name
        self.key = lock_id(f"lease:{name}")
        self.poll_s = poll_s
        self._conn: psycopg.AsyncConnection | None = None

    @property
    def conn(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            raise LeaseLost(f"the {self.name} lease is not held")
        return self._conn

    async def acquire(self, stop: asyncio.Event, *, after_loss: bool = False) -> bool:
        """Waits until this process holds the lease (True) or `stop` is set (False).
        `after_loss` waits a poll interval first: a holder whose session just died may be
        unhealthy, so the standbys get the first chance."""
        if after_loss and await wait_for_stop(stop, self.poll_s):
            return False
        logged = False
        while not stop.is_set():
            try:
                if await self._try_lock():
                    log.info("lease acquired", lease=self.name)
                    return True
            except psycopg.OperationalError as exc:
                log.warning("lease connection failed", lease=self.name, error=str(exc))
                await self.release()
            if not logged:
                log.info("standing by for the lease", lease=self.name)
                logged = True
            await wait_for_stop(stop, self.poll_s)
        return False

    async def _try_lock(self) -> bool:
        if self._conn is None or self._conn.closed:
            conninfo = make_conninfo(
                self.conninfo,
                application_name=f"leadledger-{self.name}",
                options=session_options() + _SERVER_KEEPALIVES,
                **_KEEPALIVES,
            )
            self._conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        cur = await self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        row = await cur.fetchone()
        return bool(row and row[0])

    async def serve(self, stop: asyncio.Event, work: Callable[[], Awaitable[None]]) -> None:
        """Until `stop`: stands by for the lease, runs `work` while holding it, and stands by
        again if the lease connection drops (PostgreSQL errors end the holding, not the loop)."""
        try:
            lost = False
            while await self.acquire(stop, after_loss=lost):
                lost = True
                try:
                    await work()
                except (LeaseLost, psycopg.OperationalError) as exc:
                    log.warning("lease lost", lease=self.name, error=str(exc))
                finally:
                    await self.release()
        finally:
            await self.release()

    async def release(self) -> None:
        """Closing the session releases the lock (and any LISTEN) with it."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()
