"""Where the pipeline stands: the ledger's head and readable horizon, and how far the relay and
each projection lag behind it (`leadledger status`)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import RELAY, Checkpoint, all_checkpoints
from ledger.store import EventStore
from projections.duplicates import NAME as DUPLICATES_PROJECTION
from projections.leads import NAME as LEAD_PROJECTION
from schema.positions import LogPosition

PROJECTIONS: tuple[str, ...] = (LEAD_PROJECTION, DUPLICATES_PROJECTION)
"""Every projection the workers run; reported even before their first checkpoint."""

# How many events a reader still has to process: everything stored after its checkpoint,
# including rows not yet below the gap-safe horizon (they are coming). Served by the
# (transaction_id, position) index. Belongs in EventStore once the ledger grows a method for it.
_COUNT_AFTER = "SELECT count(*) FROM events WHERE (transaction_id, position) > (%s, %s)"


class HasStoreAndPool(Protocol):
    """The part of api.runtime.Runtime used here (projections may not import api)."""

    store: EventStore
    pool: AsyncConnectionPool


class ReaderStatus(msgspec.Struct, frozen=True):
    name: str
    checkpoint: LogPosition
    lag_events: int
    updated_at: datetime | None
    """When the checkpoint last moved; None if the reader never ran."""


class StatusReport(msgspec.Struct, frozen=True):
    head: int
    """The highest position written (committed or not)."""
    horizon: LogPosition
    """The last event a gap-safe reader can see now."""
    relay: ReaderStatus
    projections: list[ReaderStatus]


async def status(runtime: HasStoreAndPool) -> StatusReport:
    """`runtime` is an api.runtime.Runtime (anything with `.store` and `.pool`)."""
    return await pipeline_status(runtime.store, runtime.pool)


async def pipeline_status(store: EventStore, pool: AsyncConnectionPool) -> StatusReport:
    head = await store.head()
    horizon = await store.horizon()
    async with pool.connection() as conn:
        checkpoints = {c.name: c for c in await all_checkpoints(conn)}
        names = list(PROJECTIONS) + sorted(set(checkpoints) - set(PROJECTIONS) - {RELAY})
        readers = [await _reader(conn, name, checkpoints.get(name)) for name in [RELAY, *names]]
    return StatusReport(head=head, horizon=horizon, relay=readers[0], projections=readers[1:])


async def _reader(
    conn: psycopg.AsyncConnection, name: str, checkpoint: Checkpoint | None
) -> ReaderStatus:
    position = checkpoint.position if checkpoint else LogPosition()
    cur = await conn.execute(_COUNT_AFTER, (position.transaction_id, position.position))
    row = await cur.fetchone()
    return ReaderStatus(
        name=name,
        checkpoint=position,
        lag_events=row[0] if row else 0,
        updated_at=checkpoint.updated_at if checkpoint else None,
    )
