"""GET /v1/events: the ledger as a change feed, for warehouses and integrations.

Events of the key's workspace in ledger order, read gap-safely (an event that commits late is
never skipped: the feed only shows events below the oldest running transaction), with personal
fields decrypted (null once the lead's data is erased, and `redacted: true`). `next_cursor` is
always returned: poll it to follow the ledger.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter

from api.http.cursors import decode_cursor, encode_cursor
from api.http.problems import ProblemError, problem_responses
from api.http.representations import MAX_PAGE, ChangeEvent, EventPage
from api.http.services import Services
from ledger.store import RecordedEvent
from schema.positions import ORIGIN, LogPosition


class EventsCursor(msgspec.Struct, frozen=True, array_like=True):
    transaction_id: int
    position: int


def change_event(recorded: RecordedEvent) -> ChangeEvent:
    event = recorded.event
    return ChangeEvent(
        id=recorded.event_id,
        type=event.event_type,
        schema_version=event.schema_version,
        lead_id=recorded.stream_id,
        version=recorded.version,
        position=recorded.log_position.token(),
        recorded_at=recorded.recorded_at,
        data=msgspec.to_builtins(event),
        metadata=msgspec.to_builtins(recorded.metadata),
        redacted=recorded.redacted,
    )


class EventsController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @get(
        "/",
        summary="The change feed",
        description="Every event of the workspace in ledger order, a page at a time. Start "
        "without `after`; then pass each page's `next_cursor` as `after`.",
        responses=problem_responses(400, 401, 422, 429),
    )
    async def feed(
        self,
        request: Request,
        services: Services,
        after: Annotated[str | None, Parameter(
            max_length=512, description="A next_cursor from a previous page.")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> EventPage:
        start = ORIGIN
        if after:
            cursor = decode_cursor(after, EventsCursor, field="after")
            start = LogPosition(cursor.transaction_id, cursor.position)
            if not (0 <= start.transaction_id < 2**63 and 0 <= start.position < 2**63):
                raise ProblemError("bad-request", "the cursor is not one this API issued")
        records = await services.runtime.store.read_all(
            start, limit, workspace=request.user.key.workspace
        )
        last = records[-1].log_position if records else start
        return EventPage(
            data=[change_event(r) for r in records],
            next_cursor=encode_cursor(EventsCursor(last.transaction_id, last.position)),
        )
