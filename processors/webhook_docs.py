"""The webhook documentation, generated: an example of every event type and docs/webhooks.md.

The examples are real payloads built by processors/webhook_events.py from example ledger events,
so what is documented (here, in docs/webhooks.md and at GET /v1/webhooks/event-types) is what
is sent. Regenerate the page after changing an event or its description:

    python -m processors.webhook_docs > docs/webhooks.md

(tests/test_webhook_events.py fails while the committed page differs from this output).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import msgspec

from ledger.store import RecordedEvent
from processors.webhook_events import (
    EVENT_TYPES,
    JITTER,
    RETRY_SCHEDULE_S,
    WebhookPayload,
    build_payload,
    encode_payload,
)
from schema.events import (
    EnrichmentValue,
    Event,
    LeadActivityRecorded,
    LeadArchived,
    LeadAssigned,
    LeadAttributesChanged,
    LeadCreated,
    LeadDuplicateDismissed,
    LeadDuplicateSuspected,
    LeadEmailBounced,
    LeadEmailChecked,
    LeadEnriched,
    LeadEnrichmentRequested,
    LeadErased,
    LeadFields,
    LeadFieldsChanged,
    LeadMerged,
    LeadMergedInto,
    LeadNoteAdded,
    LeadOwnerAssigned,
    LeadRestored,
    LeadScored,
    LeadStageChanged,
    LeadTagged,
    LeadTaskCompleted,
    LeadTaskOpened,
    LeadTaskReassigned,
    LeadUntagged,
    RuleContribution,
)
from schema.metadata import Actor, EventMetadata

LEAD = "0b7e3c1a-6f2d-4c55-9f1e-2d8a7b9c0e41"
OTHER = "5d2c9e7f-1a3b-4e6d-8c0f-7b1a2d3e4f50"
AT = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)
_ENRICHED_AT = AT - timedelta(seconds=2)

EXAMPLES: dict[str, Event] = {e.event_type: e for e in (
    LeadCreated(lead_id=LEAD, stage="lead", owner="owner@seller.example",
                tags=("webinar-2025",), fields=LeadFields(
                    first_name="Ada", last_name="Lovelace", email="ada@analytical.example",
                    company="Analytical Engines", title="Head of Engineering", country="GB",
                    source="web_form")),
    LeadFieldsChanged(changes=LeadFields(title="CTO", phone="+442071838750", city=None)),
    LeadTagged(tag="enterprise"),
    LeadUntagged(tag="webinar-2025"),
    LeadNoteAdded(note_id="3f9a1c2e", text="Asked for a demo next week."),
    LeadStageChanged(stage="mql", previous="lead"),
    LeadOwnerAssigned(owner="grace@seller.example", previous="owner@seller.example"),
    LeadArchived(),
    LeadRestored(),
    LeadMergedInto(survivor_id=OTHER),
    LeadEmailChecked(status="risky", reasons=("free_mail",)),
    LeadEmailBounced(kind="hard", detail="550 5.1.1 user unknown"),
    LeadMerged(absorbed_id=OTHER, changes=LeadFields(phone="+442071838750"), tags=("partner",)),
    LeadDuplicateSuspected(other_id=OTHER, score=91.5, matched=("name", "company")),
    LeadDuplicateDismissed(other_id=OTHER),
    LeadAttributesChanged(values={"plan": "enterprise", "seats": 250},
                          personal_values={"linkedin": "https://linkedin.example/in/ada"}),
    LeadActivityRecorded(activity_id="a-7781", kind="demo_request", occurred_at=AT,
                         properties={"page": "/pricing"}),
    LeadScored(model_id="m-1", model_version=3, score=72.0, band="warm",
               contributions=(RuleContribution(rule="demo requested", points=40.0, matched=True),
                              RuleContribution(rule="enterprise size", points=32.0,
                                               matched=True)),
               observed='{"demo requested": {"activity.demo_request": 1}}',
               cause_event_id="9c4e2a71-0d3b-4f8e-a6c5-1b2d3e4f5a60",
               cause_type="LeadActivityRecorded", digest="b1946ac92492d234"),
    LeadEnriched(provider="firmographics", trigger="created", values={
        "industry": EnrichmentValue(value="software", provider="firmographics",
                                    fetched_at=_ENRICHED_AT, confidence=0.9),
        "employee_range": EnrichmentValue(value="201-500", provider="firmographics",
                                          fetched_at=_ENRICHED_AT, confidence=0.9),
    }, fills=LeadFields(industry="software")),
    LeadEnrichmentRequested(providers=("firmographics",)),
    LeadAssigned(owner="grace@seller.example", team="emea", rule_id="r-2",
                 rule_name="EMEA enterprise", previous_owner="owner@seller.example",
                 reason="country GB, 201-500 employees"),
    LeadTaskOpened(task_id="t-41", kind="first_contact", assignee="grace@seller.example",
                   due_at=AT + timedelta(hours=4), reason="assigned"),
    LeadTaskCompleted(task_id="t-41", outcome="meeting booked"),
    LeadTaskReassigned(task_id="t-41", assignee="lead@seller.example",
                       previous="grace@seller.example", escalated=True,
                       due_at=AT + timedelta(hours=2), reason="overdue"),
    LeadErased(),
)}

EXAMPLE_METADATA = EventMetadata(
    actor=Actor(key_id="k_2b7f9d", role="sales"), source="api", request_id="req_8d1e",
    correlation_id="req_8d1e", reason="call notes",
)


def example_payload(ledger_type: str) -> WebhookPayload:
    recorded = RecordedEvent(
        position=1842, transaction_id=90771,
        event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"example/{ledger_type}")),
        workspace="acme", stream_id=LEAD, version=1 if ledger_type == "LeadCreated" else 4,
        event=EXAMPLES[ledger_type],
        metadata=EXAMPLE_METADATA, recorded_at=AT,
    )
    return build_payload(recorded)


def _json(payload: WebhookPayload) -> str:
    return json.dumps(json.loads(encode_payload(payload)), indent=2, ensure_ascii=False)


def _duration(seconds: float) -> str:
    if seconds == 0:
        return "immediately"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


_INTRO = """\
# Webhooks

<!-- Generated by `python -m processors.webhook_docs > docs/webhooks.md`; do not edit. -->

leadledger delivers every lead lifecycle event to your HTTPS endpoints per the
[Standard Webhooks](https://www.standardwebhooks.com/) specification: signed, retried, in order
per lead, at least once.

## Endpoints

`POST /v1/webhooks` (admin or ops) with `url`, optional `event_types` (none: every type;
`lead.*` also means every type), optional `filter` (a CEL expression over the payload, e.g.
`type == "lead.stage_changed" && data.event.stage == "sql"`; variables `type`, `timestamp`,
`data`; a filter that does not compile is refused with 422 and its line and column) and
`description`. The answer carries the signing secret (`whsec_...`) once; it is stored encrypted
and never shown again. `POST /v1/webhooks/{id}/rotate-secret` issues a new secret; the previous
one keeps signing too (two signatures per request) for 24 hours, or `previous_valid_for_s`.
`POST /v1/webhooks/{id}/disable` and `/enable` pause and resume an endpoint; pending deliveries
wait meanwhile. `GET /v1/webhooks/{id}/deliveries` is the delivery log (status, attempts, each
attempt's response code, latency and error); `POST /v1/webhooks/{id}/deliveries/{delivery}/
redeliver` sends one again, `POST /v1/webhooks/{id}/redeliver` a range (`since`/`until` times
or `after`/`until_position` ledger positions). Redeliveries carry the same `webhook-id`.

Endpoints may only be public addresses: a URL that resolves to a private, loopback or link-local
address is refused unless the workspace allow-lists its network (`PUT /v1/outbound/allowlist`).
Redirects are never followed.

## Requests

`POST` with `content-type: application/json` and these headers:

| header | value |
|---|---|
| `webhook-id` | `msg_<32 hex>`: the same for every attempt and redelivery of one event to one endpoint; deduplicate on it |
| `webhook-timestamp` | the send time, integer seconds since the epoch |
| `webhook-signature` | `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`; two, space-separated, while a rotated secret is still valid |

The body is `{"type": ..., "timestamp": ..., "data": {...}}`: `timestamp` is when the ledger
recorded the event, `data` holds the lead id, workspace, event id, the ledger's event type,
the lead's version after the event, the ledger position, the event's metadata (who, through
what, why) and `event`, the event's own fields. Personal fields are included (the endpoint is the
workspace's own system) until the lead is erased: after that they are null and `redacted` is
true, in retries and redeliveries too.

## Responses, retries and order

Any 2xx within the timeout (15 s) is a success. Anything else is retried on this schedule, each
wait varied by ±{jitter}% (jitter), counted from the failed attempt:

{schedule}

After the last attempt fails the delivery is `failed` (redeliver it by hand). A `429` or `503`
with `Retry-After` (seconds or an HTTP date, up to a day) is never retried sooner than it asks.
A `410 Gone` disables the endpoint (`disabled_reason` says why) and cancels its pending
deliveries. Deliveries for one lead are sent in ledger order: a lead's next event waits until
the one before it is delivered or given up. A sender that crashes mid-request sends again with
the same `webhook-id`: delivery is at least once, and deduplicating on `webhook-id` makes it
exactly once.

## Verifying signatures

```python
from standardwebhooks import Webhook, WebhookVerificationError

wh = Webhook("whsec_...")            # the endpoint's secret

def receive(body: bytes, headers: dict[str, str]):
    try:
        payload = wh.verify(body, headers)   # checks the signature and the timestamp (5 min)
    except WebhookVerificationError:
        return 400
    if seen(headers["webhook-id"]):          # retries and redeliveries repeat the id
        return 204
    handle(payload["type"], payload["data"])
    return 204
```

## Event types
"""


def render_markdown() -> str:
    rows = "\n".join(
        f"| {n + 1} | {_duration(s)} |" for n, s in enumerate(RETRY_SCHEDULE_S)
    )
    schedule = "| attempt | after the previous one |\n|---|---|\n" + rows
    parts = [_INTRO.replace("{jitter}", f"{JITTER * 100:g}").replace("{schedule}", schedule)]
    parts.append("| type | ledger event | what happened |\n|---|---|---|")
    parts += [f"| `{t.type}` | `{t.ledger_type}` | {t.description} |" for t in EVENT_TYPES]
    for t in EVENT_TYPES:
        parts.append(f"\n### `{t.type}`\n\n{t.description}\n\n```json\n"
                     f"{_json(example_payload(t.ledger_type))}\n```")
    return "\n".join(parts) + "\n"


def example_builtins(ledger_type: str) -> dict[str, object]:
    builtins: dict[str, object] = msgspec.json.decode(encode_payload(example_payload(ledger_type)))
    return builtins


if __name__ == "__main__":
    print(render_markdown(), end="")
