"""The wire contract of the ledger on NATS: one CloudEvents 1.0 structured JSON envelope per
event, and the subjects those envelopes are published on.

Every consumer downstream of the relay (projections, processors, external subscribers) depends
on this module only. An envelope carries the decrypted event as `data` plus, as CloudEvents
extension attributes, where the event sits in the ledger (`position`) and which event the relay
published just before it (`previous`): a consumer that sees a `previous` it did not process
knows that NATS lost or no longer holds a message, and reads the gap from the ledger.
"""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from schema.events import Event
from schema.registry import EventRegistry

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
STREAM_TYPE = "lead"
"""The only kind of stream the ledger holds today; it is the third token of every subject."""

_TYPE = re.compile(r"^leadledger\.(?P<stream>[a-z]+)\.(?P<event>[A-Za-z0-9]+)\.v(?P<version>\d+)$")
_PLAIN_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


class CloudEvent(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A CloudEvents 1.0 structured-mode envelope. Extension attribute names are lowercase
    alphanumerics, as the specification requires; optional ones are omitted when empty."""

    specversion: str
    id: str
    source: str
    type: str
    subject: str
    time: datetime
    datacontenttype: str
    data: msgspec.Raw
    # -- extensions: where the event sits in the ledger ------------------------------------
    workspace: str
    streamversion: int
    position: str
    previous: str
    # -- extensions: who, through what, why (the event's metadata) ---------------------------
    actorkeyid: str
    actorrole: str
    channel: str
    requestid: str | None = None
    correlationid: str | None = None
    causationid: str | None = None
    reason: str | None = None
    redacted: bool = False
    """True when the subject's key was destroyed before publication: personal fields are
    placeholders."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(CloudEvent)


def encode_envelope(envelope: CloudEvent) -> bytes:
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes) -> CloudEvent:
    return _decoder.decode(payload)


def encode_data(event: Event) -> msgspec.Raw:
    """The event's facts as JSON (ClassVars such as `event_type` are not part of the data)."""
    return msgspec.Raw(_encoder.encode(event))


def event_type_name(event_type: str, schema_version: int, stream_type: str = STREAM_TYPE) -> str:
    return f"leadledger.{stream_type}.{event_type}.v{schema_version}"


def parse_type(type_: str) -> tuple[str, int]:
    """(event type, schema version) of a CloudEvents `type` written by `event_type_name`."""
    match = _TYPE.match(type_)
    if match is None:
        raise ValueError(f"not a leadledger event type: {type_!r}")
    return match["event"], int(match["version"])


def source_for(workspace: str) -> str:
    return f"/leadledger/{workspace}"


def event_of(envelope: CloudEvent, registry: EventRegistry) -> Event:
    """The typed event inside an envelope; an older schema version is upcast."""
    event_type, version = parse_type(envelope.type)
    cls = registry.event_class(event_type)
    if version == cls.schema_version:
        return msgspec.json.decode(envelope.data, type=cls)
    return registry.load(event_type, version, msgspec.json.decode(envelope.data))


# -- subjects --------------------------------------------------------------------------------


def subject_token(text: str) -> str:
    """A NATS subject token for a workspace or stream id. Dots, wildcards and whitespace would
    split or widen the subject, so anything outside [A-Za-z0-9_-] is written as %XX (UTF-8)."""
    if _PLAIN_TOKEN.match(text):
        return text
    return "".join(
        ch if _PLAIN_TOKEN.match(ch) else "".join(f"%{b:02X}" for b in ch.encode())
        for ch in text
    )


def event_subject(
    prefix: str, workspace: str, stream_id: str, event_type: str, stream_type: str = STREAM_TYPE
) -> str:
    """`<prefix>.<workspace>.<stream type>.<stream id>.<event type>`."""
    return (
        f"{prefix}.{subject_token(workspace)}.{stream_type}.{subject_token(stream_id)}"
        f".{event_type}"
    )


def stream_subjects(prefix: str) -> str:
    """Every subject of the ledger stream."""
    return f"{prefix}.>"


def lead_subjects(prefix: str, workspace: str, lead_id: str) -> str:
    """All messages of one lead: what erasure purges."""
    return f"{prefix}.{subject_token(workspace)}.{STREAM_TYPE}.{subject_token(lead_id)}.*"


def workspace_subjects(prefix: str, workspace: str) -> str:
    """All messages of one workspace: what a workspace-scoped subscriber filters on."""
    return f"{prefix}.{subject_token(workspace)}.>"
