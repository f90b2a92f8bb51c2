"""A workspace's scoring models: every version of every model, and which one is active.

Owns the `scoring_models` table (migration 0018). A version is immutable: `save` always makes a
new version (1 for a new model id), and the database refuses any change to a stored spec. What
moves is the lifecycle: `activate` makes one version the workspace's active model and retires
the one before, in one transaction (a partial unique index allows one active per workspace).

Compiling a spec (checking its rules) is the scoring engine's job (processors/rules.py); the
HTTP layer compiles before it saves, and the processors cache compiled versions by
(workspace, model id, version), which never change.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ledger.errors import DomainError
from ledger.lease import lock_id
from schema.attributes import AttributeDefinition
from schema.scoring import ScoringModelSpec

DRAFT, ACTIVE, RETIRED = "draft", "active", "retired"

_encode = msgspec.json.Encoder().encode
_decode_spec = msgspec.json.Decoder(ScoringModelSpec).decode
_decode_attributes = msgspec.json.Decoder(tuple[AttributeDefinition, ...]).decode


class ModelNotFound(DomainError):
    code = "not-found"


class ModelVersion(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    model_id: str
    version: int
    status: str
    """draft (never active), active (the workspace's model), retired (was active)."""
    spec: ScoringModelSpec
    attributes: tuple[AttributeDefinition, ...] = ()
    """The custom attribute definitions the rules were checked against when saved: compile
    the version with these, and it compiles the same way forever."""
    created_at: datetime
    created_by: str
    reason: str | None = None
    activated_at: datetime | None = None
    activated_by: str | None = None

    @property
    def label(self) -> str:
        """`<model id>@<version>`, as the lead's `score_model` names it."""
        return f"{self.model_id}@{self.version}"


_COLUMNS = """workspace, model_id, version, status, spec::text, attributes::text, created_at,
created_by, reason, activated_at, activated_by"""

# The next version of a model id. Two saves of the same id at once: the lock makes the second
# wait for the first and read its version (the primary key would refuse a duplicate anyway).
_SAVE = f"""
INSERT INTO scoring_models (workspace, model_id, version, spec, attributes, created_by, reason)
SELECT %(ws)s, %(id)s, coalesce(max(version), 0) + 1, %(spec)s, %(attributes)s, %(by)s,
       %(reason)s
FROM scoring_models WHERE workspace = %(ws)s AND model_id = %(id)s
RETURNING {_COLUMNS}
"""
_GET = f"SELECT {_COLUMNS} FROM scoring_models WHERE workspace = %s AND model_id = %s"
_GET_VERSION = _GET + " AND version = %s"
_LATEST = _GET + " ORDER BY version DESC LIMIT 1"
_VERSIONS = _GET + " ORDER BY version"
_LIST = f"""
SELECT DISTINCT ON (model_id) {_COLUMNS} FROM scoring_models WHERE workspace = %s
ORDER BY model_id, version DESC
"""
_ACTIVE = f"SELECT {_COLUMNS} FROM scoring_models WHERE workspace = %s AND status = 'active'"
_RETIRE = """
UPDATE scoring_models SET status = 'retired'
WHERE workspace = %s AND status = 'active' AND NOT (model_id = %s AND version = %s)
"""
_ACTIVATE = f"""
UPDATE scoring_models SET status = 'active', activated_at = now(), activated_by = %s
WHERE workspace = %s AND model_id = %s AND version = %s
RETURNING {_COLUMNS}
"""


def _row(row: tuple) -> ModelVersion:
    (workspace, model_id, version, status, spec, attributes, created_at, created_by, reason,
     activated_at, activated_by) = row
    return ModelVersion(
        workspace=workspace, model_id=model_id, version=version, status=status,
        spec=_decode_spec(spec), attributes=_decode_attributes(attributes),
        created_at=created_at, created_by=created_by, reason=reason, activated_at=activated_at,
        activated_by=activated_by,
    )


class ScoringModels:
    """All SQL against `scoring_models`. Methods take `conn=` to run in a caller's transaction."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def save(
        self, workspace: str, model_id: str, spec: ScoringModelSpec, created_by: str,
        reason: str | None = None, attributes: tuple[AttributeDefinition, ...] = (),
    ) -> ModelVersion:
        """Stores `spec` as the model's next version (a draft), with the attribute
        definitions it was checked against. Check it first: the store keeps what it is given."""
        params = {"ws": workspace, "id": model_id, "spec": Jsonb(msgspec.to_builtins(spec)),
                  "attributes": Jsonb(msgspec.to_builtins(attributes)), "by": created_by,
                  "reason": reason}
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)",
                               (lock_id(f"scoring-model:{workspace}:{model_id}"),))
            cur = await conn.execute(_SAVE, params)
            row = await cur.fetchone()
        assert row is not None
        return _row(row)

    async def get(
        self, workspace: str, model_id: str, version: int | None = None, *,
        conn: psycopg.AsyncConnection | None = None,
    ) -> ModelVersion | None:
        """One version, or the latest with `version=None`; None if there is no such model."""
        if version is None:
            return await self._one(conn, _LATEST, (workspace, model_id))
        return await self._one(conn, _GET_VERSION, (workspace, model_id, version))

    async def versions(self, workspace: str, model_id: str) -> list[ModelVersion]:
        """Every version of a model, oldest first."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_VERSIONS, (workspace, model_id))
            return [_row(r) for r in await cur.fetchall()]

    async def list(self, workspace: str) -> list[ModelVersion]:
        """The latest version of each of the workspace's models, by model id."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(_LIST, (workspace,))
            return [_row(r) for r in await cur.fetchall()]

    async def active(
        self, workspace: str, *, conn: psycopg.AsyncConnection | None = None,
        lock: bool = False,
    ) -> ModelVersion | None:
        """The workspace's active model version; None when it has none. `lock` (in the
        caller's transaction) keeps it active until that transaction ends: an activation waits
        for it, so a score computed with this model never lands after the next model's.

        The lock is the activation lock taken shared, not a row lock: a row lock would give
        the caller's transaction an id at once, holding back the ledger's gap-safe readers for
        all of it (processors/scoring.py reads and scores before it writes)."""
        if lock:
            assert conn is not None, "a lock needs the caller's transaction"
            await conn.execute("SELECT pg_advisory_xact_lock_shared(%s)",
                               (_activation_lock(workspace),))
        return await self._one(conn, _ACTIVE, (workspace,))

    async def activate(
        self, workspace: str, model_id: str, version: int, activated_by: str, *,
        conn: psycopg.AsyncConnection | None = None,
    ) -> tuple[ModelVersion, bool]:
        """Makes the version the workspace's active model, retiring the one active before.
        Returns it and whether it changed anything (activating the active version does not).
        Raises ModelNotFound. With `conn`, runs in the caller's transaction (so the rescore
        job it starts commits with it)."""
        if conn is None:
            async with self.pool.connection() as own, own.transaction():
                return await self._activate(own, workspace, model_id, version, activated_by)
        async with conn.transaction():
            return await self._activate(conn, workspace, model_id, version, activated_by)

    async def _activate(
        self, conn: psycopg.AsyncConnection, workspace: str, model_id: str, version: int,
        activated_by: str,
    ) -> tuple[ModelVersion, bool]:
        # One activation per workspace at a time: the retire and the activate must not
        # interleave with another pair (the unique index would refuse the second activate).
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_activation_lock(workspace),))
        target = await self._one(conn, _GET_VERSION, (workspace, model_id, version))
        if target is None:
            raise ModelNotFound(f"no version {version} of scoring model {model_id!r}")
        if target.status == ACTIVE:
            return target, False
        await conn.execute(_RETIRE, (workspace, model_id, version))
        cur = await conn.execute(_ACTIVATE, (activated_by, workspace, model_id, version))
        row = await cur.fetchone()
        assert row is not None
        return _row(row), True

    async def _one(
        self, conn: psycopg.AsyncConnection | None, query: str, params: tuple
    ) -> ModelVersion | None:
        if conn is None:
            async with self.pool.connection() as own:
                return await self._one(own, query, params)
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        return _row(row) if row else None


def _activation_lock(workspace: str) -> int:
    """Held exclusively by an activation, shared by the scorers of the workspace's leads."""
    return lock_id(f"scoring-activate:{workspace}")
