"""Merging leads and the duplicate review queue.

POST /v1/leads/merge merges one lead into another (LeadCommands.merge, one transaction): the
survivor records what it took, the merged lead's stream ends with merged-into (its history stays
readable, and GET shows it `merged` with `merged_into`), and its identity keys point to the
survivor. GET /v1/duplicates pages through the likely duplicates the ledger recorded (a `flag`
policy, exact or fuzzy), from the `duplicate_candidates` read model; each pair is resolved by
merging it or dismissing it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from api.http.context import write_metadata
from api.http.cursors import decode_cursor, encode_cursor
from api.http.docs import WRITE_HEADERS, ConsistencyTokenHeader, IdempotencyKeyHeader, ReasonHeader
from api.http.idempotency import Reply, run_idempotent
from api.http.lead_queries import lead_summaries
from api.http.lead_views import lead_reply
from api.http.leads import WRITE_PROBLEMS, LeadId, require_lead_id
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.representations import MAX_PAGE, Lead, Reason
from api.http.services import Services
from api.http.versions import read_your_writes
from ledger.lead import ACTIVE, ARCHIVED
from ledger.lead_commands import EXACT_SCORE
from projections.duplicates import NAME as DUPLICATES_PROJECTION
from projections.duplicates import DuplicateRow, list_queue
from schema.commands import DismissDuplicate

Id = Annotated[str, Meta(min_length=1, max_length=128, description="A lead's id.")]


class MergeRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    survivor_id: Annotated[Id, Meta(description="The lead that lives on.")]
    merged_id: Annotated[Id, Meta(description="The lead merged into it: its stream ends "
                                  "with merged-into.")]
    reason: Reason | None = None


class PairMerge(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    survivor: Annotated[Id | None, Meta(description="Which of the two lives on (default: the "
                                        "first in the path).")] = None
    reason: Reason | None = None


class PairDismissal(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    reason: Reason | None = None


class LeadSummary(msgspec.Struct, frozen=True):
    id: str
    status: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    created_at: datetime
    updated_at: datetime


class Duplicate(msgspec.Struct, frozen=True):
    """A suspicion that two leads are one person: `lead_id` (the newer) and `other_id`."""

    lead_id: str
    other_id: str
    score: Annotated[float, Meta(ge=0, le=100, description="How alike, 0–100 (100 for an exact "
                                 "identity match).")]
    matched: Annotated[list[str], Meta(description="What matched: `email`, `phone`, `external` "
                                       "(exact) or `name`, `company`, `email_local_part` "
                                       "(likely).")]
    exact: bool
    suspected_at: datetime
    lead: LeadSummary | None
    """Null when the read model does not have the lead (yet)."""
    other: LeadSummary | None


class DuplicatePage(msgspec.Struct, frozen=True):
    data: list[Duplicate]
    next_cursor: str | None = None


class QueueCursor(msgspec.Struct, frozen=True, array_like=True):
    suspected_at: datetime
    lead_id: str
    other_id: str


MERGE_BODY = Body(title="Two leads to merge", examples=[Example(
    summary="Merge a duplicate into the original",
    value={"survivor_id": "0b6f0c1e-6c1a-4d2e-9a51-3f1c2b7d9e10",
           "merged_id": "4c1e8f2a-1b3d-4e5f-8a9b-0c1d2e3f4a5b", "reason": "Same person"})])
PAIR_MERGE_BODY = Body(title="How to merge the pair (optional)", examples=[Example(
    summary="Keep the other lead", value={"survivor": "4c1e8f2a-1b3d-4e5f-8a9b-0c1d2e3f4a5b",
                                          "reason": "Same person, older record"})])
DISMISS_BODY = Body(title="Why (optional)", examples=[Example(
    summary="Two people", value={"reason": "Namesakes at the same company"})])


def _summary(row: tuple[Any, ...] | None) -> LeadSummary | None:
    return LeadSummary(*row) if row else None


def _duplicate(row: DuplicateRow, leads: dict[str, tuple[Any, ...]]) -> Duplicate:
    return Duplicate(
        lead_id=row.lead_id, other_id=row.other_id,
        score=EXACT_SCORE if row.exact else row.score, matched=list(row.matched),
        exact=row.exact, suspected_at=row.suspected_at,
        lead=_summary(leads.get(row.lead_id)), other=_summary(leads.get(row.other_id)),
    )


class MergeController(Controller):
    path = "/v1/leads/merge"
    tags = ("duplicates",)

    @post(
        "/",
        status_code=HTTP_200_OK,
        summary="Merge two leads",
        description="The survivor takes the merged lead's values where it has none, and its "
        "tags; the merged lead ends (status `merged`, `merged_into` the survivor) with its "
        "history kept; its email, phone and external id now find the survivor. Answers with "
        "the survivor. A lead merged already is 410.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def merge(
        self, request: Request, data: Annotated[MergeRequest, MERGE_BODY], services: Services,
        idempotency_key: IdempotencyKeyHeader = None, x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        for lead_id in (data.survivor_id, data.merged_id):
            require_lead_id(lead_id)

        async def work(_: uuid.UUID | None) -> Reply:
            result = await services.writer.merge(
                request.user.key.workspace, data.survivor_id, data.merged_id,
                write_metadata(request, data.reason),
            )
            return lead_reply(result)

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]


class DuplicatesController(Controller):
    path = "/v1/duplicates"
    tags = ("duplicates",)

    @get(
        "/",
        summary="The duplicate review queue",
        description="Open suspicions of duplicate leads, oldest first, with their score, what "
        "matched and both leads. Resolve each by merging or dismissing it. With "
        "`X-Consistency-Token`, the queue includes that write.",
        responses=problem_responses(400, 401, 429, 503),
    )
    async def queue(
        self, request: Request, services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
        cursor: Annotated[str | None, Parameter(max_length=512, description="From "
                                                "next_cursor.")] = None,
        x_consistency_token: ConsistencyTokenHeader = None,
    ) -> DuplicatePage:
        pool = services.runtime.pool
        await read_your_writes(request, pool, services.settings.consistency_wait_s,
                               DUPLICATES_PROJECTION)
        after = None
        if cursor:
            c = decode_cursor(cursor, QueueCursor)
            after = (c.suspected_at, c.lead_id, c.other_id)
        workspace = request.user.key.workspace
        async with pool.connection() as conn:
            rows = await list_queue(conn, workspace, after, limit + 1)
            page = rows[:limit]
            ids = list({i for r in page for i in (r.lead_id, r.other_id)})
            leads = await lead_summaries(conn, workspace, ids) if ids else {}
        next_cursor = None
        if len(rows) > limit:
            last = page[-1]
            next_cursor = encode_cursor(QueueCursor(last.suspected_at, last.lead_id,
                                                    last.other_id))
        return DuplicatePage(data=[_duplicate(r, leads) for r in page], next_cursor=next_cursor)

    @post(
        "/{lead_id:str}/{other_id:str}/merge",
        status_code=HTTP_200_OK,
        summary="Resolve a suspected duplicate by merging",
        description="Merges `other_id` into `lead_id` (or into `survivor`, either of the two), "
        "as POST /v1/leads/merge does. 404 unless the ledger records the pair as suspected.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def merge_pair(
        self, request: Request, lead_id: LeadId, other_id: LeadId, services: Services,
        data: Annotated[PairMerge | None, PAIR_MERGE_BODY] = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        body = data or PairMerge()
        await _suspected_pair(request, services, lead_id, other_id)
        survivor = body.survivor or lead_id
        if survivor not in (lead_id, other_id):
            raise ProblemError("validation-failed", "the survivor is one of the pair", errors=[
                FieldError(field="survivor", message=f"{lead_id!r} or {other_id!r}")])
        merged = other_id if survivor == lead_id else lead_id
        result = await services.writer.merge(
            request.user.key.workspace, survivor, merged, write_metadata(request, body.reason)
        )
        return lead_reply(result).response()

    @post(
        "/{lead_id:str}/{other_id:str}/dismiss",
        status_code=HTTP_200_OK,
        summary="Resolve a suspected duplicate by dismissing it",
        description="Records that the two are different people: the pair leaves the queue. "
        "Answers with `lead_id`'s lead. 404 unless the ledger records the pair as suspected.",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def dismiss_pair(
        self, request: Request, lead_id: LeadId, other_id: LeadId, services: Services,
        data: Annotated[PairDismissal | None, DISMISS_BODY] = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        sides = await _suspected_pair(request, services, lead_id, other_id)
        metadata = write_metadata(request, data.reason if data else None)
        workspace = request.user.key.workspace
        results = {
            side: await services.writer.execute(
                workspace, side, DismissDuplicate(other_id=other), metadata
            )
            for side, other in sides
        }
        result = results.get(lead_id) or await services.writer.current(workspace, lead_id)
        if lead_id not in results:  # the suspicion was on the other lead: its write's token
            position = max(result.position, results[other_id].position)
            result = msgspec.structs.replace(result, position=position)
        return lead_reply(result).response()


async def _suspected_pair(
    request: Request, services: Services, lead_id: str, other_id: str
) -> list[tuple[str, str]]:
    """The (lead, other) sides on which the ledger records an open suspicion (on a live lead:
    a merge or an erasure closes it); 404 if none."""
    for lead in (lead_id, other_id):
        require_lead_id(lead)
    workspace = request.user.key.workspace
    commands = services.runtime.commands
    sides = []
    for lead, other in ((lead_id, other_id), (other_id, lead_id)):
        state = await commands.load(workspace, lead)
        if state.status in (ACTIVE, ARCHIVED) and other in state.suspected_duplicates:
            sides.append((lead, other))
    if not sides:
        raise ProblemError("not-found", f"no suspected duplicate pair {lead_id} / {other_id} "
                           "in this workspace")
    return sides
