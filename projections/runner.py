"""The projection runner: feeds one projection from the ledger and NATS, exactly once.

The ledger is the source of truth and NATS the fast path. On start (and whenever NATS is away
or quiet) the runner reads the ledger gap-safely after its checkpoint; otherwise it takes what
the process's feed delivers (projections/feed.py: one JetStream subscription shared by every
runner in the process), as many events at a time as arrived while it was busy, up to a batch.
Every envelope names the position published before it: when that is not the runner's
checkpoint, NATS lost or no longer holds something (or the feed dropped it), and the runner
reads the gap from the ledger instead of skipping it. Events at or before the checkpoint are
duplicates.

Each batch is one transaction on the lease connection: take the projection's apply lock (a
rebuild's swap takes it too), re-read the checkpoint, apply, advance the checkpoint, commit.
The checkpoint is the runner's only position (nothing is acknowledged to NATS). Killing the
runner at any instant loses nothing and applies nothing twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.checkpoints import advance_checkpoint, advance_checkpoint_from, read_checkpoint
from ledger.lease import Lease, lock_id, pool_conninfo
from ledger.store import EventStore, RecordedEvent
from projections.feed import Delivered, Feed, Inbox
from schema.positions import LogPosition

log = structlog.get_logger(__name__)

DEFER_CHECKPOINT_EVENTS = 1_000
"""Events a runner may pass over (none of them its work) before it writes its checkpoint."""
DEFER_CHECKPOINT_S = 0.05
"""How late a checkpoint passed over that way may be written: read-your-writes waits on it."""


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
        feed: Feed,
        *,
        batch_size: int = 500,
        fetch_timeout_s: float = 1.0,
        idle_check_s: float = 2.0,
        lease_poll_s: float = 0.5,
    ) -> None:
        self.projection = projection
        self.store = store
        self.feed = feed
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.idle_check_s = idle_check_s
        self.lease = Lease(
            pool_conninfo(pool), f"projection-{projection.name}", poll_s=lease_poll_s
        )
        self.cursor = LogPosition()
        self.duplicates = 0
        """Events skipped as at or before the checkpoint (republished, or read from the ledger)."""
        self.gaps = 0
        """Times a broken `previous` link sent the runner to the ledger."""
        self._last_ledger_check = 0.0
        self._saved: LogPosition | None = None
        """The checkpoint as stored, while a later one is deferred (None: none is)."""
        self._deferred = 0
        self._deferred_since = 0.0

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
        while not stop.is_set():
            try:
                await self.catch_up(stop)
                async with self.feed.listen() as inbox:
                    # Anything published before the feed had this inbox is in the ledger by now.
                    inbox.resync = False
                    await self.catch_up(stop)
                    await self._consume(inbox, stop)
            except CheckpointMoved as exc:
                log.warning("checkpoint moved", error=str(exc))
                self.cursor = await read_checkpoint(self.lease.conn, self.projection.name)
                self._saved = None

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

    async def _consume(self, inbox: Inbox, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # A deferred checkpoint is written at the first quiet moment, so wait less for one.
            quiet = self.fetch_timeout_s if self._saved is None else DEFER_CHECKPOINT_S
            try:
                delivered = await inbox.take(self.batch_size, quiet)
            except TimeoutError:
                # Quiet: a lost last message has no successor to reveal it, so look; and while
                # the feed is away, the ledger is the only way.
                stale = time.monotonic() - self._last_ledger_check > self.idle_check_s
                if stale or not self.feed.live:
                    await self.catch_up(stop)
                await self.idle()
                continue
            if inbox.resync:
                inbox.resync = False
                await self.catch_up(stop)
            await self.handle(delivered, stop)

    async def handle(self, delivered: list[Delivered], stop: asyncio.Event) -> None:
        """Applies what the feed delivered, in order, reading any gap from the ledger."""
        pending: list[RecordedEvent] = []
        tip = self.cursor  # the last event applied or pending
        for item in delivered:
            position = item.recorded.log_position
            if position <= tip:
                self.duplicates += 1  # republished, or already read from the ledger
                continue
            if item.previous != tip:
                self.gaps += 1
                await self._flush(pending)
                pending = []
                log.info("gap in NATS, reading the ledger", after=self.cursor.token(),
                         until=position.token())
                await self.catch_up(stop, until=position)
                tip = self.cursor  # short of `position` only if stopping
            else:
                pending.append(item.recorded)
                tip = position
        await self._flush(pending)

    async def _flush(self, events: list[RecordedEvent]) -> None:
        if events:
            self.cursor = await self.apply(events)
