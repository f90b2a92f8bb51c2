"""/v1/leads/{id}/notes: add a note to a lead; list its notes.

Notes are served from the lead's ledger stream rather than from a read model: a lead has few
events, the stream is read by one indexed query and decrypted in process, and the answer is
always complete and consistent with the write that was just made (no read-your-writes wait).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED

from api.http.context import write_metadata
from api.http.cursors import decode_cursor, encode_cursor
from api.http.docs import WRITE_HEADERS, IdempotencyKeyHeader, ReasonHeader
from api.http.idempotency import Reply, derived_id, derived_ids, reply, run_idempotent
from api.http.lead_views import write_headers
from api.http.leads import WRITE_PROBLEMS, LeadId, require_lead_id
from api.http.problems import problem_responses
from api.http.representations import MAX_PAGE, Author, Note, NoteCreate, NotePage
from api.http.services import Services
from ledger.errors import LeadNotFound
from ledger.store import RecordedEvent
from schema.commands import AddNote
from schema.events import LeadNoteAdded


class NotesCursor(msgspec.Struct, frozen=True, array_like=True):
    after_version: int


def note_of(recorded: RecordedEvent) -> Note:
    event = recorded.event
    assert isinstance(event, LeadNoteAdded)
    actor = recorded.metadata.actor
    return Note(
        id=event.note_id,
        text=None if recorded.redacted else event.text,
        author=Author(key_id=actor.key_id, role=actor.role),
        created_at=recorded.recorded_at,
        version=recorded.version,
    )


class NotesController(Controller):
    path = "/v1/leads/{lead_id:str}/notes"
    tags = ["notes"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Add a note to a lead",
        description="Notes are personal data: encrypted in the ledger, erased with the lead. "
        "Send an `Idempotency-Key` to make retries safe.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def add(
        self,
        request: Request,
        lead_id: LeadId,
        data: NoteCreate,
        services: Services,
        idempotency_key: IdempotencyKeyHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Note]:
        require_lead_id(lead_id)

        async def work(request_uuid: uuid.UUID | None) -> Reply:
            note_id = derived_id(request_uuid, "note")
            result = await services.writer.execute(
                request.user.key.workspace, lead_id, AddNote(note_id=note_id, text=data.text),
                write_metadata(request, data.reason), event_ids=derived_ids(request_uuid, "note"),
            )
            actor = request.user.key
            note = Note(
                id=note_id, text=data.text, author=Author(key_id=actor.key_id, role=actor.role),
                created_at=result.updated_at, version=result.state.version,
            )
            return reply(HTTP_201_CREATED, note, write_headers(result))

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]

    @get(
        "/",
        summary="A lead's notes",
        description="Oldest first. Read from the ledger: a note is listed as soon as it is added.",
        responses=problem_responses(400, 401, 404, 422, 429),
    )
    async def notes(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
    ) -> NotePage:
        require_lead_id(lead_id)
        after = decode_cursor(cursor, NotesCursor).after_version if cursor else 0
        stream = await services.runtime.store.read_stream(request.user.key.workspace, lead_id)
        if not stream.events:
            raise LeadNotFound("no such lead in this workspace")
        notes = [
            note_of(r) for r in stream.events
            if isinstance(r.event, LeadNoteAdded) and r.version > after
        ]
        page = notes[:limit]
        next_cursor = encode_cursor(NotesCursor(page[-1].version)) if len(notes) > limit else None
        return NotePage(data=page, next_cursor=next_cursor)
