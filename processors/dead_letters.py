"""The dead-letter table: events a processor gave up on, parked for people to inspect.

A reactor retries an event a bounded number of times (tenacity, exponential backoff with
jitter); when it still fails, the event is parked here with the last error and the reactor moves
on, so one bad lead never stalls the pipeline. An operator lists them (GET /v1/dead-letters),
asks for a retry (the status becomes `retrying`; the reactor that owns the row runs the event
again on its next idle moment and marks it `resolved`, or parks it again) or discards them.
All SQL against `dead_letters` lives here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import psycopg

from ledger.store import RecordedEvent

PARKED, RETRYING, RESOLVED, DISCARDED = "parked", "retrying", "resolved", "discarded"
STATUSES = (PARKED, RETRYING, RESOLVED, DISCARDED)
MAX_ERROR_LENGTH = 2_000


class DeadLetter(msgspec.Struct, frozen=True):
    workspace: str
    reactor: str
    event_id: str
    stream_id: str
    event_type: str
    transaction_id: int
    position: int
    error: str
    attempts: int
    status: str
    parked_at: datetime
    updated_at: datetime


_COLUMNS = (
    "workspace, reactor, event_id, stream_id, event_type, transaction_id, position, error, "
    "attempts, status, parked_at, updated_at"
)

# A second failure of the same event (a retry that failed again) parks it anew, counting on.
_PARK = """
INSERT INTO dead_letters AS d
    (workspace, reactor, event_id, stream_id, event_type, transaction_id, position, error, attempts)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (workspace, reactor, event_id) DO UPDATE
SET error = excluded.error, attempts = d.attempts + excluded.attempts, status = 'parked',
    updated_at = now()
"""

_SET_STATUS = """
UPDATE dead_letters SET status = %s, updated_at = now()
WHERE workspace = %s AND reactor = %s AND event_id = %s AND status = ANY(%s)
RETURNING """ + _COLUMNS

_RETRYING = f"""
SELECT {_COLUMNS} FROM dead_letters WHERE reactor = %s AND status = 'retrying'
ORDER BY transaction_id, position LIMIT %s
"""

_PAGE = f"""
SELECT {_COLUMNS} FROM dead_letters
WHERE workspace = %s AND (%s::text IS NULL OR reactor = %s) AND (%s::text IS NULL OR status = %s)
  AND (parked_at, event_id) > (%s, %s)
ORDER BY parked_at, event_id LIMIT %s
"""

_ONE = f"""
SELECT {_COLUMNS} FROM dead_letters WHERE workspace = %s AND reactor = %s AND event_id = %s
"""

_COUNTS = """
SELECT reactor, status, count(*) FROM dead_letters GROUP BY reactor, status ORDER BY 1, 2
"""


async def park(
    conn: psycopg.AsyncConnection, reactor: str, recorded: RecordedEvent, error: str,
    attempts: int,
) -> None:
    await conn.execute(_PARK, (
        recorded.workspace, reactor, recorded.event_id, recorded.stream_id,
        recorded.event.event_type, recorded.transaction_id, recorded.position,
        error[:MAX_ERROR_LENGTH], attempts,
    ))


async def set_status(
    conn: psycopg.AsyncConnection, workspace: str, reactor: str, event_id: str, status: str,
    *, only_from: tuple[str, ...],
) -> DeadLetter | None:
    """Moves a row to `status` if it is in one of `only_from`; None if there is no such row."""
    cur = await conn.execute(_SET_STATUS, (status, workspace, reactor, event_id, list(only_from)))
    row = await cur.fetchone()
    return DeadLetter(*row) if row else None


async def retrying(conn: psycopg.AsyncConnection, reactor: str, limit: int) -> list[DeadLetter]:
    cur = await conn.execute(_RETRYING, (reactor, limit))
    return [DeadLetter(*row) for row in await cur.fetchall()]


async def page(
    conn: psycopg.AsyncConnection, workspace: str, *, reactor: str | None, status: str | None,
    after: tuple[datetime, str] | None, limit: int,
) -> list[DeadLetter]:
    after_at, after_id = after or (datetime.min.replace(tzinfo=UTC), "")
    cur = await conn.execute(_PAGE, (
        workspace, reactor, reactor, status, status, after_at, after_id, limit,
    ))
    return [DeadLetter(*row) for row in await cur.fetchall()]


async def get(
    conn: psycopg.AsyncConnection, workspace: str, reactor: str, event_id: str
) -> DeadLetter | None:
    cur = await conn.execute(_ONE, (workspace, reactor, event_id))
    row = await cur.fetchone()
    return DeadLetter(*row) if row else None


async def counts(conn: psycopg.AsyncConnection) -> list[tuple[str, str, int]]:
    """(reactor, status, count) over every workspace: for `leadledger status`."""
    cur = await conn.execute(_COUNTS)
    return [(r, s, n) for r, s, n in await cur.fetchall()]
