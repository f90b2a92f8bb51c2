"""A workspace's custom attribute definitions: every version kept, the current ones cached.

Owns the `attribute_definitions` table (migration 0016) and the attribute indexes on the lead
read model: a queryable attribute gets an expression index that serves equality, ranges and a
sort on it within a workspace (`attribute_expression` and `presence` are the SQL the leads list
must write for the planner to match it). It also reads the read model's `attributes` column to
report the stored values a new version no longer fits; values are never rewritten.

A save inserts a new version (never an UPDATE, which the table refuses); saving what is already
current changes nothing. Each process caches a workspace's current definitions for a few seconds
and forgets them on its own saves, so a writer sees its change at once and others within the TTL.
"""

from __future__ import annotations

import hashlib
import time
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ledger.attributes import fits
from schema.attributes import AttributeDefinition

CACHE_SECONDS = 2.0
SCAN_CHUNK = 2000
"""Read-model rows read per round trip when looking for values that no longer fit."""
_MAX_IDENTIFIER = 63


class DefinitionVersion(msgspec.Struct, frozen=True, kw_only=True):
    definition: AttributeDefinition
    retired: bool
    created_at: datetime
    created_by: str
    reason: str | None


class Violation(msgspec.Struct, frozen=True):
    lead_id: str
    value: Any
    why: str


class Saved(msgspec.Struct, frozen=True, kw_only=True):
    version: DefinitionVersion
    changed: bool
    """False when the definition was already current: no version was added."""


def attribute_expression(name: str) -> sql.Composable:
    """The attribute's value in the read model, as the index is built on it (the key is a
    literal: an index on an expression matches only the same expression, never a parameter)."""
    return sql.SQL("(attributes -> {})").format(sql.Literal(name))


def presence(name: str) -> sql.Composable:
    """The partial index's predicate: leads without a value are not in the index, so they cost
    it nothing; a query states it for the planner to pick the index."""
    return sql.SQL("(attributes ? {})").format(sql.Literal(name))


def index_name(definition: AttributeDefinition) -> str:
    """Deterministic, shared by every workspace that makes the same name queryable with the
    same kind of index; `leads_attrl_` (GIN, lists) can never equal a `leads_attr_` name."""
    prefix = "leads_attrl_" if definition.type == "list" else "leads_attr_"
    name = prefix + definition.name
    if len(name) <= _MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(definition.name.encode()).hexdigest()[:8]
    return f"{name[: _MAX_IDENTIFIER - 9]}_{digest}"


def index_statement(definition: AttributeDefinition, *, concurrently: bool) -> sql.Composed:
    """Scalars: a B-tree on (workspace, value, lead_id) – jsonb orders numbers numerically and
    ISO text lexically, never fails on a value of another type, and lead_id completes the
    keyset order. Lists: a GIN index for containment (`@>`)."""
    name = definition.name
    if definition.type == "list":
        body = sql.SQL("USING gin ({} jsonb_path_ops)").format(attribute_expression(name))
    else:
        body = sql.SQL("(workspace, {}, lead_id)").format(attribute_expression(name))
    return sql.SQL("CREATE INDEX {} IF NOT EXISTS {} ON leads {} WHERE {}").format(
        sql.SQL("CONCURRENTLY" if concurrently else ""), sql.Identifier(index_name(definition)),
        body, presence(name),
    )


_CURRENT = """
SELECT DISTINCT ON (name) name, version, definition, retired, created_at, created_by, reason
FROM attribute_definitions WHERE workspace = %s
ORDER BY name, version DESC
"""
_VERSIONS = """
SELECT name, version, definition, retired, created_at, created_by, reason
FROM attribute_definitions WHERE workspace = %s AND name = %s
ORDER BY version
"""
# The next version in the same statement; two saves at once collide on the primary key and
# the loser re-reads (see `_insert`).
_INSERT = """
INSERT INTO attribute_definitions
    (workspace, name, version, definition, retired, created_by, reason)
SELECT %(workspace)s, %(name)s, coalesce(max(version), 0) + 1, %(definition)s, %(retired)s,
       %(actor)s, %(reason)s
FROM attribute_definitions WHERE workspace = %(workspace)s AND name = %(name)s
RETURNING name, version, definition, retired, created_at, created_by, reason
"""
_INDEX_STATE = "SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(%s)"


def _version(row: tuple[Any, ...]) -> DefinitionVersion:
    name, version, definition, retired, created_at, created_by, reason = row
    parsed = msgspec.convert({**definition, "name": name, "version": version},
                             AttributeDefinition)
    return DefinitionVersion(definition=parsed, retired=retired, created_at=created_at,
                             created_by=created_by, reason=reason)


class AttributeDefinitions:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._cache: dict[str, tuple[float, dict[str, DefinitionVersion]]] = {}

    async def latest(self, workspace: str) -> dict[str, DefinitionVersion]:
        """Each name's latest version, retired ones included."""
        cached = self._cache.get(workspace)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1]
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CURRENT, (workspace,))
            found = {row[0]: _version(row) for row in await cur.fetchall()}
        self._cache[workspace] = (time.monotonic(), found)
        return found

    async def current(self, workspace: str) -> dict[str, AttributeDefinition]:
        """The definitions writes validate against: the latest version of each, not retired."""
        return {n: v.definition for n, v in (await self.latest(workspace)).items()
                if not v.retired}

    async def versions(self, workspace: str, name: str) -> list[DefinitionVersion]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_VERSIONS, (workspace, name))
            return [_version(row) for row in await cur.fetchall()]

    async def save(self, workspace: str, definition: AttributeDefinition, actor: str,
                   reason: str | None) -> Saved:
        """Makes `definition` current (a new version unless it already is), and, if it is
        queryable, builds its index first so that the first query after the answer uses it."""
        latest = (await self.latest_uncached(workspace, definition.name))
        if latest is not None and not latest.retired and _same(latest.definition, definition):
            return Saved(version=latest, changed=False)
        if definition.queryable:
            await self.ensure_index(definition)
        saved = await self._insert(workspace, definition, False, actor, reason)
        return Saved(version=saved, changed=True)

    async def retire(self, workspace: str, definition: AttributeDefinition, actor: str,
                     reason: str | None) -> DefinitionVersion:
        """A new version that ends the attribute; the index stays (other workspaces may share
        it, and dropping one under their queries is worse than its upkeep)."""
        return await self._insert(workspace, definition, True, actor, reason)

    async def latest_uncached(self, workspace: str, name: str) -> DefinitionVersion | None:
        versions = await self.versions(workspace, name)
        return versions[-1] if versions else None

    async def _insert(self, workspace: str, definition: AttributeDefinition, retired: bool,
                      actor: str, reason: str | None) -> DefinitionVersion:
        stored = msgspec.to_builtins(definition)
        stored.pop("version", None)
        params = {"workspace": workspace, "name": definition.name, "definition": Jsonb(stored),
                  "retired": retired, "actor": actor, "reason": reason}
        for attempt in range(5):
            try:
                async with self.pool.connection() as conn:
                    cur = await conn.execute(_INSERT, params)
                    row = await cur.fetchone()
                break
            except psycopg.errors.UniqueViolation:
                if attempt == 4:
                    raise
        assert row is not None
        self._cache.pop(workspace, None)
        return _version(row)

    async def ensure_index(self, definition: AttributeDefinition) -> str:
        """Builds the attribute's index if missing, CONCURRENTLY (writes to leads go on
        meanwhile). A build that failed half-way leaves an invalid index behind, which IF NOT
        EXISTS would take for done: it is dropped and built again."""
        name = index_name(definition)
        async with self.pool.connection() as conn:
            await conn.set_autocommit(True)  # CONCURRENTLY refuses to run in a transaction
            cur = await conn.execute(_INDEX_STATE, (name,))
            row = await cur.fetchone()
            if row is not None and row[0]:
                return name
            if row is not None:
                await conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                    sql.Identifier(name)))
            await conn.execute(index_statement(definition, concurrently=True))
        return name

    async def violations(
        self, workspace: str, definition: AttributeDefinition, *, after: str = "",
        limit: int = 100,
    ) -> tuple[list[Violation], str | None]:
        """Leads (in lead id order, after `after`) whose stored value does not fit
        `definition`, at most `limit`; and the lead id to continue after (None: the end)."""
        found: list[Violation] = []
        async with self.pool.connection() as conn:
            while True:
                rows = await _scan(conn, workspace, definition, after)
                for lead_id, value in rows:
                    why = fits(definition, value)
                    if why is not None:
                        found.append(Violation(lead_id, value, why))
                        if len(found) == limit:
                            return found, lead_id
                if len(rows) < SCAN_CHUNK:
                    return found, None
                after = rows[-1][0]

    async def count_violations(self, workspace: str, definition: AttributeDefinition) -> int:
        count = 0
        async with self.pool.connection() as conn:
            after = ""
            while True:
                rows = await _scan(conn, workspace, definition, after)
                count += sum(fits(definition, value) is not None for _, value in rows)
                if len(rows) < SCAN_CHUNK:
                    return count
                after = rows[-1][0]


async def _scan(conn: psycopg.AsyncConnection, workspace: str, definition: AttributeDefinition,
                after: str) -> list[tuple[str, Any]]:
    """A chunk of live leads with their value, by the primary key (workspace, lead_id). Only
    leads having a value can fail a definition that does not require one."""
    name = definition.name
    query = sql.SQL(
        "SELECT lead_id, {value} FROM leads WHERE workspace = %s AND status <> 'merged' "
        "AND lead_id > %s {present} ORDER BY lead_id LIMIT %s"
    ).format(
        value=attribute_expression(name),
        present=sql.SQL("") if definition.required else sql.SQL("AND {}").format(presence(name)),
    )
    cur = await conn.execute(query, (workspace, after, SCAN_CHUNK))
    return list(await cur.fetchall())


def _same(a: AttributeDefinition, b: AttributeDefinition) -> bool:
    return msgspec.structs.replace(a, version=0) == msgspec.structs.replace(b, version=0)
