"""The projection runner: feeds one projection from the ledger and NATS, exactly once.

The ledger is the source of truth and NATS the fast path. On start (and whenever NATS is away
or quiet) the runner reads the ledger gap-safely after its checkpoint; otherwise it consumes a
durable pull consumer. Every envelope names the position published before it: when that is not
the runner's checkpoint, NATS lost or no longer holds something, and the runner reads the gap
from the ledger instead of skipping it. Messages at or before the checkpoint are duplicates.

Each batch is one transaction on the lease connection: take the projection's apply lock (a
rebuild's swap takes it too), re-read the checkpoint, apply, advance the checkpoint, commit;
then ack. Killing the runner at any instant loses nothing and applies nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Protocol

import msgspec
import nats.errors
import psycopg
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import advance_checkpoint, advance_checkpoint_from, read_checkpoint
from ledger.envelopes import from_cloudevent
from ledger.jetstream import connect_nats, ensure_stream
from ledger.lease import Lease, lock_id, pool_conninfo, wait_for_stop
from ledger.store import EventStore, RecordedEvent
from schema.envelope import decode_envelope, stream_subjects
from schema.positions import LogPosition

log = structlog.get_logger(__name__)

DEFER_CHECKPOINT_EVENTS = 1_000
"""Events a runner may pass over (none of them its work) before it writes its checkpoint."""
DEFER_CHECKPOINT_S = 0.05
"""How late a checkpoint passed over that way may be written: read-your-writes waits on it."""
BACKLOG_TIMEOUT_S = 0.25
"""How long a fetch waits for messages the stream said it holds (see ProjectionRunner._fetch)."""


def pending_after(msg: Msg) -> int:
    """How many messages the stream held for this consumer after `msg` when it was delivered
    (0 when the message does not say)."""
    try:
        return int(msg.metadata.num_pending or 0)
    except (ValueError, AttributeError, IndexError, TypeError):
        return 0


class Projection(Protocol):
    """A read model. `apply` runs inside the caller's transaction and must be idempotent per
    lead version. A rebuild fills `shadow(suffix)` (the same model over `<table><suffix>` for
    each of `tables`), which may hold work in memory until `flush`."""

    name: str
    tables: tuple[str, ...]
    handles: tuple[type, ...] | None
    """The event types `apply` does anything with (None: all). A batch of none of them is
    passed over without a transaction, and the checkpoint written later."""

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None: ...

    async def flush(self, conn: psycopg.AsyncConnection) -> None: ...

    def shadow(self, suffix: str) -> Projection: ...


class CheckpointMoved(RuntimeError):
    """The stored checkpoint is behind what this runner applied: someone reset it."""


def apply_lock_id(name: str) -> int:
    """Held (transaction-scoped) by every batch of projection `name` and by its rebuild swap."""
    return lock_id(f"apply:{name}")


async def apply_batch(
    conn: psycopg.AsyncConnection,
    projection: Projection,
    events: list[RecordedEvent],
    expected: LogPosition,
) -> LogPosition:
    """Applies `events` (contiguous in ledger order after `expected`) and advances the
    checkpoint, in one transaction. Returns the checkpoint now stored.

    The apply lock alone serializes the batches of one projection and its rebuild's swap: the
    checkpoint is read without a row lock, because a row lock gives the transaction an id at
    once, and every transaction with an id holds back the gap-safe horizon of every reader of
    the ledger (the relay first) until it ends. Without it, the transaction gets its id at its
    first write, so the reads and the folding before it hold nothing back."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (apply_lock_id(projection.name),))
        stored = await read_checkpoint(conn, projection.name)
        if stored < expected:
            raise CheckpointMoved(
                f"{projection.name} is at {stored.token()}, not {expected.token()}"
            )
        fresh = [e for e in events if e.log_position > stored]
        if not fresh:
            return stored
        await projection.apply(conn, fresh)
        await advance_checkpoint(conn, projection.name, fresh[-1].log_position)
        return fresh[-1].log_position


class ProjectionRunner:
    def __init__(
        self,
        projection: Projection,
        store: EventStore,
        pool: AsyncConnectionPool,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        *,
        max_age_s: float,
        duplicate_window_s: float,
        batch_size: int = 500,
        fetch_timeout_s: float = 1.0,
        idle_check_s: float = 2.0,
        lease_poll_s: float = 0.5,
    ) -> None:
        self.projection = projection
        self.store = store
        self.nats_url = nats_url
        self.stream = stream
        self.prefix = subject_prefix
        self.max_age_s = max_age_s
        self.duplicate_window_s = duplicate_window_s
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.idle_check_s = idle_check_s
        self.lease = Lease(
            pool_conninfo(pool), f"projection-{projection.name}", poll_s=lease_poll_s
        )
        self.cursor = LogPosition()
        self.duplicates = 0
        """Messages skipped as at or before the checkpoint (redeliveries, ledger catch-up)."""
        self.gaps = 0
        """Times a broken `previous` link sent the runner to the ledger."""
        self._last_ledger_check = 0.0
        self._saved: LogPosition | None = None
        """The checkpoint as stored, while a later one is deferred (None: none is)."""
        self._deferred = 0
        self._deferred_since = 0.0

    @property
    def durable(self) -> str:
        return f"projection-{self.projection.name}"

    async def apply(self, events: list[RecordedEvent]) -> LogPosition:
        """Applies events contiguous after the cursor; returns the checkpoint now stored (or
        deferred). Reactors (processors/reactor.py) override it to act outside the
        transaction."""
        handles = getattr(self.projection, "handles", None)
        if handles is not None and not any(isinstance(e.event, handles) for e in events):
            deferred = self.defer([e for e in events if e.log_position > self.cursor])
            if deferred is not None:
                return deferred
        expected = self.cursor if self._saved is None else self._saved
        stored = await apply_batch(self.lease.conn, self.projection, events, expected)
        self._saved, self._deferred = None, 0
        return stored

    def defer(self, fresh: list[RecordedEvent]) -> LogPosition | None:
        """Passes over `fresh`, none of them this runner's work, without writing the
        checkpoint: it waits for the next batch with work, a quiet moment, DEFER_CHECKPOINT_S
        or DEFER_CHECKPOINT_EVENTS events, whichever comes first. A restart re-reads at most
        that many events, each of them nothing to do again. Returns the new cursor (None:
        write the checkpoint now)."""
        if not fresh:
            return self.cursor
        now = time.monotonic()
        if self._saved is None:
            self._saved, self._deferred, self._deferred_since = self.cursor, 0, now
        elif (self._deferred + len(fresh) >= DEFER_CHECKPOINT_EVENTS
              or now - self._deferred_since >= DEFER_CHECKPOINT_S):
            return None
        self._deferred += len(fresh)
        return fresh[-1].log_position

    async def idle(self) -> None:
        """Called when a fetch found nothing: writes down the checkpoint it deferred."""
        if self._saved is not None:
            await self.advance(self.cursor)

    async def advance(self, to: LogPosition) -> LogPosition:
        """Moves the checkpoint to `to` in one compare-and-advance statement, without the apply
        lock: it writes nothing else, and a rebuild that swapped its tables in meanwhile
        stored a checkpoint the statement does not move back."""
        conn: psycopg.AsyncConnection = self.lease.conn
        name = self.projection.name
        expected = self.cursor if self._saved is None else self._saved
        self._saved, self._deferred = None, 0
        stored = await advance_checkpoint_from(conn, name, expected, to)
        if stored < expected:
            raise CheckpointMoved(f"{name} is at {stored.token()}, not {expected.token()}")
        return to

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set: stands by for the lease, then projects while it holds it."""
        await self.lease.serve(stop, lambda: self._hold(stop))

    async def _hold(self, stop: asyncio.Event) -> None:
        self.cursor = await read_checkpoint(self.lease.conn, self.projection.name)
        self._saved = None
        log.info("projecting", projection=self.projection.name, after=self.cursor.token())
        failures = 0
        while not stop.is_set():
            nc = None
            try:
                await self.catch_up(stop)
                nc = await connect_nats(self.nats_url, name=f"leadledger-{self.durable}")
                psub = await self.subscribe(nc.jetstream())
                # Anything published before the consumer existed is in the ledger by now.
                await self.catch_up(stop)
                failures = 0
                await self._consume(psub, stop)
            except (nats.errors.Error, OSError) as exc:
                failures += 1
                delay = min(5.0, 0.25 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("projection lost NATS; reading the ledger meanwhile",
                            projection=self.projection.name, error=repr(exc))
                await wait_for_stop(stop, delay)
            except CheckpointMoved as exc:
                log.warning("checkpoint moved", error=str(exc))
                self.cursor = await read_checkpoint(self.lease.conn, self.projection.name)
                self._saved = None
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()

    async def subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        await ensure_stream(
            js, self.stream, self.prefix,
            max_age_s=self.max_age_s, duplicate_window_s=self.duplicate_window_s,
        )
        # A new consumer starts at new messages: everything older is read from the ledger,
        # and a message whose predecessor we never saw triggers a ledger read anyway.
        config = ConsumerConfig(
            ack_policy=AckPolicy.ALL,
            deliver_policy=DeliverPolicy.NEW,
            max_ack_pending=self.batch_size * 4,
            ack_wait=60,
        )
        return await js.pull_subscribe(
            stream_subjects(self.prefix), durable=self.durable, stream=self.stream, config=config
        )

    # -- the ledger path ------------------------------------------------------------------

    async def catch_up(self, stop: asyncio.Event, until: LogPosition | None = None) -> None:
        """Applies the ledger after the checkpoint, batch by batch, up to `until` (inclusive)
        or the readable horizon."""
        self._last_ledger_check = time.monotonic()
        while not stop.is_set() and (until is None or self.cursor < until):
            events = await self.store.read_all(self.cursor, self.batch_size)
            if until is not None:
                events = [e for e in events if e.log_position <= until]
                if not events:
                    raise LookupError(f"{until.token()} is not readable in the ledger")
            if not events:
                return
            self.cursor = await self.apply(events)
            if until is None and len(events) < self.batch_size:
                return

    # -- the NATS path --------------------------------------------------------------------

    async def _consume(self, psub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                msgs = await self._fetch(psub)
            except nats.errors.TimeoutError:
                # Quiet: a lost last message has no successor to reveal it, so look.
                if time.monotonic() - self._last_ledger_check > self.idle_check_s:
                    await self.catch_up(stop)
                await self.idle()
                continue
            await self.handle_messages(msgs, stop)
            await msgs[-1].ack()  # AckPolicy.ALL: acknowledges the whole batch

    async def _fetch(self, psub: JetStreamContext.PullSubscription) -> list[Msg]:
        """The next message as soon as it arrives, then as many of those the stream already
        holds for this consumer as a batch takes (each message says how many are still
        pending after it). Not `fetch(batch_size)`: once nats-py's fetch has one message it
        waits for the whole batch or the timeout, which at low traffic adds up to a second to
        every hop. And not a fixed short wait for more: under load the round trip outlasts it,
        batches shrink to a message or two, and the fixed cost of each batch (a transaction,
        the checkpoint) is paid per event just when the processor can least afford it."""
        # A deferred checkpoint is written at the first quiet moment, so wait less for one.
        quiet = self.fetch_timeout_s if self._saved is None else DEFER_CHECKPOINT_S
        msgs = await psub.fetch(1, timeout=quiet)
        while len(msgs) < self.batch_size:
            waiting = pending_after(msgs[-1])
            if not waiting:
                break
            try:
                msgs += await psub.fetch(min(waiting, self.batch_size - len(msgs)),
                                         timeout=BACKLOG_TIMEOUT_S)
            except (TimeoutError, nats.errors.TimeoutError):
                break
        return msgs

    async def handle_messages(self, msgs: list[Msg], stop: asyncio.Event) -> None:
        """Applies a fetched batch in order, reading any gap from the ledger."""
        pending: list[RecordedEvent] = []
        tip = self.cursor  # the last event applied or pending
        for msg in msgs:
            try:
                envelope = decode_envelope(msg.data)
                position = LogPosition.parse(envelope.position)
                previous = LogPosition.parse(envelope.previous)
            except (msgspec.DecodeError, ValueError) as exc:
                # Not ours or corrupt: skip it; if it hid an event, the next link shows the gap.
                log.error("undecodable message", subject=msg.subject, error=str(exc))
                continue
            if position <= tip:
                self.duplicates += 1  # redelivered, or already read from the ledger
                continue
            if previous != tip:
                self.gaps += 1
                await self._flush(pending)
                pending = []
                log.info("gap in NATS, reading the ledger", after=self.cursor.token(),
                         until=position.token())
                await self.catch_up(stop, until=position)
                tip = self.cursor  # short of `position` only if stopping
            else:
                pending.append(from_cloudevent(envelope, self.store.registry))
                tip = position
        await self._flush(pending)

    async def _flush(self, events: list[RecordedEvent]) -> None:
        if events:
            self.cursor = await self.apply(events)
