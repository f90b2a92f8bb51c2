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
A projection whose rows each depend on one stream only (the lead model) is replayed in
partitions, one per CPU (up to MAX_PARTITIONS): the streams are split by a hash of their id, and
each partition reads its own streams' events up to the horizon fixed at the start, folds them
and COPYs its rows into the shadow, in this process (partition 0) and in forked ones (the
others). Decoding, decrypting, folding and scoring are CPU-bound Python: one process cannot keep
up with what PostgreSQL serves. The shadow's indexes are then built as many at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import multiprocessing
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import read_checkpoint, set_checkpoint
from ledger.database import open_pool
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

ShadowPart = Callable[[EventStore], Projection]
"""A bulk shadow of the projection reading through the given store: how a partition (in this
process or a forked one) builds its share of the shadow."""

MAX_PARTITIONS = 4


def default_partitions() -> int:
    """One partition per CPU this process may run on, up to MAX_PARTITIONS; 1 (no fork) where
    forking is not the safe, cheap default (Linux only)."""
    if not sys.platform.startswith("linux"):
        return 1
    return max(1, min(MAX_PARTITIONS, len(os.sched_getaffinity(0))))


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
    partitions: int | None = None,
) -> RebuildReport:
    """`leadledger replay lead` (and `--check`). A lead's row depends on its own events only,
    so the replay runs in `partitions` (default: one per CPU)."""
    return await rebuild(
        LeadsProjection(store), store, pool,
        check=check, progress=progress, compare=diff_leads, batch_size=batch_size,
        shadow_part=_lead_shadow_part,
        partitions=default_partitions() if partitions is None else partitions,
    )


def _lead_shadow_part(store: EventStore) -> Projection:
    return LeadsProjection(store).shadow(shadow_tables.SUFFIX)


async def rebuild(
    projection: Projection,
    store: EventStore,
    pool: AsyncConnectionPool,
    *,
    check: bool,
    progress: Progress | None,
    compare: Compare | None = None,
    batch_size: int = 10_000,
    shadow_part: ShadowPart | None = None,
    partitions: int = 1,
) -> RebuildReport:
    """Rebuilds `projection` into its shadow and swaps it in (or, `check`, compares). With
    `shadow_part` (for a projection whose rows each depend on one stream's events), the replay
    reads up to the horizon fixed at the start, split by stream across `partitions` processes
    (this one and forked ones); without, it reads the gap-safe log as it goes."""
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
                live_name = projection.name if check else None
                if shadow_part is not None:
                    await replay.run_partitioned(shadow_part, max(1, partitions), live_name)
                else:
                    await replay.run(live_name)
            indexes = [
                await shadow_tables.build_indexes(conn, *pair, pool=pool, parallel=partitions)
                for pair in pairs
            ]
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

    async def run_partitioned(
        self, shadow_part: ShadowPart, partitions: int, live_name: str | None
    ) -> None:
        """Replays up to the horizon as of now (or, check mode, the live checkpoint if that is
        before it), partition 0 here and the others (if any) in forked processes; then leaves
        the shadow in its row-by-row mode for the tail."""
        self.total = await self.store.head()
        until = await self.store.horizon()
        if live_name is not None:
            until = min(until, await self._checkpoint(live_name))
        children = [
            _Partition.fork(self, shadow_part, (index, partitions), until)
            for index in range(1, partitions)
        ]
        tasks = [asyncio.create_task(self._partition(shadow_part(self.store), partitions, until))]
        tasks += [asyncio.create_task(child.wait(self._done)) for child in children]
        try:
            # Any failure (here or in a child) ends the replay at once, raised as it is.
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for child in children:
                child.stop()
        self.position = until
        async with self.conn.transaction():
            await self.shadow.flush(self.conn)  # holds nothing: the partitions wrote the rows

    async def _partition(self, shadow: Projection, partitions: int, until: LogPosition) -> None:
        # Connections of its own: if a failure elsewhere cancels this mid-query, the pool
        # discards them, and the rebuild's connection can still drop the shadow.
        async with self.pool.connection() as reader, self.pool.connection() as writer:
            await replay_partition(self.store, shadow, (0, partitions), until, self.batch_size,
                                   reader, writer, self._done)

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


async def replay_partition(
    store: EventStore,
    shadow: Projection,
    partition: tuple[int, int],
    until: LogPosition,
    batch_size: int,
    reader: psycopg.AsyncConnection,
    writer: psycopg.AsyncConnection,
    done: Callable[[int], None],
) -> None:
    """Folds one partition's events up to `until` into `shadow` and flushes it: reading batch
    N+1 (on `reader`) overlaps applying batch N (on `writer`)."""
    queue: asyncio.Queue[list[RecordedEvent]] = asyncio.Queue(maxsize=2)

    async def read() -> None:
        position = LogPosition()
        while True:
            events = await store.read_range(
                position, until, batch_size, partition=partition, conn=reader
            )
            if events:
                await queue.put(events)
                position = events[-1].log_position
            if len(events) < batch_size:
                await queue.put([])
                return

    reading = asyncio.create_task(read())
    try:
        while events := await queue.get():
            async with writer.transaction():
                await shadow.apply(writer, events)
            done(len(events))
        async with writer.transaction():
            await shadow.flush(writer)
        await reading
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


class _Partition:
    """A forked process replaying one partition into the shadow, on its own connections. It
    reports each batch (("batch", events)), then ("done", 0) or ("error", message), on a pipe."""

    def __init__(self, process: multiprocessing.process.BaseProcess, pipe: Connection) -> None:
        self.process = process
        self.pipe = pipe

    @classmethod
    def fork(
        cls, replay: _Replay, shadow_part: ShadowPart, partition: tuple[int, int],
        until: LogPosition,
    ) -> _Partition:
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        spec = (replay.pool.conninfo, replay.store, shadow_part, partition, until,
                replay.batch_size, os.getpid())
        process = context.Process(
            target=_partition_main, args=(spec, sender), daemon=True,
            name=f"rebuild-partition-{partition[0]}",
        )
        process.start()
        sender.close()
        return cls(process, receiver)

    async def wait(self, done: Callable[[int], None]) -> None:
        """Until the partition is written, passing on its progress; raises if it failed."""
        while True:
            while self.pipe.poll():
                try:
                    kind, value = self.pipe.recv()
                except EOFError:
                    raise RuntimeError(
                        f"{self.process.name} ended without finishing (exit code"
                        f" {self.process.exitcode})"
                    ) from None
                if kind == "batch":
                    done(value)
                elif kind == "done":
                    return
                else:
                    raise RuntimeError(f"{self.process.name} failed: {value}")
            if not self.process.is_alive() and not self.pipe.poll():
                raise RuntimeError(
                    f"{self.process.name} died (exit code {self.process.exitcode})"
                )
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        """Ends the process if still running (its connections close, PostgreSQL rolls its
        open transaction back), and reaps it."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(timeout=10)
        self.pipe.close()


def _partition_main(spec: tuple, pipe: Connection) -> None:
    """The forked process: a fresh event loop and pool; never logs (the parent reports)."""
    conninfo, store, shadow_part, partition, until, batch_size, parent = spec
    try:
        asyncio.run(_partition(conninfo, store, shadow_part, partition, until, batch_size,
                               parent, pipe))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        sys.exit(1)
    pipe.send(("done", 0))


async def _partition(
    conninfo: str, parent_store: EventStore, shadow_part: ShadowPart,
    partition: tuple[int, int], until: LogPosition, batch_size: int, parent: int,
    pipe: Connection,
) -> None:
    def done(count: int) -> None:
        if os.getppid() != parent:
            raise RuntimeError("the rebuild that started this partition is gone")
        pipe.send(("batch", count))

    pool = await open_pool(conninfo, min_size=2, max_size=3, name="leadledger-rebuild")
    try:
        store = EventStore(pool, parent_store.keyring, parent_store.registry)
        async with pool.connection() as reader, pool.connection() as writer:
            await replay_partition(store, shadow_part(store), partition, until, batch_size,
                                   reader, writer, done)
    finally:
        await pool.close()


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
