"""The "webhooks" reactor: which endpoints get which ledger events.

For every lead event (processors/reactor.py runs it: ledger catch-up, NATS, order per lead,
bounded retries, dead letters) it takes the workspace's enabled endpoints (looked up once per
batch, for all of the batch's workspaces) and records a pending delivery for each one that subscribes to the event's type and whose CEL filter matches
the payload. Recording is `INSERT ... ON CONFLICT DO NOTHING` on (endpoint, event): a batch run
again after a crash records nothing new, so a receiver never sees an event twice because of the
reactor. Sending is the webhook sender's job (processors/webhook_sender.py), so a slow receiver
never holds back the ledger's readers.

An endpoint receives the events recorded after it was created: one added today is not sent
the workspace's whole history (redelivery covers what it should have had).
"""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from ledger.crypto import Keyring
from ledger.store import RecordedEvent
from processors import webhook_deliveries
from processors.webhook_deliveries import NewDelivery
from processors.webhook_endpoints import Endpoint, WebhookEndpoints
from processors.webhook_events import (
    build_payload,
    filter_context,
    is_lead_event,
    subscribed,
    webhook_id,
    webhook_type,
)
from processors.webhook_filters import compile_filter, matches

NAME = "webhooks"
MAX_CACHED_FILTERS = 1_000


class WebhooksReactor:
    name = NAME

    def __init__(self, endpoints: WebhookEndpoints, pool: AsyncConnectionPool) -> None:
        self.endpoints = endpoints
        self.pool = pool
        self._programs: dict[tuple[str, str], Any] = {}

    def wants(self, recorded: RecordedEvent) -> bool:
        return is_lead_event(recorded)

    async def prepare(self, events: list[RecordedEvent]) -> dict[str, list[Endpoint]]:
        """The enabled endpoints of the batch's workspaces, looked up once for the batch: an
        endpoint created or disabled meanwhile counts from the next batch, as it would from
        the next event."""
        return await self.endpoints.enabled_by_workspace(sorted({e.workspace for e in events}))

    async def react(self, recorded: RecordedEvent, prepared: dict[str, list[Endpoint]]) -> None:
        endpoints = prepared[recorded.workspace]
        if not endpoints:
            return
        chosen = self.choose(recorded, endpoints)
        if chosen:
            async with self.pool.connection() as conn:
                await webhook_deliveries.record(conn, recorded, chosen)

    def choose(self, recorded: RecordedEvent, endpoints: list[Endpoint]) -> list[NewDelivery]:
        event_type = webhook_type(recorded.event.event_type)
        candidates = [e for e in endpoints if e.created_at <= recorded.recorded_at
                      and subscribed(e.event_types, event_type)]
        if not candidates:
            return []  # most events of most endpoints: no payload to build
        context: dict[str, Any] | None = None
        chosen = []
        for endpoint in candidates:
            if endpoint.filter is not None:
                context = context if context is not None else filter_context(
                    build_payload(recorded))
                if not matches(self._program(endpoint.id, endpoint.filter), context):
                    continue
            chosen.append(NewDelivery(
                endpoint.id, webhook_id(endpoint.id, recorded.event_id), event_type
            ))
        return chosen

    def _program(self, endpoint_id: str, text: str) -> Any:
        key = (endpoint_id, text)
        program = self._programs.get(key)
        if program is None:
            if len(self._programs) >= MAX_CACHED_FILTERS:
                self._programs.clear()
            # Saved filters compiled when saved; one that no longer does (a library upgrade)
            # raises here and the event is retried, then parked in the dead letters.
            program = self._programs[key] = compile_filter(text)
        return program


def webhooks_reactor(pool: AsyncConnectionPool, keyring: Keyring) -> WebhooksReactor:
    return WebhooksReactor(WebhookEndpoints(pool, keyring), pool)
