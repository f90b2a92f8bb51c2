"""Reactors: processors that act on the ledger's events outside any transaction.

Enrichment calls providers, routing assigns owners, webhooks send HTTP requests: slow work that
must never run inside a database transaction (a long transaction holds back every gap-safe
reader of the ledger). A reactor therefore rides on the projection runner (ledger catch-up,
the process's NATS feed, gap repair from `previous` links, one active holder per lease) but acts
first and checkpoints after:

  1. the reactor prepares the batch (`prepare`: what it needs to read for all of the batch's
     events, read once: the leads' streams, a workspace's webhook endpoints), then the batch is
     split by lead; leads run concurrently (bounded), each lead's events in ledger order, so a
     lead's effects keep their order;
  2. each event is retried with bounded exponential backoff and jitter (tenacity); an event that
     still fails is parked in the dead-letter table and the reactor moves on;
  3. then, in one short transaction, the checkpoint advances.

A crash between 1 and 3 runs the batch again: reactors must be idempotent, which they are by
appending their results with event ids derived from the event they react to (the ledger reports
the first append of an id instead of appending twice) and by keying side effects (webhook
deliveries) on the source event id.

Load sharing: a reactor may run as N partitions (`partition` i of `partitions` N), each with its
own lease and checkpoint, each acting on the leads whose id hashes to it. Any number of worker
processes can run any partitions; each partition is active in exactly one of them.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from typing import Any, Protocol, TypeVar

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential_jitter

from ledger.store import EventStore, RecordedEvent, Stream
from processors import dead_letters
from projections.feed import Feed
from projections.runner import ProjectionRunner
from schema.positions import LogPosition

log = structlog.get_logger(__name__)
Prepared = TypeVar("Prepared")


class Reactor(Protocol[Prepared]):
    """Acts on events. `react` must be idempotent per event id (see the module docstring)."""

    name: str

    def wants(self, recorded: RecordedEvent) -> bool: ...

    async def prepare(self, events: list[RecordedEvent]) -> Prepared:
        """What the reactor reads once for a batch of the events it wants, before acting on
        any of them; handed to `react` with each event of the batch."""
        ...

    async def react(self, recorded: RecordedEvent, prepared: Prepared) -> None: ...


class FirstReads:
    """Leads' streams read once for a batch (EventStore.read_streams), each handed out once:
    to the first event of its lead in the batch. A later event of the same lead, or a retry,
    reads the stream afresh and so sees what was appended since (by this reactor, too)."""

    def __init__(self, streams: dict[tuple[str, str], Stream] | None = None) -> None:
        self._streams = streams or {}

    @classmethod
    async def of(cls, store: EventStore, events: list[RecordedEvent]) -> FirstReads:
        leads = list(dict.fromkeys((e.workspace, e.stream_id) for e in events))
        return cls(await store.read_streams(leads))

    async def stream(self, store: EventStore, workspace: str, lead_id: str) -> Stream:
        """The lead's stream: the batch's read the first time, a fresh read after that."""
        stream = self._streams.pop((workspace, lead_id), None)
        return stream if stream is not None else await store.read_stream(workspace, lead_id)


class Retries:
    """Bounded: `attempts` tries, waits growing from `initial_s` to at most `max_s`, jittered."""

    def __init__(self, attempts: int = 5, initial_s: float = 0.2, max_s: float = 5.0) -> None:
        self.attempts = attempts
        self.initial_s = initial_s
        self.max_s = max_s


def owns(lead_id: str, partition: int, partitions: int) -> bool:
    """Stable across processes and restarts (not Python's salted hash)."""
    return partitions == 1 or zlib.crc32(lead_id.encode()) % partitions == partition


def reader_name(reactor: str, partition: int = 0, partitions: int = 1) -> str:
    """The lease and checkpoint name of one partition of a reactor."""
    suffix = "" if partitions == 1 else f"-p{partition}of{partitions}"
    return f"reactor-{reactor}{suffix}"


class _Checkpointed:
    """What the runner needs of a 'projection': a name and tables (none: nothing to rebuild)."""

    tables: tuple[str, ...] = ()

    def __init__(self, name: str) -> None:
        self.name = name


class ReactorRunner(ProjectionRunner):
    def __init__(
        self,
        reactor: Reactor[Any],
        store: EventStore,
        pool: AsyncConnectionPool,
        feed: Feed,
        *,
        partition: int = 0,
        partitions: int = 1,
        concurrency: int = 16,
        retries: Retries | None = None,
        batch_size: int = 200,
        lease_poll_s: float = 0.5,
    ) -> None:
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} is not in 0..{partitions - 1}")
        self.reactor = reactor
        self.partition, self.partitions = partition, partitions
        self.concurrency = concurrency
        self.retries = retries or Retries()
        self.pool = pool
        self.parked = 0
        super().__init__(
            _Checkpointed(reader_name(reactor.name, partition, partitions)),  # type: ignore[arg-type]
            store, pool, feed, batch_size=batch_size, lease_poll_s=lease_poll_s,
        )

    async def apply(self, events: list[RecordedEvent]) -> LogPosition:
        fresh = [e for e in events if e.log_position > self.cursor]
        if not fresh:
            return self.cursor
        mine = [e for e in fresh if self._mine(e)]
        if not mine:
            deferred = self.defer(fresh)
            if deferred is not None:
                return deferred
        await self._react_all(mine)
        # One statement: a reactor has no tables, so there is no rebuild to keep out (the
        # projections' apply lock) and nothing else to commit with the checkpoint.
        return await self.advance(fresh[-1].log_position)

    def _mine(self, recorded: RecordedEvent) -> bool:
        return owns(recorded.stream_id, self.partition, self.partitions) and (
            self.reactor.wants(recorded)
        )

    async def _react_all(self, events: list[RecordedEvent]) -> None:
        by_lead: dict[tuple[str, str], list[RecordedEvent]] = defaultdict(list)
        for recorded in events:
            by_lead[(recorded.workspace, recorded.stream_id)].append(recorded)
        gate = asyncio.Semaphore(self.concurrency)
        prepared = await self.reactor.prepare(events)

        async def one_lead(lead_events: list[RecordedEvent]) -> None:
            async with gate:
                for recorded in lead_events:
                    await self._react(recorded, prepared)

        await asyncio.gather(*(one_lead(chain) for chain in by_lead.values()))

    async def _react(self, recorded: RecordedEvent, prepared: object) -> bool:
        """Runs the reactor on one event with bounded retries; parks it if it keeps failing.
        Returns whether it succeeded."""
        try:
            # The first attempt outside tenacity: nearly every event succeeds on it, and building
            # the retry machinery for each of them cost more than many reactions themselves.
            await self.reactor.react(recorded, prepared)
            return True
        except Exception as exc:  # noqa: BLE001 (anything: retried, then parked)
            first = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries.attempts),
            wait=wait_exponential_jitter(multiplier=self.retries.initial_s, max=self.retries.max_s),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    if attempt.retry_state.attempt_number == 1:
                        raise first  # the attempt made above: tenacity counts it and waits
                    await self.reactor.react(recorded, prepared)
            return True
        except Exception as exc:  # noqa: BLE001 (anything: one bad event must not stall the rest)
            self.parked += 1
            log.warning(
                "event parked in dead letters", reactor=self.reactor.name,
                event_id=recorded.event_id, lead_id=recorded.stream_id,
                correlation_id=recorded.metadata.correlation_id, error=repr(exc),
            )
            async with self.pool.connection() as conn:
                await dead_letters.park(
                    conn, self.reactor.name, recorded, repr(exc), self.retries.attempts
                )
            return False

    async def _retry_requested(self) -> None:
        """Dead letters someone asked to retry (POST /v1/dead-letters/.../retry)."""
        async with self.pool.connection() as conn:
            requested = await dead_letters.retrying(conn, self.reactor.name, limit=50)
        for letter in requested:
            if not owns(letter.stream_id, self.partition, self.partitions):
                continue
            stream = await self.store.read_stream(letter.workspace, letter.stream_id)
            found = [r for r in stream.events if r.event_id == letter.event_id]
            if found and await self._react(found[0], await self.reactor.prepare(found)):
                async with self.pool.connection() as conn:
                    await dead_letters.set_status(
                        conn, letter.workspace, self.reactor.name, letter.event_id,
                        dead_letters.RESOLVED, only_from=(dead_letters.RETRYING,),
                    )

    async def _hold(self, stop: asyncio.Event) -> None:
        # Retries asked for while the ledger is quiet still run: look every idle check.
        watcher = asyncio.create_task(self._watch_retries(stop))
        try:
            await super()._hold(stop)
        finally:
            watcher.cancel()

    async def _watch_retries(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.idle_check_s)
            try:
                await self._retry_requested()
            except (psycopg.Error, OSError) as exc:
                log.warning("dead-letter retries failed", reactor=self.reactor.name,
                            error=repr(exc))
