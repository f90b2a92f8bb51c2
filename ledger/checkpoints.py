"""Checkpoints: how far each reader of the global log (the relay, every projection) has got.

All SQL against the `checkpoints` table lives here. Projections re-export it from
projections/checkpoints.py; it sits in the ledger package because the relay, which may import
only `schema` and `ledger`, checkpoints too.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg

from schema.positions import LogPosition

RELAY = "relay"
"""The relay's checkpoint: the last event whose PubAck it holds."""

_READ = "SELECT transaction_id, position FROM checkpoints WHERE name = %s"

# Checkpoints only move forward: a reader that lost its lease and writes late (or a replayed
# batch) can never take another reader's progress back.
_ADVANCE = """
INSERT INTO checkpoints AS c (name, transaction_id, position) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE
SET transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()
WHERE (c.transaction_id, c.position) < (excluded.transaction_id, excluded.position)
"""

# Compare and advance in one statement, for a reader with no tables to write (a reactor):
# returns the checkpoint as stored before, locked, so that the caller can tell a reset (stored
# behind what it expected) from a move it makes; moves it only forward.
_ADVANCE_FROM = """
WITH stored AS (
    SELECT name, transaction_id, position FROM checkpoints WHERE name = %(name)s FOR UPDATE
), moved AS (
    UPDATE checkpoints c
    SET transaction_id = %(tx)s, position = %(pos)s, updated_at = now()
    FROM stored s
    WHERE c.name = s.name
      AND (s.transaction_id, s.position) >= (%(expected_tx)s, %(expected_pos)s)
      AND (s.transaction_id, s.position) < (%(tx)s, %(pos)s)
)
SELECT transaction_id, position FROM stored
"""

# Only a rebuild sets a checkpoint outright: it has just replaced the read model wholesale.
_SET = """
INSERT INTO checkpoints (name, transaction_id, position) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE
SET transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()
"""

_ALL = "SELECT name, transaction_id, position, updated_at FROM checkpoints ORDER BY name"


class Checkpoint(msgspec.Struct, frozen=True):
    name: str
    position: LogPosition
    updated_at: datetime


async def read_checkpoint(conn: psycopg.AsyncConnection, name: str) -> LogPosition:
    """The named reader's position; the origin when it never ran."""
    cur = await conn.execute(_READ, (name,))
    row = await cur.fetchone()
    return LogPosition(row[0], row[1]) if row else LogPosition()


async def advance_checkpoint(
    conn: psycopg.AsyncConnection, name: str, position: LogPosition
) -> None:
    await conn.execute(_ADVANCE, (name, position.transaction_id, position.position))


async def advance_checkpoint_from(
    conn: psycopg.AsyncConnection, name: str, expected: LogPosition, position: LogPosition
) -> LogPosition:
    """Advances the checkpoint to `position` if it is stored at `expected` or later (and
    behind `position`), in one statement outside any transaction; returns it as it was stored
    before (the origin when it never was). A result behind `expected` means someone reset it:
    nothing was written."""
    cur = await conn.execute(_ADVANCE_FROM, {
        "name": name, "tx": position.transaction_id, "pos": position.position,
        "expected_tx": expected.transaction_id, "expected_pos": expected.position,
    })
    row = await cur.fetchone()
    if row is not None:
        return LogPosition(row[0], row[1])
    if expected == LogPosition():  # never written: the first write inserts it
        await advance_checkpoint(conn, name, position)
    return LogPosition()


async def set_checkpoint(conn: psycopg.AsyncConnection, name: str, position: LogPosition) -> None:
    await conn.execute(_SET, (name, position.transaction_id, position.position))


async def all_checkpoints(conn: psycopg.AsyncConnection) -> list[Checkpoint]:
    cur = await conn.execute(_ALL)
    return [Checkpoint(n, LogPosition(tx, pos), at) for n, tx, pos, at in await cur.fetchall()]
