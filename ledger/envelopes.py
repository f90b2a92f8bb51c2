"""Maps recorded ledger events to their CloudEvents envelopes (schema.envelope) and back.

The relay builds envelopes here; consumers turn an envelope back into the same RecordedEvent a
ledger read would have produced, so projections apply one type whatever the transport.
"""

from __future__ import annotations

from ledger.store import RecordedEvent
from schema.envelope import (
    CONTENT_TYPE,
    SPEC_VERSION,
    CloudEvent,
    encode_data,
    event_of,
    event_type_name,
    source_for,
)
from schema.metadata import Actor, EventMetadata
from schema.positions import LogPosition
from schema.registry import DEFAULT_REGISTRY, EventRegistry


def to_cloudevent(recorded: RecordedEvent, previous: LogPosition) -> CloudEvent:
    """`previous` is the position of the event published just before this one."""
    event = recorded.event
    meta = recorded.metadata
    return CloudEvent(
        specversion=SPEC_VERSION,
        id=recorded.event_id,
        source=source_for(recorded.workspace),
        type=event_type_name(event.event_type, event.schema_version),
        subject=recorded.stream_id,
        time=recorded.recorded_at,
        datacontenttype=CONTENT_TYPE,
        data=encode_data(event),
        workspace=recorded.workspace,
        streamversion=recorded.version,
        position=recorded.log_position.token(),
        previous=previous.token(),
        actorkeyid=meta.actor.key_id,
        actorrole=meta.actor.role,
        channel=meta.source,
        requestid=meta.request_id,
        correlationid=meta.correlation_id,
        causationid=meta.causation_id,
        reason=meta.reason,
        redacted=recorded.redacted,
    )


def from_cloudevent(
    envelope: CloudEvent, registry: EventRegistry = DEFAULT_REGISTRY
) -> RecordedEvent:
    position = LogPosition.parse(envelope.position)
    return RecordedEvent(
        position=position.position,
        transaction_id=position.transaction_id,
        event_id=envelope.id,
        workspace=envelope.workspace,
        stream_id=envelope.subject,
        version=envelope.streamversion,
        event=event_of(envelope, registry),
        metadata=EventMetadata(
            actor=Actor(key_id=envelope.actorkeyid, role=envelope.actorrole),
            source=envelope.channel,
            request_id=envelope.requestid,
            correlation_id=envelope.correlationid,
            causation_id=envelope.causationid,
            reason=envelope.reason,
        ),
        recorded_at=envelope.time,
        redacted=envelope.redacted,
    )
