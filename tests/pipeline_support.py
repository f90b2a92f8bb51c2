"""Helpers for the relay, projection and rebuild tests: load generation, the expected read
model (a fresh fold of the ledger), reading the whole JetStream stream back, and running the
workers in-process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import nats
import psycopg
from nats.aio.msg import Msg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import RELAY, read_checkpoint
from ledger.lead import ERASED, INITIAL, evolve
from ledger.relay import Relay
from ledger.store import EventStore, NewEvent, RecordedEvent, StreamAppend
from projections.feed import Feed
from projections.leads import COLUMNS, LeadRow, LeadsProjection, row_from_state
from projections.runner import ProjectionRunner
from schema.envelope import CloudEvent, decode_envelope
from schema.events import (
    Event,
    LeadArchived,
    LeadCreated,
    LeadErased,
    LeadFields,
    LeadFieldsChanged,
    LeadNoteAdded,
    LeadOwnerAssigned,
    LeadRestored,
    LeadStageChanged,
    LeadTagged,
    LeadUntagged,
)
from schema.metadata import Actor, EventMetadata
from schema.positions import LogPosition

META = EventMetadata(
    actor=Actor(key_id="key-1", role="ops"), source="api", request_id="req-1",
    correlation_id="corr-1", reason="pipeline test",
)
MAX_AGE_S = 3600.0
DUPLICATE_WINDOW_S = 600.0


# -- load -------------------------------------------------------------------------------------


def lead_history(lead_id: str, rng: random.Random) -> list[Event]:
    """A plausible life of one lead: created, then a few changes; sometimes erased."""
    events: list[Event] = [
        LeadCreated(
            lead_id=lead_id, stage="lead", tags=("new",),
            fields=LeadFields(email=f"{lead_id}@example.com", first_name="Ada", company="Acme"),
        )
    ]
    for step in range(rng.randint(1, 6)):
        events.append(rng.choice([
            LeadTagged(tag=f"t{step}"),
            LeadFieldsChanged(changes=LeadFields(phone=f"+3361234{step:04d}", title="CTO")),
            LeadStageChanged(stage="mql", previous="lead"),
            LeadNoteAdded(note_id=f"n{step}", text="called, no answer"),
            LeadOwnerAssigned(owner=f"rep{step}"),
        ]))
    if rng.random() < 0.2:
        events += [LeadArchived(), LeadRestored(), LeadUntagged(tag="new")]
    if rng.random() < 0.05:
        events.append(LeadErased())
    return events


async def write_leads(
    store: EventStore,
    n_leads: int,
    *,
    workspaces: tuple[str, ...] = ("ws-a", "ws-b"),
    writers: int = 4,
    leads_per_append: int = 10,
    pause_s: float = 0.0,
    seed: int = 7,
) -> int:
    """Appends whole lead histories, several leads per transaction, from concurrent writers.
    Returns the number of events written."""
    rng = random.Random(seed)
    chunks: list[list[tuple[str, str, list[Event]]]] = []
    chunk: list[tuple[str, str, list[Event]]] = []
    for i in range(n_leads):
        lead_id = f"L{seed}-{i:06d}"
        chunk.append((workspaces[i % len(workspaces)], lead_id, lead_history(lead_id, rng)))
        if len(chunk) == leads_per_append:
            chunks.append(chunk)
            chunk = []
    if chunk:
        chunks.append(chunk)
    queue: asyncio.Queue[list[tuple[str, str, list[Event]]]] = asyncio.Queue()
    for c in chunks:
        queue.put_nowait(c)

    async def writer() -> int:
        written = 0
        while not queue.empty():
            written += await _append_chunk(store, queue.get_nowait())
            if pause_s:
                await asyncio.sleep(pause_s)
        return written

    return sum(await asyncio.gather(*(writer() for _ in range(writers))))


async def _append_chunk(store: EventStore, chunk: list[tuple[str, str, list[Event]]]) -> int:
    by_workspace: dict[str, list[StreamAppend]] = {}
    for workspace, lead_id, events in chunk:
        spec = StreamAppend(lead_id, 0, [NewEvent(e) for e in events])
        by_workspace.setdefault(workspace, []).append(spec)
    for workspace, specs in by_workspace.items():
        await store.append_many(workspace, specs, META)
    return sum(len(events) for _, _, events in chunk)


# -- expectations -----------------------------------------------------------------------------


# The last event written, whether or not gap-safe readers see it yet. On a PostgreSQL cluster
# shared with other tests, their open transactions hold the cluster-wide xmin (and so the
# readable horizon) back for a while: tests wait for what they wrote, not for the horizon.
_LAST_WRITTEN = """
SELECT transaction_id, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1
"""


async def last_written(pool: AsyncConnectionPool) -> LogPosition:
    async with pool.connection() as conn:
        row = await (await conn.execute(_LAST_WRITTEN)).fetchone()
    return LogPosition(row[0], row[1]) if row else LogPosition()


async def readable(store: EventStore) -> None:
    """Waits until gap-safe readers see everything committed so far."""
    target = await last_written(store.pool)

    async def visible() -> bool:
        return await store.horizon() >= target

    await eventually(visible, 30, "the readable horizon to pass the last write")


async def read_ledger(store: EventStore) -> list[RecordedEvent]:
    """Everything written so far (all writers have finished)."""
    await readable(store)
    events: list[RecordedEvent] = []
    position = LogPosition()
    while batch := await store.read_all(position, 5000):
        events += batch
        position = batch[-1].log_position
    return events


async def fresh_fold(store: EventStore) -> dict[tuple[str, str], LeadRow]:
    """The read model as the decider's own `evolve` gives it, computed from scratch."""
    leads: dict[tuple[str, str], list[RecordedEvent]] = {}
    for recorded in await read_ledger(store):
        leads.setdefault((recorded.workspace, recorded.stream_id), []).append(recorded)
    rows = {}
    for (workspace, lead_id), history in leads.items():
        history.sort(key=lambda r: r.version)
        state = INITIAL
        for recorded in history:
            state = evolve(state, recorded.event)
        if state.status != ERASED:
            rows[(workspace, lead_id)] = row_from_state(
                workspace, state, history[0].recorded_at, history[-1].recorded_at
            )
    return rows


async def read_model(
    pool: AsyncConnectionPool, table: str = "leads"
) -> dict[tuple[str, str], LeadRow]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS), sql.Identifier(table)
    )
    async with pool.connection() as conn:
        cur = await conn.execute(query)
        return {(r[0], r[1]): LeadRow(*r) for r in await cur.fetchall()}


class StreamContent(msgspec.Struct):
    messages: list[Msg]
    envelopes: list[CloudEvent]


async def stream_content(nats_url: str, stream: str, prefix: str) -> StreamContent:
    """Every message the stream holds now, in stream order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        expected = info.state.messages
        sub = await js.subscribe(f"{prefix}.>", stream=stream, ordered_consumer=True)
        messages: list[Msg] = []
        while len(messages) < expected:
            messages.append(await sub.next_msg(timeout=5))
        await sub.unsubscribe()
    finally:
        await nc.close()
    return StreamContent(messages, [decode_envelope(m.data) for m in messages])


# -- running the workers ----------------------------------------------------------------------


def make_relay(infra, store: EventStore, pool: AsyncConnectionPool, **kwargs) -> Relay:
    return Relay(
        store, pool, kwargs.pop("nats_url", infra.nats_url), infra.stream, infra.subject_prefix,
        max_age_s=MAX_AGE_S, duplicate_window_s=DUPLICATE_WINDOW_S, **kwargs,
    )


def make_feed(infra, nats_url: str | None = None, **kwargs) -> Feed:
    return Feed(nats_url or infra.nats_url, infra.stream, infra.subject_prefix,
                max_age_s=MAX_AGE_S, duplicate_window_s=DUPLICATE_WINDOW_S, **kwargs)


def make_runner(infra, store: EventStore, pool: AsyncConnectionPool, **kwargs) -> ProjectionRunner:
    feed = kwargs.pop("feed", None) or make_feed(infra, kwargs.pop("nats_url", None))
    return ProjectionRunner(LeadsProjection(store), store, pool, feed, **kwargs)


@contextlib.asynccontextmanager
async def running(*workers: Relay | ProjectionRunner) -> AsyncIterator[asyncio.Event]:
    """Runs workers as tasks; stops them (and surfaces their errors) on exit."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        yield stop
    finally:
        stop.set()
        done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        errors = [r for r in done if isinstance(r, BaseException)]
        if errors:
            raise errors[0]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def reached(pool: AsyncConnectionPool, store: EventStore, name: str) -> bool:
    """Has checkpoint `name` reached the last event written?"""
    target = await last_written(pool)
    async with pool.connection() as conn:
        return await read_checkpoint(conn, name) >= target


async def relay_done(pool: AsyncConnectionPool, store: EventStore) -> bool:
    return await reached(pool, store, RELAY)


async def holds_lease(worker: Relay | ProjectionRunner) -> bool:
    """Does this worker's lease session hold its advisory lock right now?"""
    conn = worker.lease._conn
    if conn is None or conn.closed:
        return False
    try:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid()"
        )
        row = await cur.fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])
