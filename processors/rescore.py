"""Rescoring a workspace after a model is activated: in the background, as events, throttled.

Owns the `rescore_jobs` table (migration 0019). Activating a model creates a job in the
activation's transaction (`create_job`); the process that served the activation then runs it
(`Rescorer.start`), and any worker process resumes a job whose runner died (`Rescorer.resume`):
a job runs under a session advisory lock of its own, so exactly one process works on it, and it
records its progress (`done`, `last_lead_id`) every few leads, so a restart goes on after
the last lead it recorded. Redoing a lead is harmless: its score's event id derives from
(job, lead), and an unchanged digest appends nothing.

Each lead of the workspace (from the lead read model, by lead id) is scored at the job's start
time. Before its first page the job waits (bounded) for the lead read model to reach the
ledger's horizon: a lead created just before the activation, which the scoring processor saw
while the workspace had no active model yet, must not be missed. A lead created after it is
scored by the processor, which reads the active model after the activation committed.
Every lead and recorded through `LeadCommands` like any other write (cause type `ModelActivated`,
causation id the job), at most `max_per_s` leads a second (LEADLEDGER_RESCORE_MAX_PER_S) so that
live writes keep their latency budget. A job whose model is no longer the workspace's active one
stops as `superseded` (the newer activation has its own job).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from datetime import datetime

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import read_checkpoint
from ledger.errors import ConcurrencyError, LeadGone, LeadNotFound
from ledger.lead import ERASED, MERGED, fold
from ledger.lead_commands import LeadCommands
from ledger.lease import lock_id, pool_conninfo, wait_for_stop
from ledger.relay import CHANNEL
from ledger.scoring_models import ModelVersion, ScoringModels
from ledger.store import EventStore
from processors.lead_facts import fold_facts
from processors.rules import CompiledModel, score_lead
from processors.scoring import ACTOR, SOURCE, CompiledModels, score_command
from schema.metadata import EventMetadata

log = structlog.get_logger(__name__)

CAUSE = "ModelActivated"
RUNNING, DONE, SUPERSEDED, FAILED = "running", "done", "superseded", "failed"
DEFAULT_MAX_PER_S = 500.0
PAGE = 100
PROGRESS_EVERY = 10
"""Leads between two progress writes: what `status` shows moves while a page is scored."""
JOB_IDS = uuid.UUID("0b6f7a57-4c83-4a43-9d57-5d1f1b0b2a77")
LEAD_PROJECTION = "lead"
"""The lead read model's checkpoint (projections/leads.py NAME; processors may not import it)."""
READ_MODEL_WAIT_S = 30.0


def max_per_s_from_env() -> float:
    raw = os.environ.get("LEADLEDGER_RESCORE_MAX_PER_S")
    return float(raw) if raw else DEFAULT_MAX_PER_S


class RescoreJob(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    job_id: str
    model_id: str
    model_version: int
    status: str
    """running, done, superseded (a newer activation replaced its model), failed."""
    total: int
    """Leads in the workspace when the job started."""
    done: int
    changed: int
    """Leads whose score changed (a LeadScored was appended)."""
    last_lead_id: str | None
    error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


_COLUMNS = """workspace, job_id, model_id, model_version, status, total, done, changed,
last_lead_id, error, started_at, updated_at, finished_at"""
_CREATE = f"""
INSERT INTO rescore_jobs (workspace, job_id, model_id, model_version, total)
SELECT %s, %s, %s, %s, count(*) FROM leads WHERE workspace = %s AND status <> 'merged'
RETURNING {_COLUMNS}
"""
# A newer activation ends the older jobs of the workspace: their model is no longer active.
_SUPERSEDE = """
UPDATE rescore_jobs SET status = 'superseded', finished_at = now(), updated_at = now()
WHERE workspace = %s AND status = 'running' AND job_id <> %s
"""
_GET = f"SELECT {_COLUMNS} FROM rescore_jobs WHERE job_id = %s"
_GET_IN = _GET + " AND workspace = %s"
_RECENT = f"SELECT {_COLUMNS} FROM rescore_jobs ORDER BY started_at DESC LIMIT %s"
_RUNNING = f"SELECT {_COLUMNS} FROM rescore_jobs WHERE status = 'running' ORDER BY started_at"
_PROGRESS = """
UPDATE rescore_jobs SET done = done + %s, changed = changed + %s, last_lead_id = %s,
       updated_at = now()
WHERE job_id = %s AND status = 'running'
"""
_RECOUNT = """
UPDATE rescore_jobs SET total = (
    SELECT count(*) FROM leads WHERE workspace = rescore_jobs.workspace AND status <> 'merged'
), updated_at = now()
WHERE job_id = %s
"""
_FINISH = """
UPDATE rescore_jobs SET status = %s, error = %s, finished_at = now(), updated_at = now()
WHERE job_id = %s AND status = 'running'
"""
# Pages of the workspace's leads by the read model's primary key (workspace, lead_id).
_LEADS = """
SELECT lead_id FROM leads
WHERE workspace = %s AND lead_id > %s AND status <> 'merged'
ORDER BY lead_id LIMIT %s
"""


_NAMES = [c.strip() for c in _COLUMNS.replace("\n", " ").split(",")]


def _job(row: tuple) -> RescoreJob:
    return RescoreJob(**dict(zip(_NAMES, row, strict=True)))


async def create_job(conn: psycopg.AsyncConnection, model: ModelVersion) -> RescoreJob:
    """A job rescoring `model`'s workspace; run it in the activation's transaction."""
    job_id = str(uuid.uuid4())
    cur = await conn.execute(_CREATE, (model.workspace, job_id, model.model_id, model.version,
                                       model.workspace))
    row = await cur.fetchone()
    assert row is not None
    await conn.execute(_SUPERSEDE, (model.workspace, job_id))
    return _job(row)


async def get_job(
    conn: psycopg.AsyncConnection, job_id: str, workspace: str | None = None
) -> RescoreJob | None:
    """A job by id (only within `workspace`, when given)."""
    if workspace is None:
        cur = await conn.execute(_GET, (job_id,))
    else:
        cur = await conn.execute(_GET_IN, (job_id, workspace))
    row = await cur.fetchone()
    return _job(row) if row else None


async def recent_jobs(conn: psycopg.AsyncConnection, limit: int = 10) -> list[RescoreJob]:
    """The latest jobs of every workspace, newest first (for `leadledger status`)."""
    cur = await conn.execute(_RECENT, (limit,))
    return [_job(r) for r in await cur.fetchall()]


class Throttle:
    """At most `per_s` calls of `wait` a second, on average (no burst beyond one page)."""

    def __init__(self, per_s: float) -> None:
        self.interval = 1.0 / per_s if per_s > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        now = time.monotonic()
        if self.next > now:
            await asyncio.sleep(self.next - now)
        self.next = max(self.next, now - self.interval) + self.interval


class Rescorer:
    def __init__(
        self, store: EventStore, commands: LeadCommands, models: ScoringModels,
        pool: AsyncConnectionPool, *, compiled: CompiledModels | None = None,
        max_per_s: float = DEFAULT_MAX_PER_S, page: int = PAGE,
    ) -> None:
        self.store = store
        self.commands = commands
        self.models = models
        self.pool = pool
        self.compiled = compiled or CompiledModels()
        self.max_per_s = max_per_s
        self.page = page
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, job: RescoreJob) -> None:
        """Runs the job in the background of this process (kept until it ends)."""
        task = asyncio.create_task(self.run(job.job_id), name=f"rescore-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stops the background jobs; they stay `running` and another process resumes them."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def resume(self, stop: asyncio.Event, every_s: float = 5.0) -> None:
        """Until `stop`: picks up running jobs nobody works on (their process died)."""
        while not stop.is_set():
            async with self.pool.connection() as conn:
                cur = await conn.execute(_RUNNING)
                jobs = [_job(r) for r in await cur.fetchall()]
            for job in jobs:
                if stop.is_set():
                    return
                await self.run(job.job_id, stop)
            await wait_for_stop(stop, every_s)

    async def run(self, job_id: str, stop: asyncio.Event | None = None) -> None:
        """Runs the job to its end (or until `stop`) unless another process holds it: then
        returns at once. The lock lives on a connection of its own, outside the pool, so that
        however this ends (a cancel included) closing it releases the job."""
        lock = await psycopg.AsyncConnection.connect(pool_conninfo(self.pool), autocommit=True)
        try:
            cur = await lock.execute("SELECT pg_try_advisory_lock(%s)",
                                     (lock_id(f"rescore:{job_id}"),))
            row = await cur.fetchone()
            if not (row and row[0]):
                return
            try:
                await self._run(job_id, stop)
            except Exception as exc:
                log.exception("rescore job failed", job_id=job_id)
                await self._finish(job_id, FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            await lock.close()

    async def _run(self, job_id: str, stop: asyncio.Event | None) -> None:
        async with self.pool.connection() as conn:
            job = await get_job(conn, job_id)
        if job is None or job.status != RUNNING:
            return
        model = await self.models.get(job.workspace, job.model_id, job.model_version)
        if model is None:
            await self._finish(job_id, FAILED, "the model version is gone")
            return
        compiled = self.compiled.get(model)
        if job.last_lead_id is None:
            await self._wait_for_read_model(job)
        throttle = Throttle(self.max_per_s)
        after = job.last_lead_id or ""
        log.info("rescoring", job_id=job_id, workspace=job.workspace, model=model.label,
                 after=after, done=job.done, total=job.total)
        while stop is None or not stop.is_set():
            async with self.pool.connection() as conn:
                active = await self.models.active(job.workspace, conn=conn)
                if active is None or active.label != model.label:
                    await self._finish(job_id, SUPERSEDED, None)
                    return
                cur = await conn.execute(_LEADS, (job.workspace, after, self.page))
                lead_ids = [r[0] for r in await cur.fetchall()]
            if not lead_ids:
                await self._finish(job_id, DONE, None)
                log.info("rescore finished", job_id=job_id, workspace=job.workspace)
                return
            changed, counted = 0, 0
            for index, lead_id in enumerate(lead_ids, 1):
                await throttle.wait()
                scored = await self._score(job, model, compiled, lead_id)
                if scored is None:
                    await self._finish(job_id, SUPERSEDED, None)
                    return
                changed += scored
                if index % PROGRESS_EVERY == 0 or index == len(lead_ids):
                    async with self.pool.connection() as conn:
                        await conn.execute(_PROGRESS, (index - counted, changed, lead_id, job_id))
                    changed, counted = 0, index
            after = lead_ids[-1]

    async def _score(
        self, job: RescoreJob, model: ModelVersion, compiled: CompiledModel, lead_id: str
    ) -> int | None:
        """1 if the lead's score changed, 0 if not; None if the model is no longer active."""
        stream = await self.store.read_stream(job.workspace, lead_id)
        state = fold([r.event for r in stream.events])
        if not stream.events or state.status in (ERASED, MERGED):
            return 0
        try:
            result = score_lead(compiled, fold_facts(stream.events), job.started_at)
        except Exception:
            log.exception("rescoring a lead failed", job_id=job.job_id, lead_id=lead_id)
            return 0
        command = score_command(model, result, None, CAUSE)
        if command.digest == state.score_digest:
            # Unchanged (the processor got there first): no transaction at all, so nothing
            # holds the ledger's gap-safe horizon back for live writes.
            return 0
        metadata = EventMetadata(actor=ACTOR, source=SOURCE, causation_id=job.job_id,
                                 correlation_id=job.job_id,
                                 reason=f"model {model.label} activated")
        event_id = str(uuid.uuid5(JOB_IDS, f"{job.job_id}/{lead_id}"))
        for attempt in range(5):
            try:
                async with self.pool.connection() as conn, conn.transaction():
                    # The model stays active until this score commits (an activation waits for
                    # the lock): a superseded job can never write after the next job's score.
                    active = await self.models.active(job.workspace, conn=conn, lock=True)
                    if active is None or active.label != model.label:
                        return None
                    outcome = await self.commands.execute(
                        job.workspace, lead_id, command, metadata, event_ids=[event_id],
                        conn=conn,
                    )
                    if not outcome.events:
                        # Nothing appended, so no NOTIFY of ours: announce the commit anyway,
                        # for the writes that committed behind this transaction.
                        await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))
                return 1 if outcome.events else 0
            except (LeadGone, LeadNotFound):
                return 0
            except ConcurrencyError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05)
        return 0

    async def _wait_for_read_model(self, job: RescoreJob) -> None:
        """Until the lead read model has every lead committed before now (bounded: a stalled
        projection delays the job, it does not stop it); then counts the leads again."""
        horizon = await self.store.horizon()
        deadline = time.monotonic() + READ_MODEL_WAIT_S
        while time.monotonic() < deadline:
            async with self.pool.connection() as conn:
                if await read_checkpoint(conn, LEAD_PROJECTION) >= horizon:
                    break
            await asyncio.sleep(0.05)
        else:
            log.warning("the lead read model is behind; rescoring what it has",
                        job_id=job.job_id, horizon=horizon.token())
        async with self.pool.connection() as conn:
            await conn.execute(_RECOUNT, (job.job_id,))

    async def _finish(self, job_id: str, status: str, error: str | None) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(_FINISH, (status, error, job_id))
