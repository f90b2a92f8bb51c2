"""The webhook sender: sends due deliveries, signed per Standard Webhooks, and schedules retries.

A loop claims due deliveries (processors/webhook_deliveries.py: SKIP LOCKED, a lease, only the
oldest pending delivery per endpoint and lead) and sends each concurrently, up to
`concurrency` at once. For each it builds the payload from the ledger (an erased lead's personal
fields read as null), signs it with the endpoint's secrets (two signatures while a rotated
secret is still valid), checks the destination through processors/outbound.py (private and
loopback addresses only when allow-listed; redirects never followed) and POSTs it. Then:

- 2xx: delivered;
- 410: the endpoint is disabled and its pending deliveries cancelled;
- anything else, a timeout, a refused destination: retried per the spec's schedule with jitter
  (processors/webhook_events.py), never sooner than a 429/503's Retry-After; after the last
  attempt, failed.

At least once: a sender killed mid-request leaves its lease to run out and the delivery is sent
again with the same webhook-id. Any number of senders may run (`leadledger up` runs one; so may
`python -m api.workers send-webhooks`). New deliveries wake them through LISTEN/NOTIFY; a poll
covers retries falling due and a lost notification.

Settings (environment, read when a sender is built): LEADLEDGER_WEBHOOK_RETRY_SCALE (default 1;
tests shrink the schedule), LEADLEDGER_WEBHOOK_TIMEOUT_S (15), LEADLEDGER_WEBHOOK_CONCURRENCY
(32), LEADLEDGER_WEBHOOK_POLL_S (0.25: how soon a retry falling due is seen).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
import uuid
from datetime import UTC, datetime

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from standardwebhooks import Webhook

from ledger.crypto import Keyring
from ledger.lease import pool_conninfo, wait_for_stop
from ledger.store import EventStore, RecordedEvent
from processors import webhook_deliveries
from processors.outbound import BlockedDestination, OutboundClient, OutboundFailed, OutboundGuard
from processors.webhook_deliveries import Claimed, Outcome
from processors.webhook_endpoints import SigningSecrets, WebhookEndpoints
from processors.webhook_events import (
    JITTER,
    build_payload,
    encode_payload,
    parse_retry_after,
    retry_delay_s,
)

log = structlog.get_logger(__name__)
MAX_BODY_IN_ERROR = 200


class SenderOptions:
    def __init__(self, *, retry_scale: float = 1.0, timeout_s: float = 15.0,
                 concurrency: int = 32, poll_s: float = 0.25) -> None:
        self.retry_scale = retry_scale
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.poll_s = poll_s

    @property
    def lease_s(self) -> float:
        """How long a claimed delivery is held: past the request's timeout, with a margin."""
        return 2 * self.timeout_s + 1

    @classmethod
    def from_env(cls) -> SenderOptions:
        env = os.environ
        return cls(
            retry_scale=float(env.get("LEADLEDGER_WEBHOOK_RETRY_SCALE") or 1.0),
            timeout_s=float(env.get("LEADLEDGER_WEBHOOK_TIMEOUT_S") or 15.0),
            concurrency=int(env.get("LEADLEDGER_WEBHOOK_CONCURRENCY") or 32),
            poll_s=float(env.get("LEADLEDGER_WEBHOOK_POLL_S") or 0.25),
        )


def sign(secrets: SigningSecrets, msg_id: str, at: datetime, body: bytes) -> str:
    """The webhook-signature header: one `v1,<base64>` per valid secret, space-separated."""
    text = body.decode()
    return " ".join(Webhook(secret).sign(msg_id, at, text) for secret in secrets.all())


def decide(status_code: int | None, retry_after: str | None, attempts_before: int,
           options: SenderOptions, rng: random.Random, now: datetime) -> tuple[str, float | None]:
    """(outcome, retry in seconds) after an attempt: pure, given the response."""
    if status_code is not None and 200 <= status_code < 300:
        return "delivered", None
    if status_code == 410:
        return "disabled", None
    honoured = parse_retry_after(retry_after, now) if status_code in (429, 503) else None
    jitter = rng.uniform(1 - JITTER, 1 + JITTER)
    delay = retry_delay_s(attempts_before + 1, honoured, options.retry_scale, jitter)
    return ("failed", None) if delay is None else ("retry", delay)


class WebhookSender:
    def __init__(
        self, store: EventStore, pool: AsyncConnectionPool, keyring: Keyring,
        options: SenderOptions | None = None, rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.endpoints = WebhookEndpoints(pool, keyring)
        self.guard = OutboundGuard(pool)
        self.options = options or SenderOptions()
        self.rng = rng or random.Random()
        self.sent = 0
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop))
        in_flight: set[asyncio.Task[None]] = set()
        try:
            async with OutboundClient(self.options.timeout_s) as client:
                while not stop.is_set():
                    self._wake.clear()
                    free = self.options.concurrency - len(in_flight)
                    claimed: list[Claimed] = []
                    events: dict[str, RecordedEvent] = {}
                    if free > 0:
                        try:
                            async with self.pool.connection() as conn:
                                claimed = await webhook_deliveries.claim(
                                    conn, free, self.options.lease_s, uuid.uuid4()
                                )
                            events = await self.store.read_events(
                                sorted({c.event_id for c in claimed}))
                        except (psycopg.Error, PoolTimeout, OSError) as exc:
                            # A database blip must not abandon the requests in flight.
                            log.warning("claiming webhook deliveries failed", error=repr(exc))
                            await wait_for_stop(stop, self.rng.uniform(0.5, 1.5))
                            continue
                    for delivery in claimed:
                        task = asyncio.create_task(
                            self._deliver(client, delivery, events.get(delivery.event_id)))
                        in_flight.add(task)
                        task.add_done_callback(self._done(in_flight))
                    if claimed and len(claimed) == free:
                        await asyncio.sleep(0)  # more may be due: claim again at once
                        continue
                    await self._idle(stop)
                if in_flight:  # let requests under way finish (their leases would re-send)
                    await asyncio.wait(in_flight, timeout=self.options.timeout_s + 1)
        finally:
            listener.cancel()
            for task in in_flight:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    def _done(self, in_flight: set[asyncio.Task[None]]):  # type: ignore[no-untyped-def]
        def done(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            self._wake.set()
            if not task.cancelled() and task.exception() is not None:
                log.error("webhook delivery crashed", error=repr(task.exception()))
        return done

    async def _idle(self, stop: asyncio.Event) -> None:
        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=self.options.poll_s,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Wakes the loop on NOTIFY; reconnects (bounded by the stop) if the connection drops."""
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(pool_conninfo(self.pool),
                                                            autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {webhook_deliveries.CHANNEL}")
                    async for _ in conn.notifies():
                        self._wake.set()
            except (psycopg.Error, OSError) as exc:
                log.warning("webhook listener lost its connection", error=repr(exc))
                await wait_for_stop(stop, 2.0 * self.rng.uniform(0.5, 1.5))

    async def _deliver(self, client: OutboundClient, claimed: Claimed,
                       recorded: RecordedEvent | None) -> None:
        outcome = await self._attempt(client, claimed, recorded)
        async with self.pool.connection() as conn:
            kept = await webhook_deliveries.finish(conn, claimed, outcome)
            if kept and outcome.outcome == "disabled":
                await self.endpoints.set_enabled(
                    claimed.workspace, claimed.endpoint_id, False,
                    f"the receiver answered 410 Gone at {datetime.now(UTC).isoformat()}",
                    conn=conn,
                )
                await webhook_deliveries.cancel_pending(conn, claimed.workspace,
                                                        claimed.endpoint_id)
        if outcome.outcome == "delivered":
            self.sent += 1

    async def _attempt(self, client: OutboundClient, claimed: Claimed,
                       recorded: RecordedEvent | None) -> Outcome:
        """`recorded`: the delivery's event as read with the claim (None: not in the ledger)."""
        secrets = self.endpoints.open(claimed.workspace, claimed.endpoint_id, claimed.secrets)
        if recorded is None or recorded.workspace != claimed.workspace:
            return Outcome(outcome="failed", error="the event is not in the ledger")
        body = encode_payload(build_payload(recorded))
        try:
            await self.guard.check(claimed.workspace, claimed.url)
        except BlockedDestination as exc:
            return self._retry_or_fail(claimed, None, None, f"blocked destination: {exc}")
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": claimed.webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": sign(secrets, claimed.webhook_id, now, body),
        }
        started = time.perf_counter()
        try:
            response = await client.post(claimed.url, body, headers)
        except OutboundFailed as exc:
            latency = (time.perf_counter() - started) * 1000
            return self._retry_or_fail(claimed, None, None, f"no answer: {exc}", latency)
        latency = (time.perf_counter() - started) * 1000
        code = response.status
        if 200 <= code < 300:
            return Outcome(outcome="delivered", status_code=code, latency_ms=latency)
        text = response.body[:MAX_BODY_IN_ERROR].decode(errors="replace")
        error = f"HTTP {code}: {text}".rstrip(": ")
        return self._retry_or_fail(claimed, code, response.retry_after, error, latency)

    def _retry_or_fail(self, claimed: Claimed, code: int | None, retry_after: str | None,
                       error: str, latency: float | None = None) -> Outcome:
        outcome, delay = decide(code, retry_after, claimed.attempts, self.options, self.rng,
                                datetime.now(UTC))
        return Outcome(outcome=outcome, status_code=code, latency_ms=latency, error=error,
                       retry_in_s=delay)
