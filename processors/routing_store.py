"""Routing's tables (migration 0026): each workspace's book (rules, teams, territories, SLA and
fallback queue), the round-robin cursor per team, owners' loads, and the decisions made.

A workspace routes leads only once it has a `routing_settings` row: saving any part of its book
creates it. Decisions are stored by the id of what caused them (an event, or an overdue task),
in the same transaction that reads and moves the team's cursor: a re-run of the same cause gets
the stored decision back and never advances a rotation twice.

Decisions for one team take turns on its cursor row, so how long the row stays locked bounds the
team's decisions per second. Within a process, decisions for the same team that arrive while
one is being made wait and are then made together (group commit): one transaction locks the
cursor once, settles them in arrival order (each seeing the cursor and loads the one before
left) and stores them with the cursor's move in one statement. bench_pipeline measured the row
lock's mean wait at 47 ms per decision at 30 leads/s on a saturated 2-core machine when each
decision took the lock on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import msgspec
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from processors.assignment import needs_loads, settle
from schema.routing import (
    TEAM,
    Decision,
    RoutingBook,
    RoutingRule,
    SlaSettings,
    Target,
    Team,
    TeamMember,
    Territory,
)


class StoredDecision(msgspec.Struct, frozen=True, kw_only=True):
    decision: Decision
    task_id: str | None
    decided_at: datetime


_SETTINGS = "SELECT fallback_queue, sla::text, updated_at FROM routing_settings WHERE workspace = %s"
_RULES = """SELECT rule_id, name, condition, target_kind, target, reassign, priority
FROM routing_rules WHERE workspace = %s ORDER BY position"""
_TEAMS = """SELECT team_id, name, strategy, escalation_owner, overflow_queue
FROM routing_teams WHERE workspace = %s ORDER BY team_id"""
_MEMBERS = """SELECT team_id, owner, capacity FROM routing_team_members
WHERE workspace = %s ORDER BY team_id, position"""
_TERRITORIES = """SELECT territory_id, name, countries, regions, target_kind, target
FROM routing_territories WHERE workspace = %s ORDER BY position"""
_TOUCH = """INSERT INTO routing_settings (workspace, updated_by) VALUES (%s, %s)
ON CONFLICT (workspace) DO UPDATE SET updated_at = now(), updated_by = EXCLUDED.updated_by"""

# Open follow-ups per owner: the tasks read model, plus recent decisions it has not caught up
# with yet (no row of that task changed at or after the decision), so a burst of leads for one
# team sees each assignment at once, not when the projection applies it. UNION: a task counts
# once per owner. "Recent" is 15 minutes, far beyond the projection's usual lag of well under a
# second: the window bounds what each decision scans (a day of decisions made every routing
# quadratic: 18 ms of server time per lead after 400 leads, bench/RESULTS.md pipeline), and
# only a tasks projection stopped for longer would count an owner's newest tasks short.
_LOADS = """
SELECT owner, count(*) FROM (
    SELECT assignee AS owner, task_id FROM tasks
    WHERE workspace = %(ws)s AND status = 'open' AND assignee = ANY(%(owners)s)
    UNION
    SELECT d.owner, d.task_id FROM routing_decisions d
    WHERE d.workspace = %(ws)s AND d.owner = ANY(%(owners)s) AND d.task_id IS NOT NULL
      AND d.decided_at > now() - interval '15 minutes'
      AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.workspace = d.workspace
                      AND t.task_id = d.task_id AND t.changed_at >= d.decided_at)
) open_work
GROUP BY owner
"""
_STORED = """SELECT owner, team, queue, rule_id, rule_name, reason, priority, task_id, decided_at
FROM routing_decisions WHERE workspace = %s AND source_id = %s"""
_INSERT_DECISION = """INSERT INTO routing_decisions (workspace, source_id, lead_id, owner, team,
queue, rule_id, rule_name, reason, priority, task_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s,
%s, %s, %s) ON CONFLICT (workspace, source_id) DO NOTHING RETURNING decided_at"""
_ENSURE_CURSOR = """INSERT INTO routing_cursors (workspace, team_id) VALUES (%s, %s)
ON CONFLICT (workspace, team_id) DO NOTHING"""
_LOCK_CURSOR = """SELECT next_member FROM routing_cursors WHERE workspace = %s AND team_id = %s
FOR UPDATE"""


# A group's decisions and the team's new cursor in one statement: the cursor moves only if a
# decision went in.
_INSERT_DECISIONS_MOVING_CURSOR = """
WITH decided AS (
    INSERT INTO routing_decisions (workspace, source_id, lead_id, owner, team, queue, rule_id,
                                   rule_name, reason, priority, task_id)
    SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[],
                             %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
    ON CONFLICT (workspace, source_id) DO NOTHING
    RETURNING source_id, decided_at
), moved AS (
    UPDATE routing_cursors SET next_member = %s
    WHERE workspace = %s AND team_id = %s AND EXISTS (SELECT 1 FROM decided)
)
SELECT source_id, decided_at FROM decided
"""
_STORED_MANY = """SELECT source_id, owner, team, queue, rule_id, rule_name, reason, priority,
task_id, decided_at FROM routing_decisions WHERE workspace = %s AND source_id = ANY(%s)"""


class _Asked(msgspec.Struct, frozen=True):
    """One decision waiting for its team's next group."""

    source_id: str
    lead_id: str
    target: Target
    book: RoutingBook
    task_id: str | None
    exclude: str | None
    answer: asyncio.Future[StoredDecision]


class RoutingStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._waiting: dict[tuple[str, str], list[_Asked]] = {}
        self._groups: dict[tuple[str, str], asyncio.Task[None]] = {}

    # -- the book ------------------------------------------------------------------------------

    async def book(self, workspace: str) -> RoutingBook | None:
        """The workspace's routing configuration; None if it never configured routing."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SETTINGS, (workspace,))
            settings = await cur.fetchone()
            if settings is None:
                return None
            rules = [RoutingRule(id=r[0], name=r[1], condition=r[2], target_kind=r[3],
                                 target=r[4], reassign=r[5], priority=r[6])
                     for r in await (await conn.execute(_RULES, (workspace,))).fetchall()]
            members: dict[str, list[TeamMember]] = {}
            for team_id, owner, capacity in await (
                await conn.execute(_MEMBERS, (workspace,))
            ).fetchall():
                members.setdefault(team_id, []).append(TeamMember(owner=owner, capacity=capacity))
            teams = [Team(id=t[0], name=t[1], strategy=t[2], escalation_owner=t[3],
                          overflow_queue=t[4], members=tuple(members.get(t[0], ())))
                     for t in await (await conn.execute(_TEAMS, (workspace,))).fetchall()]
            territories = [
                Territory(id=t[0], name=t[1], countries=tuple(t[2]), regions=tuple(t[3]),
                          target_kind=t[4], target=t[5])
                for t in await (await conn.execute(_TERRITORIES, (workspace,))).fetchall()
            ]
        return RoutingBook(
            rules=tuple(rules), teams=tuple(teams), territories=tuple(territories),
            sla=msgspec.json.decode(settings[1], type=SlaSettings), fallback_queue=settings[0],
            updated_at=settings[2],
        )

    async def workspaces(self) -> list[str]:
        """Workspaces that route leads (the overdue sweeper visits each)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute("SELECT workspace FROM routing_settings ORDER BY workspace")
            return [row[0] for row in await cur.fetchall()]

    async def save_rules(self, workspace: str, rules: Sequence[RoutingRule],
                         fallback_queue: str | None, actor: str) -> None:
        """Replaces the rules (their order is their list order)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_TOUCH, (workspace, actor))
            if fallback_queue is not None:
                await conn.execute("UPDATE routing_settings SET fallback_queue = %s "
                                   "WHERE workspace = %s", (fallback_queue, workspace))
            await conn.execute("DELETE FROM routing_rules WHERE workspace = %s", (workspace,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO routing_rules (workspace, rule_id, position, name, condition, "
                    "target_kind, target, reassign, priority) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(workspace, r.id, i, r.name, r.condition, r.target_kind, r.target,
                      r.reassign, r.priority) for i, r in enumerate(rules)],
                )

    async def save_teams(self, workspace: str, teams: Sequence[Team], actor: str) -> None:
        """Replaces the teams (their rotations keep their place: cursors stay)."""
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_TOUCH, (workspace, actor))
            await conn.execute("DELETE FROM routing_teams WHERE workspace = %s", (workspace,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO routing_teams (workspace, team_id, name, strategy, "
                    "escalation_owner, overflow_queue) VALUES (%s, %s, %s, %s, %s, %s)",
                    [(workspace, t.id, t.name, t.strategy, t.escalation_owner, t.overflow_queue)
                     for t in teams],
                )
                await cur.executemany(
                    "INSERT INTO routing_team_members (workspace, team_id, position, owner, "
                    "capacity) VALUES (%s, %s, %s, %s, %s)",
                    [(workspace, t.id, i, m.owner, m.capacity)
                     for t in teams for i, m in enumerate(t.members)],
                )

    async def save_territories(
        self, workspace: str, territories: Sequence[Territory], actor: str
    ) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_TOUCH, (workspace, actor))
            await conn.execute("DELETE FROM routing_territories WHERE workspace = %s",
                               (workspace,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO routing_territories (workspace, territory_id, position, name, "
                    "countries, regions, target_kind, target) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [(workspace, t.id, i, t.name, list(t.countries), list(t.regions),
                      t.target_kind, t.target) for i, t in enumerate(territories)],
                )

    async def save_sla(self, workspace: str, sla: SlaSettings, actor: str) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(_TOUCH, (workspace, actor))
            await conn.execute("UPDATE routing_settings SET sla = %s WHERE workspace = %s",
                               (Jsonb(msgspec.to_builtins(sla)), workspace))

    # -- decisions -----------------------------------------------------------------------------

    async def decide(
        self, workspace: str, source_id: str, lead_id: str, target: Target, book: RoutingBook,
        task_id: str | None, *, exclude: str | None = None,
    ) -> StoredDecision:
        """The decision for `target`, made once per `source_id`: a team's cursor is read, locked
        and moved in the same transaction as the decision is stored (with the other decisions
        for the team waiting at the time: see the module docstring)."""
        team = book.team(target.value) if target.kind == TEAM else None
        if team is not None:
            key = (workspace, team.id)
            answer: asyncio.Future[StoredDecision] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(key, []).append(
                _Asked(source_id, lead_id, target, book, task_id, exclude, answer))
            if key not in self._groups:
                self._groups[key] = asyncio.create_task(self._take_turns(key))
            return await answer
        async with self.pool.connection() as conn:
            stored = await self._decide(conn, workspace, source_id, lead_id, target, book,
                                        task_id, exclude)
            if stored is None:  # another process decided this cause meanwhile: theirs stands
                stored = await _stored(conn, workspace, source_id)
                assert stored is not None
            return stored

    async def _decide(
        self, conn: psycopg.AsyncConnection, workspace: str, source_id: str, lead_id: str,
        target: Target, book: RoutingBook, task_id: str | None, exclude: str | None,
    ) -> StoredDecision | None:
        """A decision that moves no cursor (an owner, a queue, a team that does not exist)."""
        async with conn.pipeline(), conn.transaction():
            found = await _stored(conn, workspace, source_id)
            if found is not None:
                return found
            decision, _ = settle(target, book, {}, 0, exclude)
            inserted = await conn.execute(_INSERT_DECISION, (
                workspace, source_id, lead_id, decision.owner, decision.team, decision.queue,
                decision.rule_id, decision.rule_name, decision.reason, decision.priority,
                task_id))
            # COMMIT has gone with the insert; its result is read after.
        decided = await inserted.fetchone()
        if decided is None:
            return None
        return StoredDecision(decision=decision, task_id=task_id, decided_at=decided[0])

    async def _take_turns(self, key: tuple[str, str]) -> None:
        """Makes the team's waiting decisions, a group at a time, until none wait."""
        try:
            while asked := self._waiting.pop(key, None):
                try:
                    decided = await self._decide_group(key[0], key[1], asked)
                except Exception as exc:  # noqa: BLE001 (each caller gets it, and retries)
                    for one in asked:
                        if not one.answer.done():
                            one.answer.set_exception(exc)
                    continue
                for one in asked:
                    if one.answer.done():
                        continue
                    stored = decided.get(one.source_id)
                    if stored is None:  # cannot happen: stored, or found stored by another
                        one.answer.set_exception(LookupError(f"no decision for {one.source_id}"))
                    else:
                        one.answer.set_result(stored)
        finally:
            # No await since the last pop found nothing: a decision asked for now starts anew.
            del self._groups[key]

    async def _decide_group(
        self, workspace: str, team_id: str, asked: list[_Asked]
    ) -> dict[str, StoredDecision]:
        sources = list(dict.fromkeys(a.source_id for a in asked))
        async with self.pool.connection() as conn:
            async with conn.pipeline(), conn.transaction():
                # The stored decisions are read under the cursor's lock: a decision another
                # process stored for one of these causes is seen, never decided (and the
                # cursor moved) a second time.
                await conn.execute(_ENSURE_CURSOR, (workspace, team_id))
                cur = await conn.execute(_LOCK_CURSOR, (workspace, team_id))
                found = await _stored_many(conn, workspace, sources)
                first = (await cur.fetchone() or (0,))[0]
                new = [a for a in asked if a.source_id not in found]
                if new:
                    rows, cursor, made = await self._settle_all(conn, workspace, team_id,
                                                                new, first)
                    inserted = await conn.execute(_INSERT_DECISIONS_MOVING_CURSOR, (
                        workspace, *rows, cursor, workspace, team_id))
                # COMMIT has gone with the insert; its result is read after.
            if new:
                for source_id, decided_at in await inserted.fetchall():
                    decision, task_id = made[source_id]
                    found[source_id] = StoredDecision(decision=decision, task_id=task_id,
                                                      decided_at=decided_at)
            missing = [s for s in sources if s not in found]
            if missing:  # decided by another process meanwhile: theirs stands
                found.update(await _stored_many(conn, workspace, missing))
        return found

    async def _settle_all(
        self, conn: psycopg.AsyncConnection, workspace: str, team_id: str, asked: list[_Asked],
        cursor: int,
    ) -> tuple[list[list[str | None]], int, dict[str, tuple[Decision, str | None]]]:
        """Each new decision in turn, from the locked cursor: the rows to insert (one list per
        column), the cursor after the last, and each decision by its source."""
        loads: dict[str, int] = {}
        teams = [a.book.team(team_id) for a in asked]
        if any(t is not None and needs_loads(t) for t in teams):
            owners = {m.owner for t in teams if t is not None for m in t.members}
            loads = await open_loads(conn, workspace, sorted(owners))
        columns: list[list[str | None]] = [[] for _ in range(10)]
        made: dict[str, tuple[Decision, str | None]] = {}
        for one in asked:
            if one.source_id in made:  # the same cause asked twice at once: decided once
                continue
            decision, cursor = settle(one.target, one.book, loads, cursor, one.exclude)
            if decision.owner is not None and one.task_id is not None:
                loads[decision.owner] = loads.get(decision.owner, 0) + 1
            made[one.source_id] = (decision, one.task_id)
            for column, value in zip(columns, (
                one.source_id, one.lead_id, decision.owner, decision.team, decision.queue,
                decision.rule_id, decision.rule_name, decision.reason, decision.priority,
                one.task_id), strict=True):
                column.append(value)
        return columns, cursor, made


async def _stored_many(
    conn: psycopg.AsyncConnection, workspace: str, source_ids: list[str]
) -> dict[str, StoredDecision]:
    cur = await conn.execute(_STORED_MANY, (workspace, source_ids))
    found = {}
    for source_id, owner, team, queue, rule_id, rule_name, reason, priority, task_id, \
            decided_at in await cur.fetchall():
        found[source_id] = StoredDecision(
            decision=Decision(owner=owner, team=team, queue=queue, rule_id=rule_id,
                              rule_name=rule_name, reason=reason, priority=priority),
            task_id=task_id, decided_at=decided_at,
        )
    return found


async def open_loads(
    conn: psycopg.AsyncConnection, workspace: str, owners: Sequence[str]
) -> dict[str, int]:
    cur = await conn.execute(_LOADS, {"ws": workspace, "owners": list(owners)})
    return {owner: count for owner, count in await cur.fetchall()}


async def _stored(
    conn: psycopg.AsyncConnection, workspace: str, source_id: str
) -> StoredDecision | None:
    cur = await conn.execute(_STORED, (workspace, source_id))
    row = await cur.fetchone()
    if row is None:
        return None
    owner, team, queue, rule_id, rule_name, reason, priority, task_id, decided_at = row
    return StoredDecision(
        decision=Decision(owner=owner, team=team, queue=queue, rule_id=rule_id,
                          rule_name=rule_name, reason=reason, priority=priority),
        task_id=task_id, decided_at=decided_at,
    )
