"""The CloudEvents envelope and subjects: pure, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from ledger.envelopes import from_cloudevent, to_cloudevent
from ledger.store import RecordedEvent
from schema.envelope import (
    decode_envelope,
    encode_envelope,
    event_subject,
    lead_subjects,
    parse_type,
    subject_token,
)
from schema.events import LeadCreated, LeadFields, LeadTagged
from schema.metadata import Actor, EventMetadata
from schema.positions import LogPosition

META = EventMetadata(
    actor=Actor(key_id="key-9", role="sales"), source="import", request_id="r1",
    correlation_id="c1", causation_id="e0", reason="bulk upload",
)


def recorded(event, *, version: int = 1, position: int = 11) -> RecordedEvent:
    return RecordedEvent(
        position=position, transaction_id=900, event_id="0b6f7e1e-0000-4000-8000-000000000001",
        workspace="acme", stream_id="L-1", version=version, event=event, metadata=META,
        recorded_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )


def test_envelope_is_cloudevents_structured_json_with_ledger_extensions():
    event = LeadCreated(lead_id="L-1", fields=LeadFields(email="ada@example.com"), stage="lead")
    envelope = to_cloudevent(recorded(event), previous=LogPosition(899, 10))
    body = msgspec.json.decode(encode_envelope(envelope))
    assert body["specversion"] == "1.0"
    assert body["id"] == "0b6f7e1e-0000-4000-8000-000000000001"
    assert body["source"] == "/leadledger/acme"
    assert body["type"] == "leadledger.lead.LeadCreated.v1"
    assert body["subject"] == "L-1"
    assert body["time"] == "2026-01-02T03:04:05.678901Z"
    assert body["datacontenttype"] == "application/json"
    assert body["data"] == {"lead_id": "L-1", "fields": {"email": "ada@example.com"},
                            "stage": "lead", "owner": None, "tags": []}
    assert body["position"] == "900-11" and body["previous"] == "899-10"
    assert body["workspace"] == "acme" and body["streamversion"] == 1
    assert body["actorkeyid"] == "key-9" and body["actorrole"] == "sales"
    assert body["channel"] == "import" and body["reason"] == "bulk upload"
    assert body["correlationid"] == "c1" and body["causationid"] == "e0"
    assert "redacted" not in body  # optional extensions are omitted when empty
    assert all(name.isalnum() and name.islower() for name in body)


def test_envelope_round_trips_to_the_same_recorded_event():
    original = recorded(LeadTagged(tag="vip"), version=4)
    payload = encode_envelope(to_cloudevent(original, LogPosition()))
    assert from_cloudevent(decode_envelope(payload)) == original


def test_first_event_links_to_the_origin():
    envelope = to_cloudevent(recorded(LeadTagged(tag="x")), LogPosition())
    assert envelope.previous == "0-0"


def test_subject_tokens_escape_what_would_split_or_widen_a_subject():
    assert subject_token("acme") == "acme"
    assert subject_token("L_01-x") == "L_01-x"
    assert subject_token("a.b") == "a%2Eb"
    assert subject_token("a*>b c") == "a%2A%3Eb%20c"
    assert subject_token("é") == "%C3%A9"
    assert event_subject("ll", "acme", "L.1", "LeadTagged") == "ll.acme.lead.L%2E1.LeadTagged"
    assert lead_subjects("ll", "acme", "L1") == "ll.acme.lead.L1.*"


def test_type_parses_back_to_event_type_and_version():
    assert parse_type("leadledger.lead.LeadTagged.v3") == ("LeadTagged", 3)
    with pytest.raises(ValueError):
        parse_type("com.example.other")
