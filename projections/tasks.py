"""The tasks read model (table `tasks`, migration 0027): every follow-up task of every lead.

One row per task, keyed by (workspace, task id): opened by `LeadTaskOpened`, moved by
`LeadTaskReassigned` (assignee, due time, the escalated flag, which stays once set), closed by
`LeadTaskCompleted`; `LeadErased` deletes the lead's rows. Each row remembers the stream version
and time of the last event applied to it: an event at or below that version changes nothing, so
applying a batch twice gives the same rows.

Its queries serve GET /v1/tasks (keyset pages by due time, then task id), the task endpoints
(one task by id) and the overdue sweeper (processors/overdue.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from ledger.store import RecordedEvent
from schema.events import LeadErased, LeadTaskCompleted, LeadTaskOpened, LeadTaskReassigned

NAME = "tasks"
TABLE = "tasks"
OPEN, DONE = "open", "done"


class TaskRow(msgspec.Struct, frozen=True, kw_only=True):
    task_id: str
    lead_id: str
    kind: str
    assignee: str | None
    due_at: datetime
    status: str
    escalated: bool
    reason: str
    outcome: str | None
    opened_at: datetime
    completed_at: datetime | None


class TasksProjection:
    name = NAME
    handles = (LeadTaskOpened, LeadTaskCompleted, LeadTaskReassigned, LeadErased)

    def __init__(self, table: str = TABLE) -> None:
        self.table = table
        self.tables: tuple[str, ...] = (table,)
        t = sql.Identifier(table)
        self._open = sql.SQL(
            "INSERT INTO {} (workspace, task_id, lead_id, kind, assignee, due_at, status, reason, "
            "opened_at, changed_at, lead_version) VALUES (%s, %s, %s, %s, %s, %s, 'open', %s, "
            "%s, %s, %s) ON CONFLICT (workspace, task_id) DO NOTHING"
        ).format(t)
        # `lead_version < %s`: an event already applied (a redelivered batch) changes nothing.
        self._complete = sql.SQL(
            "UPDATE {} SET status = 'done', outcome = %s, completed_at = %s, changed_at = %s, "
            "lead_version = %s WHERE workspace = %s AND task_id = %s AND lead_version < %s"
        ).format(t)
        self._reassign = sql.SQL(
            "UPDATE {} SET assignee = %s, due_at = coalesce(%s, due_at), "
            "escalated = escalated OR %s, changed_at = %s, lead_version = %s "
            "WHERE workspace = %s AND task_id = %s AND lead_version < %s"
        ).format(t)
        self._erase = sql.SQL("DELETE FROM {} WHERE workspace = %s AND lead_id = %s").format(t)

    def shadow(self, suffix: str) -> TasksProjection:
        return TasksProjection(self.table + suffix)

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        return None

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """In the runner's transaction, one statement per task event, in ledger order."""
        async with conn.cursor() as cur:
            for recorded in events:
                statement = self._statement(recorded)
                if statement is not None:
                    await cur.execute(*statement)

    def _statement(self, recorded: RecordedEvent) -> tuple[Any, tuple[Any, ...]] | None:
        event, ws, at, version = (recorded.event, recorded.workspace, recorded.recorded_at,
                                  recorded.version)
        match event:
            case LeadTaskOpened():
                return self._open, (ws, event.task_id, recorded.stream_id, event.kind,
                                    event.assignee, event.due_at, event.reason, at, at, version)
            case LeadTaskCompleted():
                return self._complete, (event.outcome, at, at, version, ws, event.task_id,
                                        version)
            case LeadTaskReassigned():
                return self._reassign, (event.assignee, event.due_at, event.escalated, at,
                                        version, ws, event.task_id, version)
            case LeadErased():
                return self._erase, (ws, recorded.stream_id)
        return None


# -- queries ----------------------------------------------------------------------------------

_COLUMNS = """task_id, lead_id, kind, assignee, due_at, status, escalated, reason, outcome,
opened_at, completed_at"""


def _row(values: tuple) -> TaskRow:
    return TaskRow(**dict(zip(TaskRow.__struct_fields__, values, strict=True)))


async def get_task(conn: psycopg.AsyncConnection, workspace: str, task_id: str) -> TaskRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE workspace = %s AND task_id = %s",
        (workspace, task_id),
    )
    values = await cur.fetchone()
    return _row(values) if values else None


async def page_tasks(
    conn: psycopg.AsyncConnection, workspace: str, *, assignee: str | None, status: str | None,
    overdue: bool | None, lead_id: str | None, after: tuple[datetime, str] | None, limit: int,
    now: datetime,
) -> list[TaskRow]:
    """Tasks by due time (then id), after the keyset `after`. Overdue: open and past due."""
    where = [sql.SQL("workspace = %s")]
    params: list[Any] = [workspace]
    if assignee is not None:
        where.append(sql.SQL("assignee = %s"))
        params.append(assignee)
    if status is not None:
        where.append(sql.SQL("status = %s"))
        params.append(status)
    if overdue is not None:
        where.append(sql.SQL("(status = 'open' AND due_at < %s) = %s"))
        params += [now, overdue]
    if lead_id is not None:
        where.append(sql.SQL("lead_id = %s"))
        params.append(lead_id)
    if after is not None:
        where.append(sql.SQL("(due_at, task_id) > (%s, %s)"))
        params += list(after)
    query = sql.SQL("SELECT {} FROM tasks WHERE {} ORDER BY due_at, task_id LIMIT %s").format(
        sql.SQL(_COLUMNS), sql.SQL(" AND ").join(where))
    cur = await conn.execute(query, (*params, limit))
    return [_row(v) for v in await cur.fetchall()]


async def overdue_tasks(
    conn: psycopg.AsyncConnection, workspace: str, now: datetime, limit: int
) -> list[TaskRow]:
    """Open, not yet escalated and past due: what the overdue sweeper acts on."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM tasks WHERE workspace = %s AND status = 'open' "
        "AND NOT escalated AND due_at < %s ORDER BY due_at, task_id LIMIT %s",
        (workspace, now, limit),
    )
    return [_row(v) for v in await cur.fetchall()]
