"""Webhook deliveries and their attempts: all SQL against `webhook_deliveries` and
`webhook_attempts`.

The webhooks reactor records one pending row per (endpoint, event), idempotently (a re-run of
the same event inserts nothing) and wakes the senders (NOTIFY). Senders claim due rows with
`FOR UPDATE SKIP LOCKED` (any number of sender processes, no row twice) and lease them by pushing
`next_attempt_at` past the request's timeout: the request itself runs outside any transaction (a
transaction held open over HTTP would hold back every gap-safe reader of the ledger), and a
sender killed mid-request simply lets the row fall due again. Each attempt's result is written
with the claim id it was made under, so a sender whose lease ran out cannot overwrite a newer
claim's result.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec
import psycopg

from ledger.store import RecordedEvent
from processors.webhook_endpoints import SealedSecrets
from schema.positions import LogPosition

PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
STATUSES = (PENDING, DELIVERED, FAILED, CANCELLED)
CHANNEL = "webhook_deliveries"
MAX_ERROR_LENGTH = 500


class NewDelivery(msgspec.Struct, frozen=True):
    endpoint_id: str
    webhook_id: str
    event_type: str


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    workspace: str
    endpoint_id: str
    webhook_id: str
    event_id: str
    event_type: str
    lead_id: str
    lead_version: int
    position: LogPosition
    event_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class Claimed(msgspec.Struct, frozen=True, kw_only=True):
    """A delivery a sender holds: what it needs to send it."""

    id: int
    claim: uuid.UUID
    workspace: str
    endpoint_id: str
    url: str
    webhook_id: str
    event_id: str
    lead_id: str
    lead_version: int
    attempts: int
    """Attempts made before this one (in this round)."""
    secrets: SealedSecrets
    """Read with the claim: no query of its own per delivery, and never older than it."""


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    delivery_id: int
    at: datetime
    status_code: int | None
    latency_ms: float | None
    error: str | None
    outcome: str


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt came to, as the sender decided (processors/webhook_sender.py)."""

    outcome: str  # delivered, retry, failed, disabled
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None
    retry_in_s: float | None = None


_COLUMNS = (
    "id, workspace, endpoint_id, webhook_id, event_id, event_type, lead_id, lead_version, "
    "transaction_id, position, event_at, status, attempts, next_attempt_at, last_status_code, "
    "last_error, last_attempt_at, delivered_at, created_at"
)

# The senders are woken in the same statement, and only when something new was recorded.
_RECORD = """
WITH recorded AS (
    INSERT INTO webhook_deliveries
        (workspace, endpoint_id, webhook_id, event_id, event_type, lead_id, lead_version,
         transaction_id, position, event_at)
    SELECT %s, endpoint_id, webhook_id, %s, event_type, %s, %s, %s, %s, %s
    FROM unnest(%s::text[], %s::text[], %s::text[]) AS n (endpoint_id, webhook_id, event_type)
    ON CONFLICT (workspace, endpoint_id, event_id) DO NOTHING
    RETURNING 1
)
SELECT pg_notify(%s, '') FROM (SELECT 1 FROM recorded LIMIT 1) AS any_recorded
"""

# Only the oldest pending delivery of each (endpoint, lead) is eligible: a lead's events reach
# an endpoint in ledger order (its versions), and one in flight (pending, leased into the
# future) holds back the next. SKIP LOCKED lets concurrent senders pass over rows another one
# is claiming right now; the lease then keeps them off it until its request is done.
_CLAIM = """
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    JOIN webhook_endpoints e ON e.workspace = d.workspace AND e.id = d.endpoint_id
    WHERE d.status = 'pending' AND d.next_attempt_at <= now() AND e.enabled
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries o
          WHERE o.workspace = d.workspace AND o.endpoint_id = d.endpoint_id
            AND o.lead_id = d.lead_id AND o.status = 'pending'
            AND o.lead_version < d.lead_version)
    ORDER BY d.next_attempt_at, d.id
    LIMIT %s
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => %s), claimed_by = %s
FROM due, webhook_endpoints e
WHERE d.id = due.id AND e.workspace = d.workspace AND e.id = d.endpoint_id
RETURNING d.id, d.workspace, d.endpoint_id, e.url, d.webhook_id, d.event_id, d.lead_id,
          d.lead_version, d.attempts, e.secret_key, e.secret,
          CASE WHEN e.previous_expires_at > now() THEN e.previous_secret END
"""

# The attempt is logged whatever happens; the delivery moves on only while the claim holds.
_FINISH = """
WITH attempt AS (
    INSERT INTO webhook_attempts (workspace, delivery_id, status_code, latency_ms, error,
                                  outcome)
    VALUES (%s, %s, %s, %s, %s, %s)
), moved AS (
    UPDATE webhook_deliveries
    SET status = %s, attempts = attempts + 1,
        next_attempt_at = now() + make_interval(secs => %s), claimed_by = NULL,
        last_status_code = %s, last_error = %s, last_attempt_at = now(),
        delivered_at = CASE WHEN %s = 'delivered' THEN now() ELSE delivered_at END
    WHERE id = %s AND claimed_by = %s AND status = 'pending'
    RETURNING 1
)
SELECT count(*) FROM moved
"""

_CANCEL_PENDING = """
UPDATE webhook_deliveries SET status = 'cancelled', claimed_by = NULL
WHERE workspace = %s AND endpoint_id = %s AND status = 'pending'
"""

_PAGE = f"""
SELECT {_COLUMNS} FROM webhook_deliveries
WHERE workspace = %s AND endpoint_id = %s AND id < %s AND (%s::text IS NULL OR status = %s)
ORDER BY id DESC LIMIT %s
"""

_ONE = f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE workspace = %s AND endpoint_id = %s " \
    "AND id = %s"

_ATTEMPTS = """
SELECT delivery_id, at, status_code, latency_ms, error, outcome FROM webhook_attempts
WHERE workspace = %s AND delivery_id = ANY(%s) ORDER BY delivery_id, id
"""

# A redelivery starts the schedule again, with the same webhook id; the attempts log keeps
# every earlier attempt. A row a sender holds right now loses its claim: the sender's result
# is then not written over it (see _FINISH), and it is sent once more.
_REDELIVER_SET = """
SET status = 'pending', attempts = 0, next_attempt_at = now(), claimed_by = NULL
"""
_REDELIVER_ONE = f"""
UPDATE webhook_deliveries {_REDELIVER_SET}
WHERE workspace = %s AND endpoint_id = %s AND id = %s RETURNING {_COLUMNS}
"""
_REDELIVER_RANGE = f"""
UPDATE webhook_deliveries {_REDELIVER_SET}
WHERE workspace = %s AND endpoint_id = %s AND status <> 'pending'
  AND (%s::timestamptz IS NULL OR event_at >= %s)
  AND (%s::timestamptz IS NULL OR event_at < %s)
  AND (transaction_id, position) > (%s, %s)
  AND (transaction_id, position) <= (%s, %s)
"""

_NOTIFY = "SELECT pg_notify(%s, '')"


def _delivery(row: tuple) -> Delivery:
    (id_, workspace, endpoint_id, webhook_id, event_id, event_type, lead_id, lead_version, tx,
     pos, event_at, status, attempts, next_at, code, error, last_at, delivered_at,
     created_at) = row
    return Delivery(
        id=id_, workspace=workspace, endpoint_id=endpoint_id, webhook_id=webhook_id,
        event_id=event_id, event_type=event_type, lead_id=lead_id, lead_version=lead_version,
        position=LogPosition(tx, pos), event_at=event_at, status=status, attempts=attempts,
        next_attempt_at=next_at, last_status_code=code, last_error=error,
        last_attempt_at=last_at, delivered_at=delivered_at, created_at=created_at,
    )


async def record(
    conn: psycopg.AsyncConnection, recorded: RecordedEvent, deliveries: list[NewDelivery]
) -> None:
    """Pending deliveries of one event (idempotent), and a wake-up for the senders."""
    await conn.execute(_RECORD, (
        recorded.workspace, recorded.event_id, recorded.stream_id, recorded.version,
        recorded.transaction_id, recorded.position, recorded.recorded_at,
        [d.endpoint_id for d in deliveries], [d.webhook_id for d in deliveries],
        [d.event_type for d in deliveries], CHANNEL,
    ))


async def claim(
    conn: psycopg.AsyncConnection, limit: int, lease_s: float, claim_id: uuid.UUID
) -> list[Claimed]:
    async with conn.transaction():
        cur = await conn.execute(_CLAIM, (limit, lease_s, claim_id))
        rows = await cur.fetchall()
    return [
        Claimed(id=r[0], claim=claim_id, workspace=r[1], endpoint_id=r[2], url=r[3],
                webhook_id=r[4], event_id=r[5], lead_id=r[6], lead_version=r[7], attempts=r[8],
                secrets=SealedSecrets(r[9], r[10], r[11]))
        for r in rows
    ]


async def finish(conn: psycopg.AsyncConnection, claimed: Claimed, outcome: Outcome) -> bool:
    """Logs the attempt and moves the delivery on; False when the claim was lost meanwhile (a
    redelivery, or a lease that ran out), in which case only the attempt is logged."""
    status = {"delivered": DELIVERED, "retry": PENDING}.get(outcome.outcome, FAILED)
    error = outcome.error[:MAX_ERROR_LENGTH] if outcome.error else None
    cur = await conn.execute(_FINISH, (
        claimed.workspace, claimed.id, outcome.status_code, outcome.latency_ms, error,
        outcome.outcome,
        status, outcome.retry_in_s or 0.0, outcome.status_code, error, status, claimed.id,
        claimed.claim,
    ))
    row = await cur.fetchone()
    return row is not None and row[0] > 0


async def cancel_pending(conn: psycopg.AsyncConnection, workspace: str, endpoint_id: str) -> int:
    cur = await conn.execute(_CANCEL_PENDING, (workspace, endpoint_id))
    return cur.rowcount


async def page(
    conn: psycopg.AsyncConnection, workspace: str, endpoint_id: str, *, before_id: int | None,
    status: str | None, limit: int,
) -> list[Delivery]:
    """Newest first."""
    cur = await conn.execute(_PAGE, (
        workspace, endpoint_id, before_id if before_id is not None else 2**63 - 1, status, status,
        limit,
    ))
    return [_delivery(r) for r in await cur.fetchall()]


async def get(
    conn: psycopg.AsyncConnection, workspace: str, endpoint_id: str, delivery_id: int
) -> Delivery | None:
    cur = await conn.execute(_ONE, (workspace, endpoint_id, delivery_id))
    row = await cur.fetchone()
    return _delivery(row) if row else None


async def attempts_of(
    conn: psycopg.AsyncConnection, workspace: str, delivery_ids: list[int]
) -> dict[int, list[Attempt]]:
    cur = await conn.execute(_ATTEMPTS, (workspace, delivery_ids))
    found: dict[int, list[Attempt]] = {i: [] for i in delivery_ids}
    for delivery_id, at, code, latency, error, outcome in await cur.fetchall():
        found[delivery_id].append(Attempt(
            delivery_id=delivery_id, at=at, status_code=code, latency_ms=latency, error=error,
            outcome=outcome,
        ))
    return found


async def redeliver_one(
    conn: psycopg.AsyncConnection, workspace: str, endpoint_id: str, delivery_id: int
) -> Delivery | None:
    cur = await conn.execute(_REDELIVER_ONE, (workspace, endpoint_id, delivery_id))
    row = await cur.fetchone()
    await conn.execute(_NOTIFY, (CHANNEL,))
    return _delivery(row) if row else None


async def redeliver_range(
    conn: psycopg.AsyncConnection, workspace: str, endpoint_id: str, *,
    since: datetime | None, until: datetime | None, after: LogPosition | None,
    until_position: LogPosition | None,
) -> int:
    """Sends again every delivery (not pending already) of events recorded in [since, until)
    and at positions in (after, until_position]; returns how many."""
    low = after or LogPosition(-1, -1)
    high = until_position or LogPosition(2**63 - 1, 2**63 - 1)
    cur = await conn.execute(_REDELIVER_RANGE, (
        workspace, endpoint_id, since, since, until, until, low.transaction_id, low.position,
        high.transaction_id, high.position,
    ))
    await conn.execute(_NOTIFY, (CHANNEL,))
    return cur.rowcount
