"""The duplicate review queue (table `duplicate_candidates`): open suspicions, best first.

Fed by LeadDuplicateSuspected; a dismissal, a merge of the pair, or the end of either lead
(merged away, erased) closes the suspicion. Its queries page through the queue by cursor.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg
from psycopg import sql

from ledger.store import RecordedEvent
from schema.events import (
    LeadDuplicateDismissed,
    LeadDuplicateSuspected,
    LeadErased,
    LeadMerged,
    LeadMergedInto,
)

NAME = "duplicates"
TABLE = "duplicate_candidates"


class DuplicateRow(msgspec.Struct, frozen=True):
    lead_id: str
    other_id: str
    score: float
    matched: list[str]
    exact: bool
    suspected_at: datetime


class DuplicatesProjection:
    name = NAME
    handles = (LeadDuplicateSuspected, LeadDuplicateDismissed, LeadMerged, LeadMergedInto,
               LeadErased)

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        self.tables: tuple[str, ...] = (table,)
        t = sql.Identifier(table)
        self._insert = sql.SQL(
            "INSERT INTO {} (workspace, lead_id, other_id, score, matched, exact, suspected_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (workspace, lead_id, other_id)"
            " DO UPDATE SET score = excluded.score, matched = excluded.matched,"
            " exact = excluded.exact"
        ).format(t)
        self._close_pair = sql.SQL(
            "DELETE FROM {} WHERE workspace = %s AND ((lead_id = %s AND other_id = %s)"
            " OR (lead_id = %s AND other_id = %s))"
        ).format(t)
        self._close_lead = sql.SQL(
            "DELETE FROM {} WHERE workspace = %s AND (lead_id = %s OR other_id = %s)"
        ).format(t)

    def shadow(self, suffix: str) -> DuplicatesProjection:
        return DuplicatesProjection(self.table + suffix)

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        return None

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """Runs in the runner's transaction; each event applies once, in ledger order."""
        for r in events:
            ws, lead = r.workspace, r.stream_id
            match r.event:
                case LeadDuplicateSuspected():
                    e = r.event
                    await conn.execute(self._insert, (
                        ws, lead, e.other_id, e.score, list(e.matched), e.exact, r.recorded_at
                    ))
                case LeadDuplicateDismissed():
                    other = r.event.other_id
                    await conn.execute(self._close_pair, (ws, lead, other, other, lead))
                case LeadMerged():
                    other = r.event.absorbed_id
                    await conn.execute(self._close_pair, (ws, lead, other, other, lead))
                case LeadMergedInto() | LeadErased():
                    await conn.execute(self._close_lead, (ws, lead, lead))
                case _:
                    pass


_QUEUE = """
SELECT lead_id, other_id, score, matched, exact, suspected_at
FROM duplicate_candidates
WHERE workspace = %s AND (suspected_at, lead_id, other_id) > (%s, %s, %s)
ORDER BY suspected_at, lead_id, other_id
LIMIT %s
"""
_PAIR = """
SELECT lead_id, other_id, score, matched, exact, suspected_at FROM duplicate_candidates
WHERE workspace = %s AND lead_id = %s AND other_id = %s
"""

_EPOCH = datetime(1970, 1, 1).astimezone()


async def list_queue(
    conn: psycopg.AsyncConnection, workspace: str,
    after: tuple[datetime, str, str] | None, limit: int,
) -> list[DuplicateRow]:
    after = after or (_EPOCH, "", "")
    cur = await conn.execute(_QUEUE, (workspace, *after, limit))
    return [DuplicateRow(*row) for row in await cur.fetchall()]


async def get_pair(
    conn: psycopg.AsyncConnection, workspace: str, lead_id: str, other_id: str
) -> DuplicateRow | None:
    cur = await conn.execute(_PAIR, (workspace, lead_id, other_id))
    row = await cur.fetchone()
    return DuplicateRow(*row) if row else None
