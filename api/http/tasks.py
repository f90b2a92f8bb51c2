"""/v1/tasks: follow-up tasks (routing opens them; projections/tasks.py lists them).

`GET /v1/tasks` pages through the workspace's tasks by due time, filtered by assignee, status,
overdue (open and past due) and lead. Completing and reassigning are commands on the task's
lead (CompleteTask, ReassignTask through the one command path), so they appear in the lead's
history with who, when and why. Completing a completed task changes nothing (200); reassigning
one is 409. The list is the read model: a task opened a moment ago may take a moment to appear.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from msgspec import Meta

from api.http.context import write_metadata
from api.http.cursors import decode_query_cursor, encode_cursor, query_hash
from api.http.problems import ProblemError, problem_responses
from api.http.representations import SINGLE_LINE, Reason
from api.http.services import Services
from ledger.errors import InvalidValue
from ledger.lead_commands import CommandResult
from projections.tasks import DONE, OPEN, TaskRow, get_task, page_tasks
from schema.commands import CompleteTask, LeadCommand, ReassignTask

Status = Literal["open", "done"]


class TaskView(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    lead_id: str
    kind: Annotated[str, Meta(description="`follow-up` (of an assignment) or `score-band` "
                              "(the lead crossed into a band with an SLA).")]
    assignee: str | None
    due_at: datetime
    status: Status
    overdue: Annotated[bool, Meta(description="Open and past due.")]
    escalated: Annotated[bool, Meta(description="Moved because it went overdue.")]
    reason: str
    outcome: str | None
    opened_at: datetime
    completed_at: datetime | None


class TaskPage(msgspec.Struct, frozen=True):
    data: list[TaskView]
    next_cursor: str | None = None


class CompleteBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    outcome: Annotated[Annotated[str, Meta(max_length=200, pattern=SINGLE_LINE)] | None,
                       Meta(examples=["called, meeting booked"])] = None
    reason: Reason | None = None


class ReassignBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    assignee: Annotated[Annotated[str, Meta(max_length=200, pattern=SINGLE_LINE)] | None,
                        Meta(description="The new assignee; null unassigns.")]
    due_at: Annotated[datetime | None, Meta(description="A new due time (keeps the old one "
                                            "if omitted).")] = None
    reason: Reason | None = None


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    due_at: datetime
    task_id: str


def _view(row: TaskRow, now: datetime) -> TaskView:
    return TaskView(
        id=row.task_id, lead_id=row.lead_id, kind=row.kind, assignee=row.assignee,
        due_at=row.due_at, status=row.status,  # type: ignore[arg-type]
        overdue=row.status == OPEN and row.due_at < now, escalated=row.escalated,
        reason=row.reason, outcome=row.outcome, opened_at=row.opened_at,
        completed_at=row.completed_at,
    )


class TasksController(Controller):
    path = "/v1/tasks"
    tags = ("tasks",)

    @get("/", summary="Follow-up tasks, by due time",
         responses=problem_responses(400, 401, 429))
    async def index(
        self, request: Request, services: Services,
        assignee: Annotated[str | None, Parameter(max_length=200)] = None,
        status: Status | None = None,
        overdue: Annotated[bool | None, Parameter(description="true: open and past due; "
                                                  "false: the others.")] = None,
        lead: Annotated[str | None, Parameter(max_length=200, description="A lead's id.")]
        = None,
        cursor: Annotated[str | None, Parameter(description="next_cursor of the last page.")]
        = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> TaskPage:
        workspace = request.user.key.workspace
        query = query_hash("tasks", assignee, status, overdue, lead)
        after = None
        if cursor is not None:
            decoded = decode_query_cursor(cursor, _Cursor, query)
            after = (decoded.due_at, decoded.task_id)
        now = datetime.now(UTC)
        async with services.runtime.pool.connection() as conn:
            rows = await page_tasks(conn, workspace, assignee=assignee, status=status,
                                    overdue=overdue, lead_id=lead, after=after,
                                    limit=limit + 1, now=now)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (encode_cursor(_Cursor(query, rows[-1].due_at, rows[-1].task_id))
                       if more else None)
        return TaskPage(data=[_view(r, now) for r in rows], next_cursor=next_cursor)

    @get("/{task_id:str}", summary="One task", responses=problem_responses(400, 401, 404, 429))
    async def show(self, request: Request, task_id: str, services: Services) -> TaskView:
        return _view(await _task(services, request.user.key.workspace, task_id),
                     datetime.now(UTC))

    @post("/{task_id:str}/complete", status_code=200, summary="Complete a task",
          responses=problem_responses(400, 401, 403, 404, 410, 422, 429))
    async def complete(self, request: Request, task_id: str, data: CompleteBody,
                       services: Services) -> Response[TaskView]:
        row = await _task(services, request.user.key.workspace, task_id)
        result = await _execute(request, services, row,
                                CompleteTask(task_id=task_id, outcome=data.outcome), data.reason)
        done = msgspec.structs.replace(
            row, status=DONE, outcome=data.outcome if result.events else row.outcome,
            completed_at=row.completed_at or datetime.now(UTC),
        )
        return _reply(done, result)

    @post("/{task_id:str}/reassign", status_code=200, summary="Reassign a task",
          responses=problem_responses(400, 401, 403, 404, 409, 410, 422, 429))
    async def reassign(self, request: Request, task_id: str, data: ReassignBody,
                       services: Services) -> Response[TaskView]:
        row = await _task(services, request.user.key.workspace, task_id)
        command = ReassignTask(task_id=task_id, assignee=data.assignee, previous=row.assignee,
                               due_at=data.due_at, reason=data.reason or "")
        try:
            result = await _execute(request, services, row, command, data.reason)
        except InvalidValue as exc:
            if exc.field != "task_id":
                raise
            raise ProblemError("conflict", f"task {task_id} is not open") from None
        moved = msgspec.structs.replace(row, assignee=data.assignee,
                                        due_at=data.due_at or row.due_at)
        return _reply(moved, result)


async def _task(services: Services, workspace: str, task_id: str) -> TaskRow:
    async with services.runtime.pool.connection() as conn:
        row = await get_task(conn, workspace, task_id)
    if row is None:
        raise ProblemError("not-found", f"no task {task_id}")
    return row


async def _execute(request: Request, services: Services, row: TaskRow, command: LeadCommand,
                   reason: str | None) -> CommandResult:
    return await services.runtime.commands.execute(
        request.user.key.workspace, row.lead_id, command, write_metadata(request, reason),
    )


def _reply(row: TaskRow, result: CommandResult) -> Response[TaskView]:
    headers = {"X-Consistency-Token": result.position.token()} if result.position else {}
    return Response(_view(row, datetime.now(UTC)), headers=headers)
