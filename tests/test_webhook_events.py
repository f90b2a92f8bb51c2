"""Webhook contract, pure: every ledger event type has a webhook type, a description and an example;
payloads have the Standard Webhooks shape and never carry an erased lead's personal data;
webhook ids are stable per (endpoint, event); the retry schedule, Retry-After and 410; CEL
filters; signatures verify with the standardwebhooks package; docs/webhooks.md is current."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from ledger.errors import InvalidValue
from ledger.store import RecordedEvent
from processors.webhook_docs import EXAMPLE_METADATA, EXAMPLES, example_payload, render_markdown
from processors.webhook_endpoints import (
    EndpointSpec,
    SigningSecrets,
    check_secret,
    check_spec,
    new_secret,
)
from processors.webhook_events import (
    BY_LEDGER_TYPE,
    EVENT_TYPES,
    RETRY_SCHEDULE_S,
    build_payload,
    encode_payload,
    filter_context,
    parse_retry_after,
    retry_delay_s,
    subscribed,
    webhook_id,
    webhook_type,
)
from processors.webhook_filters import InvalidFilter, compile_filter, matches
from processors.webhook_sender import SenderOptions, decide, sign
from schema.events import LEAD_EVENT_TYPES, LeadCreated, LeadFields, LeadNoteAdded

DOCS = Path(__file__).resolve().parent.parent / "docs" / "webhooks.md"
NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def recorded(event, *, redacted: bool = False, version: int = 1) -> RecordedEvent:
    return RecordedEvent(
        position=7, transaction_id=3, event_id="e-1", workspace="acme", stream_id="L1",
        version=version, event=event, metadata=EXAMPLE_METADATA, recorded_at=NOW,
        redacted=redacted,
    )


def test_every_lead_event_type_is_a_documented_webhook_type_with_an_example():
    ledger_types = [t.event_type for t in LEAD_EVENT_TYPES]
    assert sorted(BY_LEDGER_TYPE) == sorted(ledger_types)
    assert sorted(EXAMPLES) == sorted(ledger_types)
    names = [t.type for t in EVENT_TYPES]
    assert len(names) == len(set(names))
    assert all(n.startswith("lead.") and n == n.lower() for n in names)
    for expected in ("lead.created", "lead.updated", "lead.scored", "lead.enriched",
                     "lead.assigned", "lead.stage_changed", "lead.merged", "lead.archived",
                     "lead.restored", "lead.erased", "lead.tagged", "lead.note_added",
                     "lead.activity_recorded", "lead.task_opened"):
        assert expected in names
    for t in EVENT_TYPES:
        assert webhook_type(t.ledger_type) == t.type
        assert example_payload(t.ledger_type).type == t.type
    assert webhook_type("LeadSomethingNew") == "lead.something_new"


def test_the_payload_has_the_standard_webhooks_shape():
    event = LeadCreated(lead_id="L1", stage="lead", fields=LeadFields(email="ada@x.example"))
    body = json.loads(encode_payload(build_payload(recorded(event))))
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "lead.created"
    assert body["timestamp"] == "2025-06-01T12:00:00Z"
    data = body["data"]
    assert (data["lead_id"], data["workspace"], data["event_id"], data["position"],
            data["version"], data["event_type"]) == ("L1", "acme", "e-1", "3-7", 1, "LeadCreated")
    assert data["event"]["fields"] == {"email": "ada@x.example"}
    assert data["redacted"] is False
    assert data["metadata"]["actor"] == {"key_id": "k_2b7f9d", "role": "sales"}


def test_an_erased_leads_personal_fields_are_null_in_the_payload():
    created = LeadCreated(lead_id="L1", stage="lead", fields=LeadFields(
        email="[redacted]", first_name="[redacted]", company="Acme"))
    data = json.loads(encode_payload(build_payload(recorded(created, redacted=True))))["data"]
    assert data["redacted"] is True
    assert data["event"]["fields"] == {"email": None, "first_name": None, "company": "Acme"}
    note = LeadNoteAdded(note_id="n1", text="[redacted]")
    data = json.loads(encode_payload(build_payload(recorded(note, redacted=True))))["data"]
    assert data["event"] == {"note_id": "n1", "text": None}


def test_webhook_ids_are_stable_per_endpoint_and_event():
    assert webhook_id("ep1", "e1") == webhook_id("ep1", "e1")
    assert webhook_id("ep1", "e1") != webhook_id("ep2", "e1") != webhook_id("ep1", "e2")
    assert webhook_id("ep1", "e1").startswith("msg_")


def test_type_subscriptions():
    assert subscribed((), "lead.created")
    assert subscribed(("lead.*",), "lead.erased")
    assert subscribed(("lead.created", "lead.scored"), "lead.scored")
    assert not subscribed(("lead.created",), "lead.scored")


def test_the_retry_schedule_is_the_specs_with_jitter_and_a_scale():
    assert RETRY_SCHEDULE_S == (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    assert retry_delay_s(1, None, 1.0, 1.0) == 5
    assert retry_delay_s(2, None, 1.0, 1.2) == pytest.approx(360)
    assert retry_delay_s(7, None, 0.001, 1.0) == pytest.approx(36)
    assert retry_delay_s(8, None, 1.0, 1.0) is None  # the eighth attempt was the last
    assert retry_delay_s(1, 120.0, 1.0, 1.0) == 120  # Retry-After is honoured
    assert retry_delay_s(3, 2.0, 1.0, 1.0) == 1800  # but never sooner than the schedule


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("7", NOW) == 7
    assert parse_retry_after("999999", NOW) == 86_400
    assert parse_retry_after("Sun, 01 Jun 2025 12:00:30 GMT", NOW) == 30
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_what_an_attempt_comes_to():
    options, rng = SenderOptions(retry_scale=1.0), random.Random(1)
    assert decide(204, None, 0, options, rng, NOW) == ("delivered", None)
    assert decide(410, None, 0, options, rng, NOW) == ("disabled", None)
    outcome, delay = decide(500, None, 0, options, rng, NOW)
    assert outcome == "retry" and 4 <= delay <= 6  # 5 s ± 20 %
    outcome, delay = decide(429, "60", 0, options, rng, NOW)
    assert outcome == "retry" and delay == 60
    outcome, delay = decide(500, "60", 0, options, rng, NOW)
    assert delay < 60  # Retry-After counts only on 429 and 503
    assert decide(None, None, 7, options, rng, NOW) == ("failed", None)


def test_signatures_verify_with_either_secret_during_a_rotation():
    old, new = new_secret(), new_secret()
    body = encode_payload(example_payload("LeadStageChanged"))
    at = datetime.now(UTC)
    header = sign(SigningSecrets(new, old), "msg_1", at, body)
    assert len(header.split(" ")) == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": header}
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers)["type"] == "lead.stage_changed"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    only_new = {**headers, "webhook-signature": sign(SigningSecrets(new, None), "msg_1", at,
                                                      body)}
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, only_new)
    assert "whsec" not in repr(SigningSecrets(new, old))


def test_filters_compile_on_save_and_report_where_they_are_wrong():
    with pytest.raises(InvalidFilter) as bad:
        compile_filter('type == "lead.created" &&& data.x')
    assert (bad.value.line, bad.value.column) == (1, 26)
    assert bad.value.field == "filter" and "line 1, column 26" in str(bad.value)
    with pytest.raises(InvalidFilter) as unknown:
        compile_filter('lead.stage == "mql"')
    assert "unknown variable 'lead'" in str(unknown.value)
    with pytest.raises(InvalidFilter):
        compile_filter("  ")
    program = compile_filter('type == "lead.stage_changed" && data.event.stage == "mql"')
    assert matches(program, filter_context(example_payload("LeadStageChanged")))
    assert not matches(program, filter_context(example_payload("LeadCreated")))
    missing = compile_filter('data.event.stage == "mql"')  # LeadCreated has no event.stage
    assert not matches(missing, filter_context(example_payload("LeadCreated")))
    scored = compile_filter("data.event.score >= 50.0")
    assert matches(scored, filter_context(example_payload("LeadScored")))


def test_endpoint_specs_and_secrets_are_checked():
    check_spec(EndpointSpec(url="https://hooks.example/in", event_types=("lead.created",)))
    for spec, field in (
        (EndpointSpec(url="ftp://x.example"), "url"),
        (EndpointSpec(url="https://x.example", event_types=("lead.nope",)), "event_types[0]"),
        (EndpointSpec(url="https://x.example", filter="data.x =="), "filter"),
    ):
        with pytest.raises(InvalidValue) as refused:
            check_spec(spec)
        assert refused.value.field == field
    check_secret(new_secret())
    for bad in ("whsec_c2hvcnQ=", "not-a-secret", "whsec_!!!"):
        with pytest.raises(InvalidValue):
            check_secret(bad)


def test_examples_are_json_of_their_type():
    for t in EVENT_TYPES:
        body = msgspec.json.decode(encode_payload(example_payload(t.ledger_type)))
        assert body["data"]["event_type"] == t.ledger_type
    assert example_payload("LeadTaskOpened").timestamp - NOW < timedelta(days=365 * 5)


def test_the_committed_docs_are_the_generators_output():
    assert DOCS.read_text() == render_markdown(), (
        "docs/webhooks.md is stale: python -m processors.webhook_docs > docs/webhooks.md"
    )
