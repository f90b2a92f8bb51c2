"""The outbox relay: publishes the ledger, in ledger order, to the JetStream stream.

Writers never touch NATS; the ledger itself is the outbox. One relay holds the `relay` lease
(ledger/lease.py) and loops: read the next batch gap-safely after its checkpoint, publish every
event with `Nats-Msg-Id` = event id (JetStream drops a republished id inside its duplicate
window), wait for every PubAck, and only then advance the checkpoint. A crash between publish
and checkpoint therefore republishes a batch, which deduplication absorbs; it never loses one.

Each envelope names the position of the event published just before it (`previous`), so
consumers can tell when NATS lost a message and fetch it from the ledger instead.

The relay wakes on `LISTEN leadledger_events` (ledger_append NOTIFYs) and polls as a fallback:
a NOTIFY can arrive while an older transaction still holds the gap-safe horizon back.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque

import msgspec
import nats.errors
import nats.js.errors
import psycopg
import structlog
from nats.js import JetStreamContext
from psycopg_pool import AsyncConnectionPool
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from ledger.checkpoints import RELAY, advance_checkpoint, read_checkpoint
from ledger.envelopes import to_cloudevent
from ledger.jetstream import connect_nats, ensure_stream
from ledger.lease import Lease, pool_conninfo, wait_for_stop
from ledger.store import EventStore, RecordedEvent
from schema.envelope import encode_envelope, event_subject
from schema.positions import LogPosition

log = structlog.get_logger(__name__)

CHANNEL = "leadledger_events"
_STOP_CHECK_S = 0.25

# Worth retrying on the same connection: the server is slow, restarting, or electing a leader.
_RETRYABLE = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.js.errors.APIError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.TooManyStalledMsgsError,
)


class PublishError(RuntimeError):
    """JetStream acknowledged into another stream: the subjects are misconfigured."""


# Anything NATS-side ends a session; the run loop reconnects after a backoff.
_SESSION_ERRORS = (nats.errors.Error, OSError, PublishError)


class _StopRequested(stop_base):
    """Ends a retry loop as soon as the worker is asked to stop."""

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.stop.is_set()


class Message(msgspec.Struct, frozen=True):
    """One event ready to send, built once per batch however often the batch is retried."""

    subject: str
    payload: bytes
    headers: dict[str, str]


class _Sent(msgspec.Struct):
    """A batch published and not yet known to be acknowledged."""

    last: LogPosition
    messages: list[Message]
    futures: list[asyncio.Future]

    @property
    def acknowledged(self) -> bool:
        return all(f.done() for f in self.futures)

    def cancel(self) -> None:
        for future in self.futures:
            future.cancel()  # frees the client's pending slots; no-op if done


class Relay:
    def __init__(
        self,
        store: EventStore,
        pool: AsyncConnectionPool,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        *,
        max_age_s: float,
        duplicate_window_s: float,
        batch_size: int = 500,
        poll_s: float = 0.1,
        ack_timeout_s: float = 5.0,
        publish_attempts: int = 5,
        lease_poll_s: float = 0.5,
    ) -> None:
        self.store = store
        self.pool = pool
        self.nats_url = nats_url
        self.stream = stream
        self.prefix = subject_prefix
        self.max_age_s = max_age_s
        self.duplicate_window_s = duplicate_window_s
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.ack_timeout_s = ack_timeout_s
        self.publish_attempts = publish_attempts
        self.lease = Lease(pool_conninfo(pool), "relay", poll_s=lease_poll_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set: stands by for the lease, then relays while it holds it."""
        await self.lease.serve(stop, lambda: self._hold(stop))

    async def _hold(self, stop: asyncio.Event) -> None:
        await self.lease.conn.execute(f"LISTEN {CHANNEL}")
        failures = 0
        while not stop.is_set():
            nc = None
            try:
                nc = await connect_nats(self.nats_url, name="leadledger-relay")
                js = nc.jetstream()
                await ensure_stream(
                    js, self.stream, self.prefix,
                    max_age_s=self.max_age_s, duplicate_window_s=self.duplicate_window_s,
                )
                failures = 0
                await self._pump(js, stop)
            except _SESSION_ERRORS as exc:
                failures += 1
                delay = min(5.0, 0.25 * 2**failures) * random.uniform(0.5, 1.0)
                log.warning("relay session failed", error=repr(exc), retry_in_s=round(delay, 2))
                await wait_for_stop(stop, delay)
            finally:
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()

    async def _pump(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        checkpoint = saved = await read_checkpoint(self.lease.conn, RELAY)
        sent = checkpoint  # the last event published; `checkpoint`: the last acknowledged
        sent_id: str | None = None
        in_flight: deque[_Sent] = deque()
        saved_at = time.monotonic()
        log.info("relaying", after=checkpoint.token(), stream=self.stream)
        try:
            while not stop.is_set():
                # Drained before reading, so a NOTIFY arriving after the read wakes the next.
                await _drain_notifies(self.lease.conn)
                events = await self.store.read_all(sent, self.batch_size)
                if events:
                    messages = self._messages(events, sent, sent_id)
                    in_flight.append(_Sent(events[-1].log_position, messages,
                                           await self._send(js, messages)))
                    sent, sent_id = events[-1].log_position, events[-1].event_id
                    log.debug("relayed", events=len(events), sent=sent.token())
                # Acknowledgements are collected while the next batch is read and sent (the
                # connection keeps the order); waited for when quiet or too many are out.
                while in_flight and (not events or len(in_flight) > MAX_IN_FLIGHT
                                     or in_flight[0].acknowledged):
                    checkpoint = await self._settle(js, in_flight, stop)
                # Written at a quiet moment or every CHECKPOINT_EVERY_S, not after every batch:
                # under load that write was a fifth of each publishing round, which every
                # event waits for. A restart republishes at most that much, which JetStream
                # drops as duplicates (the window is far longer).
                if checkpoint != saved and (
                        not events or time.monotonic() - saved_at >= CHECKPOINT_EVERY_S):
                    saved, saved_at = await self._save(checkpoint), time.monotonic()
                if len(events) < self.batch_size:
                    await self._wait_for_appends(stop, busy=bool(events))
        finally:
            for batch in in_flight:
                batch.cancel()
            if checkpoint != saved and stop.is_set():
                with contextlib.suppress(psycopg.Error, OSError):
                    await self._save(checkpoint)

    async def _settle(self, js: JetStreamContext, in_flight: deque[_Sent],
                      stop: asyncio.Event) -> LogPosition:
        """Waits for the oldest batch's acknowledgements; returns the position acknowledged.
        A batch that failed is published again with every batch sent after it, in order
        (JetStream drops the ids it already stored, and refused those after a lost one)."""
        batch = in_flight.popleft()
        try:
            await self._acknowledged(batch.futures)
            return batch.last
        except _RETRYABLE as exc:
            log.warning("publish failed, sending again", error=repr(exc))
        again = [batch, *in_flight]
        in_flight.clear()
        for other in again:
            other.cancel()
        await self._publish(js, [m for b in again for m in b.messages], stop)
        return again[-1].last

    async def _save(self, checkpoint: LogPosition) -> LogPosition:
        # Through the lease connection: if the lease is gone, this fails.
        await advance_checkpoint(self.lease.conn, RELAY, checkpoint)
        return checkpoint

    def _messages(self, events: list[RecordedEvent], previous: LogPosition,
                  previous_id: str | None) -> list[Message]:
        """`previous_id`: the event this session published just before (None: none yet).
        Each message names it as the stream's expected last message id, so JetStream refuses a
        message whose predecessor never arrived (a publish lost while later ones went out):
        the stream stays in ledger order however many batches are in flight. It drops a
        repeated id before looking at that, so a batch sent again is not refused."""
        messages = []
        for recorded in events:
            envelope = to_cloudevent(recorded, previous)
            subject = event_subject(
                self.prefix, recorded.workspace, recorded.stream_id, recorded.event.event_type
            )
            headers = {"Nats-Msg-Id": recorded.event_id}
            if previous_id is not None:
                headers["Nats-Expected-Last-Msg-Id"] = previous_id
            messages.append(Message(subject, encode_envelope(envelope), headers))
            previous, previous_id = recorded.log_position, recorded.event_id
        return messages

    async def _publish(
        self, js: JetStreamContext, messages: list[Message], stop: asyncio.Event
    ) -> None:
        """Retries the whole batch (JetStream drops the ids it already stored), a bounded number
        of times; a stop request ends the waiting (the batch is simply not checkpointed)."""
        async def sleep(seconds: float) -> None:
            await wait_for_stop(stop, seconds)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.publish_attempts) | _StopRequested(stop),
            sleep=sleep,
            wait=wait_random_exponential(multiplier=0.25, max=4.0),
            retry=retry_if_exception_type(_RETRYABLE),
            before_sleep=lambda state: log.warning(
                "publish failed, retrying",
                attempt=state.attempt_number,
                error=repr(state.outcome.exception() if state.outcome else None),
            ),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._publish_once(js, messages)

    async def _publish_once(self, js: JetStreamContext, messages: list[Message]) -> None:
        futures = await self._send(js, messages)
        try:
            await self._acknowledged(futures)
        finally:
            for future in futures:
                future.cancel()  # frees the client's pending slots on timeout; no-op if done

    @staticmethod
    async def _send(js: JetStreamContext, messages: list[Message]) -> list[asyncio.Future]:
        """Publishes in order without waiting in between (one connection keeps the order);
        the futures resolve to the PubAcks."""
        return [await js.publish_async(m.subject, m.payload, headers=m.headers)
                for m in messages]

    async def _acknowledged(self, futures: list[asyncio.Future]) -> None:
        done = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), self.ack_timeout_s
        )
        for result in done:
            if isinstance(result, BaseException):
                raise result
            if result.stream != self.stream:
                raise PublishError(f"acked by stream {result.stream}, not {self.stream}")

    async def _wait_for_appends(self, stop: asyncio.Event, *, busy: bool) -> None:
        """Until a NOTIFY, the poll interval, or stop (looked at every quarter second).

        Concurrent appends coalesce their NOTIFYs (only the one holding a transaction-scoped
        advisory lock sends one), and an event that committed may still sit behind an older
        running transaction. So right after a read that found events, the relay looks again
        soon instead of waiting for a NOTIFY that may not come; and it polls every 100 ms
        anyway, because a transaction that commits after the NOTIFY it relied on went out is
        seen by no other wake-up (that polling bounds the tail latency of every processor
        downstream; a read of nothing costs about a millisecond)."""
        conn = self.lease.conn
        deadline = time.monotonic() + (BUSY_POLL_S if busy else self.poll_s)
        while not stop.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if await _notified(conn, min(remaining, _STOP_CHECK_S)):
                return


BUSY_POLL_S = 0.05
MAX_IN_FLIGHT = 4
"""Batches published whose acknowledgements the relay has not waited for yet, at most."""
CHECKPOINT_EVERY_S = 0.25
"""The longest the relay's stored checkpoint trails what it published while events keep
coming (a quiet moment writes it at once)."""


async def _drain_notifies(conn: psycopg.AsyncConnection) -> None:
    """One read covers every append announced so far; forget their NOTIFYs."""
    async for _ in conn.notifies(timeout=0):
        pass


async def _notified(conn: psycopg.AsyncConnection, timeout: float) -> bool:
    # Closed explicitly: the generator holds the connection's lock until it finishes.
    async with contextlib.aclosing(conn.notifies(timeout=timeout, stop_after=1)) as notifies:
        async for _ in notifies:
            return True
    return False
