"""Rebuilds a read model from the ledger (`leadledger replay lead`), or checks the live one.

The rebuild replays the whole ledger into shadow tables (`<table>_rebuild`, created LIKE the
live tables, see projections/shadow_tables.py) batch by batch, while the live tables keep
serving reads and the live runner keeps applying; then indexes the shadows. Then, in ONE
transaction holding the projection's apply lock (so the live runner waits), it applies the tail
written since, swaps the shadows in (indexes renamed back to their canonical names), sets the
checkpoint and drops the old tables. Readers see the old model or the new one, never a mix.

`check` rebuilds the same way but, instead of swapping, compares the shadow with the live model
at the live checkpoint and reports every difference. (One legitimate kind of difference exists:
when a lead's versions commit out of ledger order, whichever model met the gap read the lead's
whole tail at that moment, so it may stand at a later version than its checkpoint implies.)

Throughput: reading batch N+1 overlaps applying batch N, and the cyclic garbage collector is
relaxed for the duration (a replay allocates millions of short-lived objects and no cycles).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import read_checkpoint, set_checkpoint
from ledger.lease import lock_id
from ledger.store import EventStore, RecordedEvent
from projections import shadow_tables
from projections.leads import LeadDifference, LeadsProjection, diff_leads
from projections.runner import Projection, apply_lock_id
from schema.positions import LogPosition

log = structlog.get_logger(__name__)


Progress = Callable[[int, int], None]
"""Called after each batch with (events replayed so far, estimated total)."""

Compare = Callable[[psycopg.AsyncConnection, str, str], Awaitable[list[LeadDifference]]]


class RebuildBusy(RuntimeError):
    """Another rebuild of the same projection is running."""


class RebuildReport(msgspec.Struct, kw_only=True):
    projection: str
    events: int
    """Events replayed, the tail applied under the lock included."""
    position: LogPosition
    """The ledger position the rebuilt model stands at (its checkpoint if swapped)."""
    seconds: float
    swapped: bool
    differences: list[LeadDifference] = []
    """check mode: every lead where the live model differs from the rebuilt one."""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def rebuild_leads(
    store: EventStore,
    pool: AsyncConnectionPool,
    *,
    check: bool = False,
    progress: Progress | None = None,
    batch_size: int = 10_000,
) -> RebuildReport:
    """`leadledger replay lead` (and `--check`)."""
    return await rebuild(
        LeadsProjection(store), store, pool,
        check=check, progress=progress, compare=diff_leads, batch_size=batch_size,
    )


async def rebuild(
    projection: Projection,
    store: EventStore,
    pool: AsyncConnectionPool,
    *,
    check: bool,
    progress: Progress | None,
    compare: Compare | None = None,
    batch_size: int = 10_000,
) -> RebuildReport:
    started = time.monotonic()
    shadow = projection.shadow(shadow_tables.SUFFIX)
    async with (
        pool.connection() as guard,
        _exclusive(guard, projection.name),
        pool.connection() as conn,
    ):
        pairs = list(zip(projection.tables, shadow.tables, strict=True))
        for table, shadow_table in pairs:
            await shadow_tables.create(conn, table, shadow_table)
        try:
            with _relaxed_gc():
                replay = _Replay(store, shadow, conn, pool, batch_size, progress)
                await replay.run(live_name=projection.name if check else None)
            indexes = [await shadow_tables.build_indexes(conn, *pair) for pair in pairs]
            report = await _finish(replay, projection, conn, check, compare, indexes)
        finally:
            for _, shadow_table in pairs:
                await shadow_tables.drop(conn, shadow_table)
    report.seconds = time.monotonic() - started
    log.info("rebuild finished", projection=projection.name, events=report.events,
             events_per_second=round(report.events_per_second), swapped=report.swapped,
             differences=len(report.differences))
    return report


@contextlib.asynccontextmanager
async def _exclusive(conn: psycopg.AsyncConnection, name: str):
    """One rebuild per projection at a time (they share the shadow tables)."""
    key = lock_id(f"rebuild:{name}")
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    row = await cur.fetchone()
    if not (row and row[0]):
        raise RebuildBusy(f"a rebuild of {name} is already running")
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextlib.contextmanager
def _relaxed_gc() -> Iterator[None]:
    previous = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*previous)


class _Replay:
    """Replays the ledger into the shadow: a reader task stays one batch ahead of the writer."""

    def __init__(
        self,
        store: EventStore,
        shadow: Projection,
        conn: psycopg.AsyncConnection,
        pool: AsyncConnectionPool,
        batch_size: int,
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.shadow = shadow
        self.conn = conn
        self.pool = pool
        self.batch_size = batch_size
        self.progress = progress
        self.position = LogPosition()
        self.events = 0
        self.total = 0

    async def run(self, live_name: str | None) -> None:
        """Replays up to the readable horizon, or (check mode) up to the live checkpoint."""
        self.total = await self.store.head()
        queue: asyncio.Queue[list[RecordedEvent]] = asyncio.Queue(maxsize=2)
        reader = asyncio.create_task(self._read(queue, live_name))
        try:
            while events := await queue.get():
                async with self.conn.transaction():
                    await self.shadow.apply(self.conn, events)
                self.position = events[-1].log_position
                self._done(len(events))
            async with self.conn.transaction():
                await self.shadow.flush(self.conn)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self, queue: asyncio.Queue[list[RecordedEvent]], live_name: str | None) -> None:
        position = LogPosition()
        while True:
            events = await self.store.read_all(position, self.batch_size)
            full = len(events) == self.batch_size
            if live_name is not None:
                limit = await self._checkpoint(live_name)
                events = [e for e in events if e.log_position <= limit]
                full = full and len(events) == self.batch_size
            if events:
                await queue.put(events)
                position = events[-1].log_position
            if not full:
                await queue.put([])
                return

    async def _checkpoint(self, name: str) -> LogPosition:
        async with self.pool.connection() as conn:
            return await read_checkpoint(conn, name)

    async def tail(self, until: LogPosition | None) -> None:
        """Applies what was written since, on the caller's open transaction."""
        while True:
            events = await self.store.read_all(self.position, self.batch_size, conn=self.conn)
            if until is not None:
                events = [e for e in events if e.log_position <= until]
            if not events:
                return
            await self.shadow.apply(self.conn, events)
            self.position = events[-1].log_position
            self._done(len(events))

    def _done(self, count: int) -> None:
        self.events += count
        self.total = max(self.total, self.events)
        if self.progress is not None:
            self.progress(self.events, self.total)


async def _finish(
    replay: _Replay,
    projection: Projection,
    conn: psycopg.AsyncConnection,
    check: bool,
    compare: Compare | None,
    indexes: list[list[shadow_tables.ShadowIndex]],
) -> RebuildReport:
    """The tail and the swap (or the comparison), in one transaction under the apply lock."""
    differences: list[LeadDifference] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (apply_lock_id(projection.name),))
        live = await read_checkpoint(conn, projection.name)
        if check:
            await replay.tail(until=live)
            if compare is not None:
                for table, shadow in zip(projection.tables, replay.shadow.tables, strict=True):
                    differences += await compare(conn, table, shadow)
            replay.position = live
        else:
            await replay.tail(until=None)
            pairs = zip(projection.tables, replay.shadow.tables, indexes, strict=True)
            for table, shadow, shadow_indexes in pairs:
                await shadow_tables.swap(conn, table, shadow, shadow_indexes)
            await set_checkpoint(conn, projection.name, replay.position)
    return RebuildReport(
        projection=projection.name, events=replay.events, position=replay.position,
        seconds=0.0, swapped=not check, differences=differences,
    )
