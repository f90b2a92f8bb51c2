"""The overdue sweeper: every few seconds, escalates open follow-up tasks that are past due.

For each workspace that routes leads it reads the tasks read model (projections/tasks.py) for
open tasks past their due time that were not escalated yet, checks each against the lead's own
stream (the read model may lag: a task completed meanwhile is left alone), and acts per the
workspace's SLA `overdue_action`:

- `escalate`: the task goes to the escalation owner (the lead's team's, else the SLA's), marked
  escalated; the lead keeps its owner. With no escalation owner it acts as `queue`.
- `reroute`: another member of the lead's team with room takes the lead and the task (chosen
  like any routing decision, stored once per task); with no team it acts as `queue`.
- `queue`: the lead goes back to the SLA's `overdue_queue` and the task is unassigned.

The escalated task is due `escalation_minutes` after its first due time. A task is escalated
once. Ids are derived from the task id (uuid5), and the decision is stored by task: several
sweepers, or one that runs a sweep twice, append each escalation once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.lead import ACTIVE, INITIAL, fold
from ledger.lead_commands import LeadCommands
from ledger.lease import wait_for_stop
from ledger.store import EventStore, RecordedEvent
from processors.routing import derived_id, execute, tasks_of
from processors.routing_store import RoutingStore
from projections.tasks import TaskRow, overdue_tasks
from schema.commands import AssignLead, ReassignTask
from schema.events import LeadTaskReassigned
from schema.routing import ESCALATE, REROUTE, TEAM, RoutingBook, Target

log = structlog.get_logger(__name__)

OVERDUE = "overdue"
BATCH = 200
"""Tasks per workspace per sweep; the rest wait for the next sweep."""


class OverdueSweeper:
    def __init__(self, store: EventStore, commands: LeadCommands, routing: RoutingStore,
                 pool: AsyncConnectionPool, *, every_s: float = 10.0) -> None:
        self.store = store
        self.commands = commands
        self.routing = routing
        self.pool = pool
        self.every_s = every_s
        self.escalated = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception:  # the next sweep tries again
                log.exception("overdue sweep failed")
            await wait_for_stop(stop, self.every_s)

    async def sweep(self, now: datetime | None = None) -> int:
        """One pass over every routing workspace; returns the tasks escalated."""
        now = now or datetime.now(UTC)
        done = 0
        for workspace in await self.routing.workspaces():
            book = await self.routing.book(workspace)
            if book is None:
                continue
            async with self.pool.connection() as conn:
                tasks = await overdue_tasks(conn, workspace, now, BATCH)
            for task in tasks:
                try:
                    done += await self._escalate(workspace, book, task)
                except Exception:  # one task must not hold up the others
                    log.exception("escalating a task failed", workspace=workspace,
                                  task_id=task.task_id, lead_id=task.lead_id)
        self.escalated += done
        return done

    async def _escalate(self, workspace: str, book: RoutingBook, task: TaskRow) -> int:
        stream = await self.store.read_stream(workspace, task.lead_id)
        state = fold([r.event for r in stream.events], INITIAL)
        known = tasks_of(stream.events).get(task.task_id)
        if state.status != ACTIVE or known is None or not known.open or any(
            isinstance(r.event, LeadTaskReassigned) and r.event.task_id == task.task_id
            and r.event.escalated for r in stream.events
        ):
            return 0
        # The sweep acts "because of" the task's last event: causation links it there.
        cause = next(r for r in reversed(stream.events) if _about(r, task.task_id))
        sla = book.sla
        due = task.due_at + timedelta(minutes=sla.escalation_minutes)
        team = book.team(state.team)
        action = sla.overdue_action
        to = (team.escalation_owner if team else None) or sla.escalation_owner
        if action == ESCALATE and to is not None and to != known.assignee:
            reason = f"overdue since {task.due_at.isoformat()}: escalated to {to}"
            return await self._move_task(cause, task, known.assignee, to, due, reason)
        if action == REROUTE and team is not None:
            target = Target(kind=TEAM, value=team.id, rule_id=OVERDUE, rule_name=OVERDUE,
                            reason=f"overdue since {task.due_at.isoformat()}: re-routed")
            stored = await self.routing.decide(
                workspace, f"{OVERDUE}:{task.task_id}", task.lead_id, target, book,
                task.task_id, exclude=known.assignee,
            )
            d = stored.decision
            await execute(self.commands, cause, AssignLead(
                owner=d.owner, team=d.team, queue=d.queue, rule_id=OVERDUE, rule_name=OVERDUE,
                reason=d.reason), derived_id(task.task_id, "overdue-assign"), d.reason)
            return await self._move_task(cause, task, known.assignee, d.owner, due, d.reason)
        reason = f"overdue since {task.due_at.isoformat()}: back to queue {sla.overdue_queue}"
        await execute(self.commands, cause, AssignLead(
            queue=sla.overdue_queue, rule_id=OVERDUE, rule_name=OVERDUE, reason=reason),
            derived_id(task.task_id, "overdue-assign"), reason)
        return await self._move_task(cause, task, known.assignee, None, due, reason)

    async def _move_task(self, cause: RecordedEvent, task: TaskRow, previous: str | None,
                         assignee: str | None, due: datetime, reason: str) -> int:
        command = ReassignTask(task_id=task.task_id, assignee=assignee, previous=previous,
                               escalated=True, due_at=due, reason=reason)
        appended = await execute(self.commands, cause, command,
                                 derived_id(task.task_id, "overdue-task"), reason)
        if appended:
            log.info("task escalated", workspace=cause.workspace, lead_id=task.lead_id,
                     task_id=task.task_id, assignee=assignee)
        return 1 if appended else 0


def _about(recorded: RecordedEvent, task_id: str) -> bool:
    return getattr(recorded.event, "task_id", None) == task_id


def every_s_from_env(env: Mapping[str, str] | None = None) -> float:
    """LEADLEDGER_OVERDUE_SWEEP_S: seconds between sweeps (default 10)."""
    raw = (env if env is not None else os.environ).get("LEADLEDGER_OVERDUE_SWEEP_S")
    return float(raw) if raw else 10.0
