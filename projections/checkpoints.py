"""Projection checkpoints and read-your-writes.

The checkpoint SQL lives with the ledger (ledger/checkpoints.py) because the relay checkpoints
too; this module is what the read side calls: `wait_for` lets a query that carries the position
of a client's write wait, bounded, until a projection has applied it.
"""

from __future__ import annotations

import asyncio
import time

from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import (
    Checkpoint,
    advance_checkpoint,
    all_checkpoints,
    read_checkpoint,
    set_checkpoint,
)
from schema.positions import LogPosition

__all__ = [
    "Checkpoint",
    "advance_checkpoint",
    "all_checkpoints",
    "read_checkpoint",
    "set_checkpoint",
    "wait_for",
]

_FIRST_POLL_S = 0.005
_MAX_POLL_S = 0.1


async def wait_for(
    pool: AsyncConnectionPool, name: str, position: LogPosition, timeout: float
) -> bool:
    """True once projection `name` has applied everything up to `position`; False after
    `timeout` seconds. Polls with a short, growing interval: most waits are a few ms."""
    deadline = time.monotonic() + timeout
    delay = _FIRST_POLL_S
    while True:
        async with pool.connection() as conn:
            if await read_checkpoint(conn, name) >= position:
                return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_POLL_S)
