"""The NATS contract as a document: `python -m schema.catalogue > docs/nats.md`.

Everything in docs/nats.md is generated here from the contract itself (the subjects of
schema/envelope.py, the CloudEvent envelope's fields, every event type of schema/events.py with
its msgspec JSON Schema and personal fields), so the document cannot drift from the code: a test
(tests/test_nats_docs.py) compares the committed file with this module's output.
"""

from __future__ import annotations

import inspect
import sys
from datetime import UTC, datetime

import msgspec

from schema.envelope import (
    CONTENT_TYPE,
    SPEC_VERSION,
    CloudEvent,
    encode_envelope,
    event_subject,
    event_type_name,
    lead_subjects,
    source_for,
    stream_subjects,
    workspace_subjects,
)
from schema.events import LEAD_EVENT_TYPES, Event, LeadAssigned

DEFAULT_STREAM = "LEADLEDGER"
DEFAULT_PREFIX = "leadledger"
DEFAULT_MAX_AGE_DAYS = 7
DEFAULT_DUPLICATE_WINDOW_S = 600
REDACTED = "[redacted]"
"""What a personal value reads as once its lead's key is destroyed (ledger/mapper.py)."""

ENVELOPE_FIELDS: dict[str, str] = {
    "specversion": f"CloudEvents version, always `{SPEC_VERSION}`.",
    "id": "The event's id (a UUID); also the message's `Nats-Msg-Id`. Deduplicate by it.",
    "source": "`/leadledger/<workspace>`.",
    "type": "`leadledger.lead.<EventType>.v<schema version>`.",
    "subject": "The lead's id.",
    "time": "When the ledger recorded the event (RFC 3339, UTC).",
    "datacontenttype": f"Always `{CONTENT_TYPE}`.",
    "data": "The event's fields (its schema below), personal fields decrypted.",
    "workspace": "The workspace the lead belongs to.",
    "streamversion": "The event's version in the lead's stream (1 for `LeadCreated`, then +1).",
    "position": "The event's ledger position, `<transaction id>-<position>`; totally ordered "
                "in publication order. The cursor of `GET /v1/events?after=`.",
    "previous": "The position of the message the relay published just before this one "
                "(`0-0` for the first). A `previous` you have not seen means a message was lost "
                "or aged out: read the gap from the ledger (`GET /v1/events`).",
    "actorkeyid": "Who: the API key id, `processor:<name>` for a processor, `system`...",
    "actorrole": "The actor's role (admin, ops, sales..., processor, system).",
    "channel": "Through what: api, cli, import, processor...",
    "requestid": "The HTTP request that caused it (omitted when none).",
    "correlationid": "Ties together everything one request set off (omitted when none).",
    "causationid": "The event that caused this one, for processor output (omitted when none).",
    "reason": "Why, as the actor gave it (omitted when none).",
    "redacted": "Present and true when the lead's key was destroyed before publication: "
                f"personal fields read `{REDACTED}`.",
}


def _example() -> CloudEvent:
    event = LeadAssigned(owner="ann@example.com", team="emea", rule_id="uk",
                         rule_name="UK leads", reason="rule 'UK leads' matched")
    return CloudEvent(
        specversion=SPEC_VERSION, id="5f0c1f0e-7f5b-5d59-9d8e-2f3a4b5c6d7e",
        source=source_for("acme"), type=event_type_name(event.event_type, event.schema_version),
        subject="0195a0c4-8a8e-7d42-b1c2-3d4e5f607182",
        time=datetime(2025, 3, 1, 12, 0, 0, 250000, tzinfo=UTC),
        datacontenttype=CONTENT_TYPE, data=msgspec.Raw(msgspec.json.encode(event)),
        workspace="acme", streamversion=3, position="48211-1093", previous="48210-1092",
        actorkeyid="processor:route", actorrole="processor", channel="processor",
        correlationid="a4f1c2d3e4f5061728394a5b6c7d8e9f",
        causationid="0b8e1d2c-3a4b-4c5d-8e6f-7a8b9c0d1e2f",
    )


def _shown(subject: str) -> str:
    """A subject built from the placeholder ids `WS` and `LEAD`, shown with readable names."""
    return subject.replace(".WS.", ".<workspace>.").replace(".LEAD.", ".<lead id>.")


def _json(value: object) -> str:
    return msgspec.json.format(msgspec.json.encode(value), indent=2).decode()


def _summary(cls: type[Event]) -> str:
    doc = inspect.getdoc(cls) or ""
    if doc.startswith(cls.__name__ + "("):  # msgspec's generated signature: no docstring
        return ""
    return " ".join(doc.split("\n\n")[0].split())


def _event_section(cls: type[Event]) -> list[str]:
    name = cls.event_type
    lines = [f"### {name}", ""]
    summary = _summary(cls)
    if summary:
        lines += [summary, ""]
    lines += [
        f"- CloudEvents `type`: `{event_type_name(name, cls.schema_version)}`",
        f"- subject: `<prefix>.<workspace>.lead.<lead id>.{name}`",
        "- personal fields: " + (", ".join(f"`{p}`" for p in cls.personal) or "none"),
        "",
        "```json",
        _json(msgspec.json.schema(cls)),
        "```",
        "",
    ]
    return lines


def render(stream: str = DEFAULT_STREAM, prefix: str = DEFAULT_PREFIX) -> str:
    example_subject = _shown(event_subject(prefix, "acme", "LEAD", "LeadAssigned"))
    out = [
        "# NATS: the ledger for downstream consumers",
        "",
        ("<!-- Generated by `python -m schema.catalogue > docs/nats.md` from schema/; do not "
        "edit by hand (tests/test_nats_docs.py fails when this file and the code differ). -->"),
        "",
        ("The relay publishes every committed ledger event, in ledger order, to one JetStream "
        "stream. Nothing else writes to it. A message is published after its transaction "
        "commits and only once per event id within the duplicate window (JetStream drops a "
        "republished `Nats-Msg-Id`); a relay crash may republish a batch after the window, so "
        "consumers deduplicate by `id` (or by `position`, which only grows)."),
        "",
        "## Stream and subjects",
        "",
        (f"- stream: `LEADLEDGER_STREAM` (default `{stream}`), subjects `{stream_subjects(prefix)}` "
        f"(the prefix is `LEADLEDGER_SUBJECT_PREFIX`, default `{prefix}`)"),
        ("- subject of an event: `<prefix>.<workspace>.lead.<lead id>.<EventType>`, e.g. "
        f"`{example_subject}`"),
        ("- a workspace or lead id outside `[A-Za-z0-9_-]` is written with `%XX` escapes (UTF-8) "
        f"in its token, e.g. workspace `a.b` is `{event_subject(prefix, 'a.b', 'L1', 'X')}`"),
        "",
        "Filters a consumer can use:",
        "",
        "| what | filter subject |",
        "|---|---|",
        f"| everything | `{stream_subjects(prefix)}` |",
        f"| one workspace | `{_shown(workspace_subjects(prefix, 'WS'))}` |",
        f"| one lead | `{_shown(lead_subjects(prefix, 'WS', 'LEAD'))}` |",
        f"| one event type, every workspace | `{prefix}.*.lead.*.LeadAssigned` |",
        "",
        ("Order: the relay publishes in ledger order, so one lead's messages arrive in stream "
        "version order on any filter; `position` orders everything."),
        "",
        "## Retention and resuming",
        "",
        ("- retention `limits`, discard `old`, file storage: messages stay until they are older "
        "than `LEADLEDGER_STREAM_MAX_AGE_DAYS` (default "
        f"{DEFAULT_MAX_AGE_DAYS} days), whether or not anyone consumed them. Changing the "
        "variable updates the stream on the next start."),
        ("- de-duplication window: `LEADLEDGER_DUPLICATE_WINDOW_S` (default "
        f"{DEFAULT_DUPLICATE_WINDOW_S} s, at most the max age)."),
        ("- Use a **durable** consumer (a pull consumer with a durable name, explicit acks): "
        "JetStream keeps its position, so a consumer that is slow or down for hours resumes "
        "where it stopped. Ack each message after handling it; an unacked message is "
        "redelivered after the consumer's ack wait."),
        ("- A consumer down for longer than the max age finds the oldest messages gone: its "
        "first message's `previous` is a position it never saw. It reads the gap, in order, "
        "from `GET /v1/events?after=<last position it handled>` (the same `data`, decrypted "
        "for the API key's workspace), then carries on from NATS."),
        ("- The runnable example consumer is `examples/nats_consumer.py` (see the README's "
        "\"Consuming events from NATS\")."),
        "",
        "## Personal data",
        "",
        ("`data` carries personal fields **decrypted**: the ledger stores them encrypted with "
        "the lead's own key, and the relay decrypts them when it publishes. Treat the stream as "
        "personal data (restrict who may subscribe). Each event type lists its personal fields "
        "below. A message published after the lead's key was destroyed (erasure) has "
        f"`redacted: true` and its personal fields read `{REDACTED}`. Messages published "
        "before the erasure stay in the stream until they age out, unless the lead's subjects "
        f"(`{_shown(lead_subjects(prefix, 'WS', 'LEAD'))}`) are purged."),
        "",
        "## The envelope (CloudEvents 1.0, structured JSON)",
        "",
        "| attribute | meaning |",
        "|---|---|",
        *[f"| `{name}` | {ENVELOPE_FIELDS[name]} |" for name in CloudEvent.__struct_fields__],
        "",
        "Example (`LeadAssigned`):",
        "",
        "```json",
        _json(msgspec.json.decode(encode_envelope(_example()))),
        "```",
        "",
        "JSON Schema of the envelope (`data` is the event, below):",
        "",
        "```json",
        _json(msgspec.json.schema(CloudEvent)),
        "```",
        "",
        "## Event types",
        "",
        ("Each event's `data`, by type (JSON Schema from the msgspec Structs in "
        "schema/events.py). Lead fields that were not given are absent from `fields` and "
        "`changes`; consumers should accept fields they do not know (new optional fields are "
        "added within a version; a breaking change gets a new `v<n>`)."),
        "",
        " ".join(f"[{c.event_type}](#{c.event_type.lower()})" for c in LEAD_EVENT_TYPES),
        "",
    ]
    for cls in LEAD_EVENT_TYPES:
        out += _event_section(cls)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
