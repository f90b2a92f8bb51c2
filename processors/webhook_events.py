"""Webhook event types and payloads (pure): what a subscriber receives for each ledger event.

Every lead event type of the ledger (schema.events.LEAD_EVENT_TYPES) is a webhook event type
(`LeadStageChanged` → `lead.stage_changed`), documented with an example built from the same
table, so the docs (processors/webhook_docs.py → docs/webhooks.md) and
`GET /v1/webhooks/event-types` cannot drift from what is sent.

A payload has the Standard Webhooks shape `{"type", "timestamp", "data"}`: `timestamp` is when
the ledger recorded the event (stable across retries; the `webhook-timestamp` header is the
send time), `data` carries the lead id, workspace, event id, ledger position and the event's own
fields, decrypted (the subscriber is the workspace's own system). Payloads are built from the
ledger when sent, never stored: once a lead is erased its key is gone, its personal fields read
as null and `redacted` is true, so no delivery (retry or redelivery) can leak them.

The webhook id (`webhook-id` header) is derived from (endpoint id, event id): a retry, a re-send
after a crash and a manual redelivery carry the same id, and receivers deduplicate on it.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from ledger.store import RecordedEvent
from schema.events import LEAD_EVENT_TYPES, Event
from schema.metadata import EventMetadata

WEBHOOK_IDS = uuid.UUID("6b1f0c4e-5a0d-4a8e-9a57-0f6f2a3c9d11")
"""Namespace of the uuid5 webhook ids (fixed forever: changing it changes every id)."""


class WebhookEventType(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    """The webhook event type, e.g. `lead.stage_changed`."""
    ledger_type: str
    """The ledger event it is sent for, e.g. `LeadStageChanged`."""
    description: str


def _t(ledger_type: str, webhook_type: str, description: str) -> WebhookEventType:
    return WebhookEventType(type=webhook_type, ledger_type=ledger_type, description=description)


EVENT_TYPES: tuple[WebhookEventType, ...] = (
    _t("LeadCreated", "lead.created", "A lead was created (API, import, CLI or a merge)."),
    _t("LeadFieldsChanged", "lead.updated",
       "Standard fields changed; `event.changes` holds only the changed fields (null: cleared)."),
    _t("LeadTagged", "lead.tagged", "A tag was added."),
    _t("LeadUntagged", "lead.untagged", "A tag was removed."),
    _t("LeadNoteAdded", "lead.note_added", "A note was added (its text is personal data)."),
    _t("LeadStageChanged", "lead.stage_changed", "The lead moved to another lifecycle stage."),
    _t("LeadOwnerAssigned", "lead.owner_changed", "A person set or cleared the lead's owner."),
    _t("LeadArchived", "lead.archived", "The lead was archived."),
    _t("LeadRestored", "lead.restored", "An archived lead was restored."),
    _t("LeadMergedInto", "lead.merged_into",
       "This lead was merged into another (`event.survivor_id`); it takes no more changes."),
    _t("LeadEmailChecked", "lead.email_checked",
       "The lead's email was validated (valid, risky or invalid, with reasons)."),
    _t("LeadEmailBounced", "lead.email_bounced", "The email platform reported a bounce."),
    _t("LeadMerged", "lead.merged",
       "Another lead (`event.absorbed_id`) was merged into this one, with what it contributed."),
    _t("LeadDuplicateSuspected", "lead.duplicate_suspected",
       "The lead looks like another one (`event.other_id`, `event.score` 0-100)."),
    _t("LeadDuplicateDismissed", "lead.duplicate_dismissed",
       "Someone decided the suspected duplicate is not one."),
    _t("LeadAttributesChanged", "lead.attributes_changed",
       "Custom attribute values were set or cleared."),
    _t("LeadActivityRecorded", "lead.activity_recorded",
       "A behavioural signal: a page view, form submit, email open, demo request..."),
    _t("LeadScored", "lead.scored",
       "The lead's score changed under the active scoring model, with each rule's points."),
    _t("LeadEnriched", "lead.enriched",
       "An enrichment provider found values (each with provenance) and maybe filled fields."),
    _t("LeadEnrichmentRequested", "lead.enrichment_requested",
       "Someone asked for the lead to be enriched again."),
    _t("LeadAssigned", "lead.assigned",
       "Routing assigned the lead to an owner, team or queue (`event.rule_name` decided)."),
    _t("LeadTaskOpened", "lead.task_opened", "A follow-up task was opened, due per the SLA."),
    _t("LeadTaskCompleted", "lead.task_completed", "A follow-up task was completed."),
    _t("LeadTaskReassigned", "lead.task_reassigned",
       "A task moved to another assignee (by a person, or escalated when overdue)."),
    _t("LeadErased", "lead.erased",
       "The person asked to be forgotten: the lead's personal data is destroyed everywhere."),
)
BY_LEDGER_TYPE: dict[str, WebhookEventType] = {t.ledger_type: t for t in EVENT_TYPES}
BY_WEBHOOK_TYPE: dict[str, WebhookEventType] = {t.type: t for t in EVENT_TYPES}
FILTER_VARIABLES = ("type", "timestamp", "data")
"""What a CEL filter reads: the payload's top-level fields."""

RETRY_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1_800, 7_200, 18_000, 36_000, 36_000)
"""The Standard Webhooks schedule: attempt n+1 waits RETRY_SCHEDULE_S[n] after attempt n failed
(the first is immediate); after the last, the delivery is given up (`failed`)."""
JITTER = 0.2
"""Each wait is scaled by a random factor in [1 - JITTER, 1 + JITTER]."""


class WebhookData(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    workspace: str
    event_id: str
    """The ledger event's id (one event, one webhook per endpoint)."""
    event_type: str
    """The ledger's event type, e.g. `LeadStageChanged`."""
    schema_version: int
    version: int
    """The lead's version after this event (its events count from 1)."""
    position: str
    """The event's ledger position (`<transaction id>-<position>`), comparable with
    `X-Consistency-Token`."""
    metadata: EventMetadata
    """Who (API key id and role), through what (`source`), why (`reason`), and the causal ids."""
    redacted: bool = False
    """True when the lead was erased: its personal fields are null."""
    event: dict[str, Any]
    """The event's own fields (see each type's example)."""


class WebhookPayload(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    timestamp: datetime
    data: WebhookData


_encode = msgspec.json.Encoder().encode


def webhook_type(ledger_type: str) -> str:
    """The webhook type of a ledger event type; a type added to the ledger without an entry
    above still gets a stable name (and the docs test fails until it is described)."""
    known = BY_LEDGER_TYPE.get(ledger_type)
    if known is not None:
        return known.type
    name = ledger_type.removeprefix("Lead")
    return "lead." + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def is_lead_event(recorded: RecordedEvent) -> bool:
    return type(recorded.event) in LEAD_EVENT_TYPES


def webhook_id(endpoint_id: str, event_id: str) -> str:
    """Stable per (endpoint, event): retries and redeliveries carry the same id."""
    return "msg_" + uuid.uuid5(WEBHOOK_IDS, f"{endpoint_id}/{event_id}").hex


def subscribed(event_types: tuple[str, ...], webhook_event_type: str) -> bool:
    """No types: every event. `lead.*` (or `*`) also matches every lead event."""
    if not event_types:
        return True
    return webhook_event_type in event_types or "lead.*" in event_types or "*" in event_types


def event_fields(event: Event, redacted: bool) -> dict[str, Any]:
    fields: dict[str, Any] = msgspec.to_builtins(event)
    if redacted:
        for path in event.personal:
            _null_path(fields, path.split("."))
    return fields


def _null_path(node: dict[str, Any], parts: list[str]) -> None:
    head, *rest = parts
    if head not in node:
        return
    if rest:
        child = node[head]
        if isinstance(child, dict):
            _null_path(child, rest)
    else:
        node[head] = None


def build_payload(recorded: RecordedEvent) -> WebhookPayload:
    event = recorded.event
    return WebhookPayload(
        type=webhook_type(event.event_type),
        timestamp=recorded.recorded_at.astimezone(UTC),
        data=WebhookData(
            lead_id=recorded.stream_id, workspace=recorded.workspace,
            event_id=recorded.event_id, event_type=event.event_type,
            schema_version=event.schema_version, version=recorded.version,
            position=recorded.log_position.token(), metadata=recorded.metadata,
            redacted=recorded.redacted, event=event_fields(event, recorded.redacted),
        ),
    )


def encode_payload(payload: WebhookPayload) -> bytes:
    """The request body: what is signed is exactly these bytes."""
    return _encode(payload)


def filter_context(payload: WebhookPayload) -> dict[str, Any]:
    """The variables a CEL filter sees: the payload as JSON types (timestamps as text)."""
    context: dict[str, Any] = msgspec.to_builtins(payload)
    return context


def retry_delay_s(attempts: int, retry_after_s: float | None, scale: float,
                  jitter: float) -> float | None:
    """How long to wait before the next attempt after `attempts` failed ones, or None when the
    schedule is exhausted (give up). `jitter` is the random factor in [1-JITTER, 1+JITTER];
    `scale` shrinks the schedule (tests). A receiver's Retry-After (429, 503) is honoured: never
    sooner than it asks, and never sooner than the schedule."""
    if attempts >= len(RETRY_SCHEDULE_S):
        return None
    scheduled = RETRY_SCHEDULE_S[attempts] * scale * jitter
    if retry_after_s is not None:
        return max(scheduled, retry_after_s)
    return scheduled


MAX_RETRY_AFTER_S = 86_400.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP-date), capped at a day; None
    when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_S)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - now).total_seconds()), MAX_RETRY_AFTER_S)
