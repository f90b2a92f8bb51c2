"""Checkpoints against a real PostgreSQL: a reader's compare-and-advance moves its checkpoint
only forward, only from where the reader left it, and tells a reset apart."""

from __future__ import annotations

import asyncio

from ledger.checkpoints import (
    advance_checkpoint_from,
    read_checkpoint,
    set_checkpoint,
)
from schema.positions import ORIGIN, LogPosition


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
