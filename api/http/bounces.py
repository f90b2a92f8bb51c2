"""Email bounces reported by the email platform: POST /v1/leads/{id}/email-bounces for one
lead, POST /v1/email-bounces for every lead of the workspace with that address (found in the
lead read model: send the X-Consistency-Token of a recent write to include it).

Each records `RecordEmailBounce` through the shared command path. A hard bounce marks the email
invalid and quarantines the lead (out of the active pipeline until its email is fixed); a soft
bounce is recorded and changes nothing else.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.openapi.spec import Example
from litestar.params import Body
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from api.http.context import write_metadata
from api.http.docs import (
    WRITE_HEADERS,
    ConsistencyTokenHeader,
    IdempotencyKeyHeader,
    IfMatchHeader,
    ReasonHeader,
)
from api.http.idempotency import Reply, derived_ids, reply, run_idempotent
from api.http.lead_queries import leads_with_email
from api.http.lead_views import lead_of_state, lead_reply
from api.http.leads import WRITE_PROBLEMS, LeadId, expected_version, require_lead_id
from api.http.problems import ProblemError, problem_responses
from api.http.representations import MULTI_LINE, SINGLE_LINE, Lead, Reason
from api.http.services import Services
from api.http.versions import read_your_writes
from ledger.errors import InvalidValue, LeadGone, LeadNotFound
from ledger.normalize import InvalidEmailSyntax, normalize_email
from schema.commands import RecordEmailBounce

Kind = Annotated[Literal["hard", "soft"], Meta(
    description="`hard`: the address does not exist (the email becomes invalid and the lead "
    "is quarantined); `soft`: a temporary failure (recorded only).")]
Detail = Annotated[str, Meta(max_length=1000, pattern=MULTI_LINE, description="What the "
                             "platform said.", examples=["550 5.1.1 user unknown"])]


class BounceCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    kind: Kind
    detail: Detail | None = None
    reason: Reason | None = None


class BounceByEmail(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    email: Annotated[str, Meta(min_length=3, max_length=320, pattern=SINGLE_LINE,
                               description="The address that bounced.",
                               examples=["ada@analytical.example"])]
    kind: Kind
    detail: Detail | None = None
    reason: Reason | None = None


class BounceResult(msgspec.Struct, frozen=True):
    email: str
    leads: Annotated[list[Lead], Meta(description="Every lead the bounce was recorded on, "  # type: ignore[valid-type]
                                      "as it now is.")]


BOUNCE_BODY = Body(title="A bounce", examples=[Example(
    summary="A hard bounce", value={"kind": "hard", "detail": "550 5.1.1 user unknown"})])
BOUNCE_BY_EMAIL_BODY = Body(title="A bounce of an address", examples=[Example(
    summary="A hard bounce", value={"email": "ada@analytical.example", "kind": "hard",
                                    "detail": "550 5.1.1 user unknown"})])


class BounceController(Controller):
    path = "/v1"
    tags = ("leads",)

    @post(
        "/leads/{lead_id:str}/email-bounces",
        status_code=HTTP_200_OK,
        summary="Record an email bounce on a lead",
        description="A hard bounce marks the lead's email invalid and quarantines the lead. "
        "Answers with the lead. Send an `Idempotency-Key` to make retries safe.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def on_lead(
        self,
        request: Request,
        lead_id: LeadId,
        data: Annotated[BounceCreate, BOUNCE_BODY],
        services: Services,
        idempotency_key: IdempotencyKeyHeader = None,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        require_lead_id(lead_id)

        async def work(request_uuid: uuid.UUID | None) -> Reply:
            result = await services.writer.execute(
                request.user.key.workspace, lead_id,
                RecordEmailBounce(kind=data.kind, detail=data.detail),
                write_metadata(request, data.reason), expected_version=expected_version(request),
                event_ids=derived_ids(request_uuid, "bounce"),
            )
            return lead_reply(result)

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]

    @post(
        "/email-bounces",
        status_code=HTTP_200_OK,
        summary="Record an email bounce by address",
        description="Records the bounce on every live lead of the workspace whose email is "
        "this address (case-insensitively), from the lead read model; 404 when there is none. "
        "Answers with those leads and the X-Consistency-Token of the last write.",
        response_headers=[WRITE_HEADERS[1]],
        responses=problem_responses(*WRITE_PROBLEMS, 503),
    )
    async def by_email(
        self,
        request: Request,
        data: Annotated[BounceByEmail, BOUNCE_BY_EMAIL_BODY],
        services: Services,
        idempotency_key: IdempotencyKeyHeader = None,
        x_consistency_token: ConsistencyTokenHeader = None,
        x_reason: ReasonHeader = None,
    ) -> BounceResult:
        try:
            email = normalize_email(data.email).email
        except InvalidEmailSyntax as exc:
            raise InvalidValue("email", f"not an email address: {exc}") from None
        pool = services.runtime.pool
        workspace = request.user.key.workspace

        async def work(request_uuid: uuid.UUID | None) -> Reply:
            await read_your_writes(request, pool, services.settings.consistency_wait_s)
            async with pool.connection() as conn:
                lead_ids = await leads_with_email(conn, workspace, email)
            if not lead_ids:
                raise ProblemError("not-found", "no lead in this workspace has this email")
            metadata = write_metadata(request, data.reason)
            results = []
            for lead_id in lead_ids:
                try:
                    results.append(await services.writer.execute(
                        workspace, lead_id, RecordEmailBounce(kind=data.kind, detail=data.detail),
                        metadata, event_ids=derived_ids(request_uuid, f"bounce/{lead_id}"),
                    ))
                except (LeadGone, LeadNotFound):
                    continue  # merged or erased since the read model saw it
            if not results:
                raise ProblemError("not-found", "no lead in this workspace has this email")
            token = max(r.position for r in results).token()
            body = BounceResult(email=email, leads=[lead_of_state(r) for r in results])
            return reply(HTTP_200_OK, body, {"x-consistency-token": token})

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]
