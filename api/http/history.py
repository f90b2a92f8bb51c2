"""GET /v1/leads/{id}/history: the lead's audit trail, from its ledger stream.

Every event with who made it (key id and role), when, through what (api, import, processor,
mcp, cli), why (the reason given on the write), its request and correlation ids, and the
field-level before and after, computed by folding the stream with the lead's own `evolve`.
Served from the ledger itself, so it is always complete and never behind.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter
from msgspec import UNSET

from api.http.cursors import decode_cursor, encode_cursor
from api.http.leads import LeadId, require_lead_id
from api.http.problems import problem_responses
from api.http.representations import (
    MAX_PAGE,
    Author,
    FieldChange,
    HistoryEntry,
    HistoryPage,
)
from api.http.services import Services
from ledger.errors import LeadNotFound
from ledger.lead import INITIAL, LeadState, evolve
from ledger.store import RecordedEvent
from schema.events import FIELD_NAMES, LeadNoteAdded

_SKIP = frozenset({"version", "fields", "lead_id"})


class HistoryCursor(msgspec.Struct, frozen=True, array_like=True):
    after_version: int


def _plain(value: Any) -> Any:
    if value is UNSET:
        return None
    if isinstance(value, tuple):
        return list(value)
    return value


def field_changes(before: LeadState, after: LeadState, event: Any) -> list[FieldChange]:
    """What an event changed, field by field, in the order of the lead's attributes."""
    changes = []
    for name in FIELD_NAMES:
        old, new = _plain(getattr(before.fields, name)), _plain(getattr(after.fields, name))
        if old != new:
            changes.append(FieldChange(field=name, before=old, after=new))
    for name in after.__struct_fields__:
        if name in _SKIP:
            continue
        old, new = _plain(getattr(before, name)), _plain(getattr(after, name))
        if old != new:
            changes.append(FieldChange(field=name, before=old, after=new))
    if isinstance(event, LeadNoteAdded):
        changes.append(
            FieldChange(field="note", before=None, after={"id": event.note_id, "text": event.text})
        )
    return changes


def history_entries(events: list[RecordedEvent]) -> list[HistoryEntry]:
    entries = []
    state = INITIAL
    for recorded in events:
        after = evolve(state, recorded.event)
        meta = recorded.metadata
        entries.append(HistoryEntry(
            version=recorded.version,
            event_id=recorded.event_id,
            type=type(recorded.event).event_type,
            recorded_at=recorded.recorded_at,
            actor=Author(key_id=meta.actor.key_id, role=meta.actor.role),
            source=meta.source,
            reason=meta.reason,
            request_id=meta.request_id,
            correlation_id=meta.correlation_id,
            position=recorded.log_position.token(),
            changes=field_changes(state, after, recorded.event),
            redacted=recorded.redacted,
        ))
        state = after
    return entries


class HistoryController(Controller):
    path = "/v1/leads/{lead_id:str}/history"
    tags = ["history"]

    @get(
        "/",
        summary="A lead's audit trail",
        description="Every change to the lead, oldest first: who, when, through what, why, and "
        "each field's value before and after. Read from the ledger: always complete. Personal "
        "values of an erased lead read as null, with `redacted: true`.",
        responses=problem_responses(400, 401, 404, 422, 429),
    )
    async def history(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
    ) -> HistoryPage:
        require_lead_id(lead_id)
        after = decode_cursor(cursor, HistoryCursor).after_version if cursor else 0
        stream = await services.runtime.store.read_stream(request.user.key.workspace, lead_id)
        if not stream.events:
            raise LeadNotFound("no such lead in this workspace")
        entries = [e for e in history_entries(stream.events) if e.version > after]
        page = entries[:limit]
        next_cursor = (
            encode_cursor(HistoryCursor(page[-1].version)) if len(entries) > limit else None
        )
        return HistoryPage(data=page, next_cursor=next_cursor)
