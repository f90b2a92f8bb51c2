"""The shapes of /v1/webhooks (api/http/webhooks.py): request bodies, views of endpoints and of
the delivery log, and their cursors. Secrets appear in one view only, WebhookEndpointWithSecret,
answered on create and rotate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from processors.webhook_deliveries import Attempt, Delivery
from processors.webhook_endpoints import Endpoint

Status = Literal["pending", "delivered", "failed", "cancelled"]


class WebhookCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[str, Meta(max_length=2000, description="Where to POST; http(s).")]
    event_types: Annotated[list[str], Meta(
        max_length=100, description="Webhook event types (GET /v1/webhooks/event-types); "
        "empty or `lead.*`: every type.")] = []
    filter: Annotated[str, Meta(
        max_length=2000, description="A CEL expression over the payload (`type`, `timestamp`, "
        "`data`), e.g. `data.event.stage == \"sql\"`; only matching events are sent.")] | None \
        = None
    description: Annotated[str, Meta(max_length=500)] = ""


class WebhookPatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[str, Meta(max_length=2000)] | UnsetType = UNSET
    event_types: Annotated[list[str], Meta(max_length=100)] | UnsetType = UNSET
    filter: Annotated[str, Meta(max_length=2000, description="null removes it.")] | None | \
        UnsetType = UNSET
    description: Annotated[str, Meta(max_length=500)] | UnsetType = UNSET


class RotateSecret(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    previous_valid_for_s: Annotated[int, Meta(
        ge=0, le=7 * 86_400, description="How long the old secret keeps signing too (two "
        "signatures per request); 0 stops it at once.")] = 86_400
    secret: Annotated[str, Meta(
        max_length=200, description="A secret of your own (whsec_ + base64 of 24-64 bytes); "
        "default: a new random one.")] | None = None


class DisableRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] | None = None


class RedeliverRange(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    since: Annotated[datetime | None, Meta(description="Events recorded at or after.")] = None
    until: Annotated[datetime | None, Meta(description="Events recorded before.")] = None
    after: Annotated[str | None, Meta(
        description="Events after this ledger position (`<tx>-<pos>`).")] = None
    until_position: Annotated[str | None, Meta(
        description="Events at or before this ledger position.")] = None


class WebhookEndpointView(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    url: str
    description: str
    event_types: list[str]
    filter: str | None
    enabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: Annotated[datetime | None, Meta(
        description="Until when the rotated-out secret still signs.")]
    created_by: Annotated[str, Meta(description="The API key that created it.")]
    created_at: datetime
    updated_at: datetime


class WebhookEndpointWithSecret(WebhookEndpointView, frozen=True, kw_only=True):
    secret: Annotated[str, Meta(description="The signing secret: shown this once only.")]


class WebhookEndpointPage(msgspec.Struct, frozen=True):
    data: list[WebhookEndpointView]
    next_cursor: str | None = None


class WebhookEventTypeView(msgspec.Struct, frozen=True):
    type: str
    ledger_type: str
    description: str
    example: dict[str, Any]


class AttemptView(msgspec.Struct, frozen=True):
    at: datetime
    outcome: Annotated[str, Meta(description="delivered, retry, failed or disabled (410).")]
    status_code: int | None
    latency_ms: float | None
    error: str | None


class DeliveryView(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    webhook_id: str
    event_id: str
    event_type: str
    lead_id: str
    lead_version: int
    position: str
    event_at: datetime
    status: Status
    attempts: Annotated[int, Meta(description="Attempts in the current round (a redelivery "
                                  "starts a new one; `attempt_log` keeps them all).")]
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[AttemptView]


class DeliveryPage(msgspec.Struct, frozen=True):
    data: list[DeliveryView]
    next_cursor: str | None = None


class RedeliveryCount(msgspec.Struct, frozen=True):
    redelivered: int


class EndpointCursor(msgspec.Struct, frozen=True, array_like=True):
    after_id: str


class DeliveryCursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    before_id: int


def endpoint_view(endpoint: Endpoint) -> WebhookEndpointView:
    fields = msgspec.structs.asdict(endpoint)
    fields.pop("workspace")
    fields["event_types"] = list(endpoint.event_types)
    return WebhookEndpointView(**fields)


def with_secret(endpoint: Endpoint, secret: str) -> WebhookEndpointWithSecret:
    fields = msgspec.structs.asdict(endpoint_view(endpoint))
    return WebhookEndpointWithSecret(**fields, secret=secret)


def delivery_view(delivery: Delivery, attempts: list[Attempt]) -> DeliveryView:
    return DeliveryView(
        id=delivery.id, webhook_id=delivery.webhook_id, event_id=delivery.event_id,
        event_type=delivery.event_type, lead_id=delivery.lead_id,
        lead_version=delivery.lead_version, position=delivery.position.token(),
        event_at=delivery.event_at, status=delivery.status,  # type: ignore[arg-type]
        attempts=delivery.attempts,
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        last_status_code=delivery.last_status_code, last_error=delivery.last_error,
        last_attempt_at=delivery.last_attempt_at, delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        attempt_log=[AttemptView(at=a.at, outcome=a.outcome, status_code=a.status_code,
                                 latency_ms=a.latency_ms, error=a.error) for a in attempts],
    )
