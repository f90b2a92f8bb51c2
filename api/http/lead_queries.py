"""Listing leads from the lead read model: filters, sort and keyset (cursor) pagination.

Reads the `leads` table that projections/leads.py writes (the single lead's query is that
module's `get_lead`). Pages are keyset pages over (sort column, lead_id): stable under inserts,
no offsets, and each one an index range scan on (workspace, created_at|updated_at, lead_id).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from api.http.cursors import decode_cursor, encode_cursor, query_hash
from api.http.problems import FieldError, ProblemError
from api.http.quality_queries import Rescoring
from projections.leads import COLUMNS, LeadRow

SORTS: dict[str, tuple[str, bool]] = {
    "created_at": ("created_at", False),
    "-created_at": ("created_at", True),
    "updated_at": ("updated_at", False),
    "-updated_at": ("updated_at", True),
}


class LeadFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "active"
    stage: tuple[str, ...] = ()
    owner: str | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    q: str | None = None
    quarantined: bool | None = None
    quality_below: int | None = None
    """Needs `list_leads(rescoring=...)`: the score is computed against the workspace's
    settings at query time (api/http/quality_queries.py)."""


class ListCursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    at: datetime
    lead_id: str


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(
    workspace: str, f: LeadFilter, score: sql.Composable | None = None
) -> tuple[list[sql.Composable], list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("workspace = %s"), sql.SQL("status = %s")]
    params: list[Any] = [workspace, f.status]
    if f.stage:
        clauses.append(sql.SQL("stage = ANY(%s)"))
        params.append(list(f.stage))
    if f.owner is not None:
        clauses.append(sql.SQL("owner = %s"))
        params.append(f.owner)
    if f.tags:
        clauses.append(sql.SQL("tags @> %s::text[]"))
        params.append(list(f.tags))
    if f.source is not None:
        clauses.append(sql.SQL("source = %s"))
        params.append(f.source)
    for column, op, value in (
        ("created_at", ">=", f.created_after), ("created_at", "<", f.created_before),
        ("updated_at", ">=", f.updated_after), ("updated_at", "<", f.updated_before),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(_utc(value))
    if f.q:
        # Free text over name, company and email; a trigram index can back this later.
        clauses.append(sql.SQL(
            "concat_ws(' ', first_name, last_name, company, email) ILIKE %s ESCAPE '\\'"
        ))
        params.append(_like(f.q))
    if f.quarantined is not None:
        clauses.append(sql.SQL("quarantined = %s"))
        params.append(f.quarantined)
    if f.quality_below is not None and score is not None:
        clauses.append(sql.SQL("{} < %s").format(score))
        params.append(f.quality_below)
    return clauses, params


async def list_leads(
    conn: psycopg.AsyncConnection,
    workspace: str,
    f: LeadFilter,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
    rescoring: Rescoring | None = None,
) -> tuple[list[LeadRow], str | None]:
    column, descending = SORTS[sort]
    fingerprint = query_hash(workspace, sort, msgspec.to_builtins(f))
    clauses, params = _where(workspace, f, rescoring.score if rescoring else None)
    if cursor:
        after = decode_cursor(cursor, ListCursor)
        if after.query != fingerprint:
            raise ProblemError(
                "bad-request", "the cursor belongs to a different query (sort or filters)",
                errors=[FieldError(field="query:cursor",
                                   message="use next_cursor with the same sort and filters")],
            )
        op = sql.SQL("<" if descending else ">")
        clauses.append(sql.SQL("({}, lead_id) {} (%s, %s)").format(sql.Identifier(column), op))
        params += [after.at, after.lead_id]
    direction = sql.SQL("DESC" if descending else "ASC")
    query = sql.SQL(
        "SELECT {cols} FROM leads WHERE {where} ORDER BY {col} {dir}, lead_id {dir} LIMIT %s"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS),
        where=sql.SQL(" AND ").join(clauses),
        col=sql.Identifier(column),
        dir=direction,
    )
    cur = await conn.execute(query, [*params, limit + 1])
    rows = [LeadRow(*values) for values in await cur.fetchall()]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(
            ListCursor(fingerprint, getattr(last, column), last.lead_id)
        )
    return rows, next_cursor


_BY_EMAIL = """
SELECT lead_id FROM leads
WHERE workspace = %s AND lower(email) = lower(%s) AND status IN ('active', 'archived')
ORDER BY created_at, lead_id
LIMIT %s
"""


async def leads_with_email(
    conn: psycopg.AsyncConnection, workspace: str, email: str, limit: int = 100
) -> list[str]:
    """The live leads whose email is `email` (case-insensitively; the leads_by_email index)."""
    cur = await conn.execute(_BY_EMAIL, (workspace, email, limit))
    return [row[0] for row in await cur.fetchall()]


_SUMMARIES = """
SELECT lead_id, status, first_name, last_name, email, phone, company, created_at, updated_at
FROM leads WHERE workspace = %s AND lead_id = ANY(%s)
"""


async def lead_summaries(
    conn: psycopg.AsyncConnection, workspace: str, lead_ids: list[str]
) -> dict[str, tuple[Any, ...]]:
    """A few columns of each of these leads, by id (absent: not in the read model)."""
    cur = await conn.execute(_SUMMARIES, (workspace, lead_ids))
    return {row[0]: tuple(row) for row in await cur.fetchall()}
