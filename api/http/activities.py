"""/v1/leads/{id}/activities: record what a person did (behavioural signals); list them.

An activity is a `LeadActivityRecorded` event on the lead's stream (RecordActivity through the
shared command path, like every lead write): its kind (page_view, form_submit, email_open,
email_click, demo_request, meeting, call, product_signup, custom with a name), when it happened
(`occurred_at`, default now; it may be earlier than when it is recorded) and a few string
properties. The scoring processor rescores the lead from it.

Activities are listed from the lead's ledger stream rather than a read model, like notes: the
stream is read by one indexed query from the cursor's version on, and the answer is complete
and consistent with the write just made (no read-your-writes wait). Oldest recorded first.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_201_CREATED
from msgspec import Meta

from api.http.context import write_metadata
from api.http.cursors import decode_cursor, encode_cursor
from api.http.docs import WRITE_HEADERS, IdempotencyKeyHeader, ReasonHeader
from api.http.idempotency import Reply, derived_id, derived_ids, reply, run_idempotent
from api.http.lead_views import write_headers
from api.http.leads import WRITE_PROBLEMS, LeadId, require_lead_id
from api.http.problems import problem_responses
from api.http.representations import MAX_PAGE, SINGLE_LINE, Author, Reason
from api.http.services import Services
from ledger.errors import LeadNotFound
from ledger.store import RecordedEvent
from schema.commands import RecordActivity
from schema.events import LeadActivityRecorded
from schema.vocabularies import ACTIVITY_KINDS

Kind = Literal[ACTIVITY_KINDS]  # type: ignore[valid-type]
PropertyName = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
PropertyValue = Annotated[str, Meta(max_length=2048, pattern=SINGLE_LINE)]


class ActivityCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    kind: Annotated[Kind, Meta(description="What the person did.", examples=["demo_request"])]
    occurred_at: Annotated[datetime | None, Meta(
        description="When it happened, with a time zone (default: now). May be in the past.",
        examples=["2025-03-04T10:15:00Z"])] = None
    name: Annotated[str, Meta(
        min_length=1, max_length=200, pattern=SINGLE_LINE,
        description="Required for `custom`: what the activity is (e.g. `Webinar: Q3`).")] | None = None
    properties: Annotated[dict[PropertyName, PropertyValue], Meta(
        max_length=50, description="Strings about the activity (page URL, campaign...).",
        examples=[{"url": "/pricing", "campaign": "spring"}])] = {}
    reason: Reason | None = None


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    name: str | None
    occurred_at: datetime
    properties: dict[str, str]
    recorded_at: datetime
    recorded_by: Author
    version: Annotated[int, Meta(description="The lead's version this activity made.")]


class ActivityPage(msgspec.Struct, frozen=True):
    data: list[Activity]
    next_cursor: str | None


class ActivitiesCursor(msgspec.Struct, frozen=True, array_like=True):
    after_version: int
    kind: str | None


def activity_of(recorded: RecordedEvent) -> Activity:
    event = recorded.event
    assert isinstance(event, LeadActivityRecorded)
    actor = recorded.metadata.actor
    return Activity(
        id=event.activity_id, kind=event.kind, name=event.name, occurred_at=event.occurred_at,
        properties=dict(event.properties), recorded_at=recorded.recorded_at,
        recorded_by=Author(key_id=actor.key_id, role=actor.role), version=recorded.version,
    )


class ActivitiesController(Controller):
    path = "/v1/leads/{lead_id:str}/activities"
    tags = ("activities",)

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Record an activity of a lead",
        description="A behavioural signal (" + ", ".join(ACTIVITY_KINDS) + "); the lead's "
        "score follows. Accepted for archived leads too. Send an `Idempotency-Key` to make "
        "retries safe.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def record(
        self,
        request: Request,
        lead_id: LeadId,
        data: ActivityCreate,
        services: Services,
        idempotency_key: IdempotencyKeyHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Activity]:
        require_lead_id(lead_id)
        occurred_at = data.occurred_at or datetime.now(UTC)

        async def work(request_uuid: uuid.UUID | None) -> Reply:
            activity_id = derived_id(request_uuid, "activity")
            command = RecordActivity(
                activity_id=activity_id, kind=data.kind, occurred_at=occurred_at,
                name=data.name, properties=dict(data.properties),
            )
            result = await services.writer.execute(
                request.user.key.workspace, lead_id, command,
                write_metadata(request, data.reason),
                event_ids=derived_ids(request_uuid, "activity"),
            )
            actor = request.user.key
            activity = Activity(
                id=activity_id, kind=data.kind, name=data.name, occurred_at=occurred_at,
                properties=dict(data.properties), recorded_at=result.updated_at,
                recorded_by=Author(key_id=actor.key_id, role=actor.role),
                version=result.state.version,
            )
            return reply(HTTP_201_CREATED, activity, write_headers(result))

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]

    @get(
        "/",
        summary="A lead's activities",
        description="Oldest recorded first; `kind` keeps one kind. Read from the ledger: an "
        "activity is listed as soon as it is recorded.",
        responses=problem_responses(400, 401, 404, 422, 429),
    )
    async def activities(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        kind: Annotated[Kind | None, Parameter(description="Only this kind.")] = None,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
    ) -> ActivityPage:
        require_lead_id(lead_id)
        after = 0
        if cursor:
            position = decode_cursor(cursor, ActivitiesCursor)
            after, kind = position.after_version, position.kind
        stream = await services.runtime.store.read_stream(
            request.user.key.workspace, lead_id, after_version=after
        )
        if not stream.events and after == 0:
            raise LeadNotFound("no such lead in this workspace")
        found = [
            activity_of(r) for r in stream.events
            if isinstance(r.event, LeadActivityRecorded) and (kind is None or r.event.kind == kind)
        ]
        page = found[:limit]
        next_cursor = (
            encode_cursor(ActivitiesCursor(page[-1].version, kind)) if len(found) > limit else None
        )
        return ActivityPage(data=page, next_cursor=next_cursor)
