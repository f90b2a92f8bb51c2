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
_READ_FOR_UPDATE = _READ + " FOR UPDATE"

# Checkpoints only move forward: a reader that lost its lease and writes late (or a replayed
# batch) can never take another reader's progress back.
_ADVANCE = """
INSERT INTO checkpoints AS c (name, transaction_id, position) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE
SET transaction_id = excluded.transaction_id, position = excluded.position, updated_at = now()
WHERE (c.transaction_id, c.position) < (excluded.transaction_id, excluded.position)
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


async def read_checkpoint(
    conn: psycopg.AsyncConnection, name: str, *, for_update: bool = False
) -> LogPosition:
    """The named reader's position; the origin when it never ran. `for_update` (inside a
    transaction) holds the row until commit, serializing writers of the same checkpoint."""
    cur = await conn.execute(_READ_FOR_UPDATE if for_update else _READ, (name,))
    row = await cur.fetchone()
    return LogPosition(row[0], row[1]) if row else LogPosition()


async def advance_checkpoint(
    conn: psycopg.AsyncConnection, name: str, position: LogPosition
) -> None:
    await conn.execute(_ADVANCE, (name, position.transaction_id, position.position))


async def set_checkpoint(conn: psycopg.AsyncConnection, name: str, position: LogPosition) -> None:
    await conn.execute(_SET, (name, position.transaction_id, position.position))


async def all_checkpoints(conn: psycopg.AsyncConnection) -> list[Checkpoint]:
    cur = await conn.execute(_ALL)
    return [Checkpoint(n, LogPosition(tx, pos), at) for n, tx, pos, at in await cur.fetchall()]
