"""Checkpoints against a real PostgreSQL: a reader's compare-and-advance moves its checkpoint
only forward, only from where the reader left it, and tells a reset apart; a projection's batch
takes no transaction id before it writes."""

from __future__ import annotations

import asyncio

from ledger.checkpoints import (
    advance_checkpoint_from,
    read_checkpoint,
    set_checkpoint,
)
from ledger.store import NewEvent
from projections.runner import apply_batch
from schema.events import LeadTagged
from schema.positions import ORIGIN, LogPosition
from tests.pipeline_support import META


async def test_the_first_advance_writes_the_checkpoint(pool):
    async with pool.connection() as conn:
        assert await advance_checkpoint_from(conn, "r1", ORIGIN, LogPosition(5, 7)) == ORIGIN
        assert await read_checkpoint(conn, "r1") == LogPosition(5, 7)


async def test_an_advance_moves_forward_from_where_the_reader_left_it(pool):
    async with pool.connection() as conn:
        await advance_checkpoint_from(conn, "r2", ORIGIN, LogPosition(5, 7))
        assert await advance_checkpoint_from(
            conn, "r2", LogPosition(5, 7), LogPosition(9, 1)) == LogPosition(5, 7)
        assert await read_checkpoint(conn, "r2") == LogPosition(9, 1)
        # A late writer (a lost lease) never takes the checkpoint back.
        assert await advance_checkpoint_from(
            conn, "r2", LogPosition(5, 7), LogPosition(6, 0)) == LogPosition(9, 1)
        assert await read_checkpoint(conn, "r2") == LogPosition(9, 1)


async def test_a_reset_checkpoint_is_reported_and_not_overwritten(pool):
    async with pool.connection() as conn:
        await advance_checkpoint_from(conn, "r3", ORIGIN, LogPosition(5, 7))
        await set_checkpoint(conn, "r3", LogPosition(2, 0))  # an operator's reset
        stored = await advance_checkpoint_from(conn, "r3", LogPosition(5, 7), LogPosition(8, 0))
        assert stored == LogPosition(2, 0) and stored < LogPosition(5, 7)
        assert await read_checkpoint(conn, "r3") == LogPosition(2, 0)
        # Deleted outright: also a reset for a reader that had got somewhere.
        await conn.execute("DELETE FROM checkpoints WHERE name = 'r3'")
        assert await advance_checkpoint_from(
            conn, "r3", LogPosition(2, 0), LogPosition(8, 0)) == ORIGIN
        assert await read_checkpoint(conn, "r3") == ORIGIN


async def test_concurrent_advances_leave_the_furthest(pool):
    async with pool.connection() as conn:
        await advance_checkpoint_from(conn, "r4", ORIGIN, LogPosition(1, 0))

    async def advance(to: int) -> None:
        async with pool.connection() as conn:
            await advance_checkpoint_from(conn, "r4", LogPosition(1, 0), LogPosition(to, 0))

    await asyncio.gather(*(advance(n) for n in (4, 9, 2, 7, 3)))
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, "r4") == LogPosition(9, 0)


class _XidProbe:
    """A projection that records whether its batch's transaction had an id when it began."""

    name = "xid-probe"
    tables: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.seen: list[object] = []

    async def apply(self, conn, events) -> None:
        cur = await conn.execute("SELECT pg_current_xact_id_if_assigned()")
        self.seen.append((await cur.fetchone())[0])

    async def flush(self, conn) -> None:
        return None

    def shadow(self, suffix: str):
        raise NotImplementedError


async def test_a_projection_batch_holds_nothing_back_before_its_first_write(pool, store):
    """Every transaction with an id holds back the ledger's gap-safe readers (the relay first):
    a batch's lock and checkpoint read must not give it one."""
    await store.append("ws", "L1", 0, [NewEvent(LeadTagged(tag="x"))], META)
    events = await store.read_all(ORIGIN)
    probe = _XidProbe()
    async with pool.connection() as conn:
        await set_checkpoint(conn, "xid-probe", ORIGIN)  # a row a lock could take
        moved = await apply_batch(conn, probe, events, ORIGIN)
        assert moved == events[-1].log_position
        assert await read_checkpoint(conn, "xid-probe") == moved
    assert probe.seen == [None]
