"""/v1/leads: create, read, change, archive, restore and list leads.

Thin handlers: decode (Litestar + msgspec), build the ledger command, hand it to the writer,
and answer with the lead, its ETag and the consistency token of the write. Reads come from the
lead read model.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_304_NOT_MODIFIED
from msgspec import UNSET

from api.http.context import write_metadata
from api.http.creates import OnDuplicate, OnFuzzy, create_one, lead_fields
from api.http.docs import (
    CREATE_BODY,
    LOCATION,
    PATCH_BODY,
    WRITE_HEADERS,
    ConsistencyTokenHeader,
    IdempotencyKeyHeader,
    IfMatchHeader,
    IfNoneMatchHeader,
    ReasonHeader,
)
from api.http.idempotency import Reply, reply, run_idempotent
from api.http.lead_queries import (
    SORT_PATTERN,
    LeadFilter,
    attribute_conditions,
    list_leads,
    sort_key,
)
from api.http.lead_views import lead_of_row, lead_of_state, lead_reply, write_headers
from api.http.problems import ProblemError, problem_responses
from api.http.quality_queries import Rescoring
from api.http.representations import (
    MAX_PAGE,
    Lead,
    LeadCreate,
    LeadPage,
    LeadPatch,
)
from api.http.services import Services
from api.http.versions import (
    ANY,
    etag,
    if_match,
    if_none_match,
    read_your_writes,
    valid_lead_id,
)
from ledger.attributes import validate as validate_attributes
from ledger.errors import InvalidValue, LeadNotFound
from ledger.lead import LeadState
from projections.leads import get_lead
from schema.attributes import AttributeDefinition
from schema.commands import (
    ArchiveLead,
    AssignOwner,
    ChangeLeadAttributes,
    ChangeLeadFields,
    ChangeStage,
    LeadCommand,
    RestoreLead,
    TagLead,
    UntagLead,
)
from schema.events import LeadFields
from schema.vocabularies import LIFECYCLE_STAGES

READ_PROBLEMS = (400, 401, 404, 429, 503)
WRITE_PROBLEMS = (400, 401, 403, 404, 409, 410, 412, 413, 415, 422, 429)

LeadId = Annotated[str, Parameter(description="The lead's id.", max_length=128)]


def require_lead_id(lead_id: str) -> None:
    if not valid_lead_id(lead_id):
        raise LeadNotFound("no such lead in this workspace")


def expected_version(request: Request) -> int | None:
    version = if_match(request)
    return None if version == ANY else version


def _patch_plan(
    data: Any, definitions: Mapping[str, AttributeDefinition],
    email_deliverable: bool | None = None,
) -> Any:
    """`email_deliverable`: the MX lookup of the email the PATCH sets, done beforehand."""
    fields = lead_fields(data, patch=True)
    attributes = None
    if data.attributes is not UNSET:
        attributes = validate_attributes(definitions, data.attributes, create=False)

    def plan(state: LeadState) -> list[LeadCommand]:
        commands: list[LeadCommand] = []
        if fields:
            commands.append(ChangeLeadFields(
                changes=LeadFields(**fields), email_deliverable=email_deliverable))
        if data.stage is not UNSET:
            commands.append(ChangeStage(stage=data.stage))
        if data.owner is not UNSET:
            commands.append(AssignOwner(owner=data.owner))
        if data.tags is not UNSET:
            wanted = list(dict.fromkeys(data.tags))
            commands += [UntagLead(tag=t) for t in state.tags if t not in wanted]
            commands += [TagLead(tag=t) for t in wanted if t not in state.tags]
        if attributes is not None and (attributes.values or attributes.personal):
            commands.append(ChangeLeadAttributes(
                values=attributes.values, personal_values=attributes.personal))
        return commands

    return plan


# -- the controller ------------------------------------------------------------------------------


class LeadController(Controller):
    path = "/v1/leads"
    tags = ["leads"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Create a lead",
        description="Creates a lead: fields are normalized (email, phone, country and the "
        "workspace's vocabularies: a value outside one is 422 naming the allowed values and "
        "the closest, or kept and flagged, per the workspace's `on_unknown`) and checked for "
        "exact and likely duplicates (`on_duplicate`, `on_fuzzy`). Send an `Idempotency-Key` "
        "to make retries safe. Answers 201 with the lead, its `ETag` and the "
        "`X-Consistency-Token` of the write; 200 with the existing lead (`merged_into` naming "
        "it) when a `merge` policy merged the submission into it; 409 `duplicate-lead` with "
        "`existing_id`, `matched`, `exact` and `score` when a `reject` policy refused it.",
        response_headers=[*WRITE_HEADERS, LOCATION],
        responses={
            200: ResponseSpec(Lead, description="The duplicate policy merged the submission "
                              "into the existing lead, which is returned."),
            **problem_responses(*WRITE_PROBLEMS),
        },
    )
    async def create(
        self,
        request: Request,
        data: Annotated[LeadCreate, CREATE_BODY],  # type: ignore[valid-type]
        services: Services,
        on_duplicate: OnDuplicate = None,
        on_fuzzy: OnFuzzy = None,
        idempotency_key: IdempotencyKeyHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        async def work(request_uuid: uuid.UUID | None) -> Reply:
            result = await create_one(
                services, request, data, request_uuid, "lead", on_duplicate, on_fuzzy
            )
            headers = {**write_headers(result), "location": f"/v1/leads/{result.lead_id}"}
            status = HTTP_200_OK if result.merged_into else HTTP_201_CREATED
            return reply(status, lead_of_state(result), headers)

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]

    @get(
        "/{lead_id:str}",
        summary="Get a lead",
        description="The lead from the read model. With `X-Consistency-Token`, the answer "
        "includes that write (or 503 if the read model does not reach it in time).",
        response_headers=[WRITE_HEADERS[0]],
        responses={
            **problem_responses(*READ_PROBLEMS),
        },
    )
    async def get_one(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        x_consistency_token: ConsistencyTokenHeader = None,
        if_none_match_: IfNoneMatchHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        require_lead_id(lead_id)
        pool = services.runtime.pool
        await read_your_writes(request, pool, services.settings.consistency_wait_s)
        workspace = request.user.key.workspace
        async with pool.connection() as conn:
            row = await get_lead(conn, workspace, lead_id)
        if row is None:
            raise LeadNotFound("no such lead in this workspace")
        if if_none_match(request, row.version):
            return Response(b"", status_code=HTTP_304_NOT_MODIFIED,
                            headers={"etag": etag(row.version)})
        quality = await services.writer.quality.load(workspace)
        return Response(lead_of_row(row, quality, datetime.now(UTC)),
                        headers={"etag": etag(row.version)})

    @patch(
        "/{lead_id:str}",
        summary="Change a lead",
        description="Changes fields, stage, owner, tags and custom attributes (only those "
        "given; null clears one) in one write. Send the lead's ETag "
        "as `If-Match` to apply only to the version you read (412 otherwise); a workspace may "
        "require it (428 without).",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS, 428),
    )
    async def change(
        self,
        request: Request,
        lead_id: LeadId,
        data: Annotated[LeadPatch, PATCH_BODY],  # type: ignore[valid-type]
        services: Services,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        require_lead_id(lead_id)
        version = if_match(request)
        if version is None and request.user.require_if_match:
            raise ProblemError(
                "precondition-required",
                "this workspace requires If-Match with the lead's ETag on PATCH",
            )
        workspace = request.user.key.workspace
        definitions = await services.attributes.current(workspace)
        deliverable = await services.writer.email_deliverable(workspace, data.email)
        result = await services.writer.apply(
            workspace, lead_id, _patch_plan(data, definitions, deliverable),
            write_metadata(request, data.reason),
            expected_version=None if version == ANY else version,
        )
        return lead_reply(result).response()  # type: ignore[return-value]

    @delete(
        "/{lead_id:str}",
        status_code=HTTP_200_OK,
        summary="Archive a lead",
        description="Archives the lead: it leaves the active list and takes no change until "
        "restored. Its history stays. Archiving an archived lead changes nothing.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def archive(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        return await single_command(request, services, lead_id, ArchiveLead())

    @post(
        "/{lead_id:str}/restore",
        status_code=HTTP_200_OK,
        summary="Restore an archived lead",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def restore(
        self,
        request: Request,
        lead_id: LeadId,
        services: Services,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        return await single_command(request, services, lead_id, RestoreLead())

    @get(
        "/",
        summary="List leads",
        description="Leads of the workspace, filtered and sorted, a page at a time. Pass "
        "`next_cursor` back as `cursor` for the next page (null at the end). Ties in the sort "
        "are broken by id, so pages never skip or repeat a lead. Queryable custom attributes "
        "(GET /v1/attributes) filter as `attr.<name>=<value>` (equality; repeat it for any "
        "of several), `attr.<name>.in=a,b` (any of), `attr.<name>.gte=` / `.gt=` / `.lte=` / "
        "`.lt=` (ranges on numbers, integers, dates, datetimes and strings), compared typed "
        "(numbers as numbers); on a list attribute equality means \"contains\". "
        "`sort=attr.<name>` sorts by one. Leads without a score or without the sort "
        "attribute come last in either direction. An unknown or non-queryable attribute, "
        "or a value of the wrong type, is 422 naming the parameter.",
        responses=problem_responses(*READ_PROBLEMS, 422),
    )
    async def index(
        self,
        request: Request,
        services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
        cursor: Annotated[str | None, Parameter(max_length=512, description="From "
                                                "next_cursor.")] = None,
        sort: Annotated[str, Parameter(
            pattern=SORT_PATTERN, max_length=70,
            description="`created_at`, `updated_at`, `score` or `attr.<name>` (a queryable "
            "attribute); a leading `-` sorts descending.")
        ] = "-created_at",
        status: Annotated[Literal["active", "archived", "merged"], Parameter(
            description="Leads in this status.")] = "active",
        stage: Annotated[list[Literal[LIFECYCLE_STAGES]] | None, Parameter(  # type: ignore[valid-type]
            description="Any of these stages (repeat the parameter).")] = None,
        owner: Annotated[str | None, Parameter(max_length=200)] = None,
        tag: Annotated[list[str] | None, Parameter(
            description="Has every one of these tags (repeat the parameter).")] = None,
        source: Annotated[str | None, Parameter(max_length=64)] = None,
        created_after: Annotated[datetime | None, Parameter(description="Inclusive.")] = None,
        created_before: Annotated[datetime | None, Parameter(description="Exclusive.")] = None,
        updated_after: Annotated[datetime | None, Parameter(description="Inclusive.")] = None,
        updated_before: Annotated[datetime | None, Parameter(description="Exclusive.")] = None,
        q: Annotated[str | None, Parameter(
            max_length=200, description="Free text in name, company or email.")] = None,
        quarantined: Annotated[bool | None, Parameter(
            description="Only quarantined leads (invalid or hard-bounced email), or only "
            "leads that are not.")] = None,
        quality_below: Annotated[int | None, Parameter(
            ge=1, le=101, description="Only leads whose data-quality score (against the "
            "workspace's settings, now) is below this.")] = None,
        score_min: Annotated[float | None, Parameter(
            description="Only leads scored at least this (inclusive).")] = None,
        score_max: Annotated[float | None, Parameter(
            description="Only leads scored at most this (inclusive).")] = None,
        score_band: Annotated[list[str] | None, Parameter(
            description="Only leads in any of these score bands (repeat the parameter).")
        ] = None,
        x_consistency_token: ConsistencyTokenHeader = None,
    ) -> LeadPage:
        for text in (cursor, owner, source, q, *(tag or ()), *(score_band or ()),
                     *(v for k, v in request.query_params.multi_items() if k.startswith("attr."))):
            if text is not None and ("\x00" in text or len(text) > 512):
                raise InvalidValue("query", "parameters cannot contain NUL characters")
        pool = services.runtime.pool
        workspace = request.user.key.workspace
        definitions = await services.attributes.current(workspace)
        conditions = attribute_conditions(request.query_params.multi_items(), definitions)
        sort_key(sort, definitions)  # refuses an unknown sort before waiting for a token
        await read_your_writes(request, pool, services.settings.consistency_wait_s)
        filters = LeadFilter(
            status=status, stage=tuple(stage or ()), owner=owner, tags=tuple(tag or ()),
            source=source, created_after=created_after, created_before=created_before,
            updated_after=updated_after, updated_before=updated_before, q=q,
            quarantined=quarantined, quality_below=quality_below, score_min=score_min,
            score_max=score_max, score_band=tuple(score_band or ()), attributes=conditions,
        )
        quality = await services.writer.quality.load(workspace)
        now = datetime.now(UTC)
        async with pool.connection() as conn:
            rows, next_cursor = await list_leads(
                conn, workspace, filters, sort=sort, limit=limit, cursor=cursor,
                rescoring=Rescoring(quality, now) if quality_below is not None else None,
                definitions=definitions,
            )
        return LeadPage(data=[lead_of_row(r, quality, now) for r in rows],
                        next_cursor=next_cursor)


async def single_command(
    request: Request, services: Services, lead_id: str, command: LeadCommand
) -> Response[Any]:
    """A write of one command on an existing lead (archive, restore, tag, untag)."""
    require_lead_id(lead_id)
    result = await services.writer.execute(
        request.user.key.workspace, lead_id, command, write_metadata(request),
        expected_version=expected_version(request),
    )
    return lead_reply(result).response()
