"""POST /v1/leads/batch: up to 1,000 leads in one call, with a result per item.

Each item is decoded and validated on its own, and decided against an empty lead before
anything is written, so a bad item is reported by index and never costs the good ones. Without
`atomic`, the valid items are created one by one through the shared command path (a few at a
time). With `atomic=true` the batch is all or nothing: any invalid item makes it 422 with every
item's errors, and otherwise all leads are appended in one ledger transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from api.http.context import write_metadata
from api.http.docs import BATCH_BODY, IdempotencyKeyHeader, ReasonHeader
from api.http.idempotency import Reply, derived_id, derived_ids, reply, run_idempotent
from api.http.lead_views import lead_of_state
from api.http.leads import WRITE_PROBLEMS, create_one, new_lead
from api.http.problems import (
    FieldError,
    ProblemError,
    field_error,
    problem_responses,
    problem_type_uri,
)
from api.http.representations import (
    BatchItemError,
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    LeadCreate,
)
from api.http.services import Services
from api.http.writes import WriteResult
from ledger import identity
from ledger.errors import DomainError, InvalidValue
from ledger.lead import INITIAL, decide, fold
from ledger.lead_input import normalize_lead
from ledger.quality_settings import WorkspaceQuality
from ledger.store import NewEvent
from schema.commands import CreateLead
from schema.positions import LogPosition
from schema.vocabularies import DEFAULT_STAGE

CONCURRENCY = 4
"""Items created at once in a non-atomic batch: enough to hide round trips, few enough to
leave the connection pool to other requests."""

_STAMPS = """
SELECT e.stream_id, e.recorded_at, e.transaction_id, e.position
FROM events e JOIN unnest(%s::text[], %s::int[]) AS w(stream_id, version)
  ON e.stream_id = w.stream_id AND e.version = w.version
WHERE e.workspace = %s
"""


class _Item(msgspec.Struct):
    index: int
    data: Any = None
    fields: Any = None
    events: list[Any] = []
    errors: list[FieldError] | None = None
    detail: str = ""


def _validated(
    index: int, raw: Any, request_uuid: uuid.UUID | None, quality: WorkspaceQuality
) -> _Item:
    """Decodes, normalizes (the workspace's vocabularies) and decides one item, purely."""
    item = _Item(index)
    try:
        item.data = msgspec.convert(raw, LeadCreate, strict=False)
        lead = new_lead(item.data, derived_id(request_uuid, f"lead/{index}"))
        normalized = normalize_lead(
            lead.fields, stage=lead.stage, vocabularies=quality.vocabularies,
            on_unknown=quality.policy.on_unknown,
        )
        command = CreateLead(
            lead_id=lead.lead_id, fields=normalized.fields,
            stage=normalized.stage or DEFAULT_STAGE, owner=lead.owner, tags=lead.tags,
        )
        item.fields = normalized.fields
        item.events = decide(INITIAL, command)
    except msgspec.ValidationError as exc:
        error = field_error(str(exc))
        item.errors = [error]
        item.detail = f"{error.field}: {error.message}"
    except InvalidValue as exc:
        item.errors = [FieldError(field=exc.field, message=str(exc).split(": ", 1)[-1])]
        item.detail = str(exc)
    except DomainError as exc:
        item.detail = str(exc)
    return item


def _rejected(item: _Item) -> BatchItemResult:
    error = BatchItemError(
        type=problem_type_uri("validation-failed"), title="Validation failed",
        detail=item.detail, errors=[msgspec.to_builtins(e) for e in item.errors or []] or None,
    )
    return BatchItemResult(index=item.index, status="rejected", error=error)


class BatchController(Controller):
    path = "/v1/leads/batch"
    tags = ["leads"]

    @post(
        "/",
        status_code=HTTP_200_OK,
        summary="Create up to 1,000 leads",
        description="A result per item, by index: `created` with the lead, or `rejected` with "
        "the reason. A bad item never loses the good ones. With `atomic=true`, every item is "
        "created or none is: one invalid item makes the whole batch 422, with each invalid "
        "item's errors named `leads[i].field`.",
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def create_many(
        self,
        request: Request,
        data: Annotated[BatchRequest, BATCH_BODY],
        services: Services,
        atomic: Annotated[bool, Parameter(description="All or nothing.")] = False,
        idempotency_key: IdempotencyKeyHeader = None,
        x_reason: ReasonHeader = None,
    ) -> BatchResponse:
        async def work(request_uuid: uuid.UUID | None) -> Reply:
            quality = await services.writer.quality.load(request.user.key.workspace)
            items = [
                _validated(i, raw, request_uuid, quality) for i, raw in enumerate(data.leads)
            ]
            if atomic:
                return await _atomic(services, request, data, items, request_uuid)
            return await _each(services, request, items, request_uuid)

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]


async def _each(
    services: Services, request: Request, items: list[_Item], request_uuid: uuid.UUID | None
) -> Reply:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def create(item: _Item) -> BatchItemResult:
        if item.detail:
            return _rejected(item)
        async with gate:
            try:
                result = await create_one(
                    services, request, item.data, request_uuid, f"lead/{item.index}"
                )
            except DomainError as exc:
                item.detail = str(exc)
                return _rejected(item)
        status = "merged" if result.merged_into else "created"
        return BatchItemResult(index=item.index, status=status, lead=lead_of_state(result))

    results = await asyncio.gather(*(create(item) for item in items))
    created = sum(r.status != "rejected" for r in results)
    return reply(HTTP_200_OK, BatchResponse(
        atomic=False, created=created, rejected=len(results) - created, results=list(results)
    ))


async def _atomic(
    services: Services,
    request: Request,
    data: BatchRequest,
    items: list[_Item],
    request_uuid: uuid.UUID | None,
) -> Reply:
    invalid = [item for item in items if item.detail]
    if invalid:
        errors = [
            FieldError(field=f"leads[{item.index}].{e.field}", message=e.message)
            for item in invalid
            for e in (item.errors or [FieldError(field="item", message=item.detail)])
        ]
        raise ProblemError(
            "validation-failed",
            f"{len(invalid)} of {len(items)} items are invalid; nothing was created",
            errors=errors,
        )
    workspace = request.user.key.workspace
    metadata = write_metadata(request, data.reason)
    hasher = services.runtime.commands.hasher
    appended = []
    # One transaction: every lead's identity keys are reserved (a key another lead, or an
    # earlier item of this batch, owns makes the whole batch a 409) and every lead appended.
    async with services.runtime.pool.connection() as conn, conn.transaction():
        for item in items:
            lead_id = derived_id(request_uuid, f"lead/{item.index}")
            if hasher is not None:
                claims = await identity.reserve(
                    conn, workspace, lead_id, hasher.keys_for(item.fields)
                )
                if claims:
                    raise ProblemError(
                        "duplicate-lead",
                        f"item {item.index}: identity ({claims[0].kind}) already used by lead "
                        f"{claims[0].lead_id}; nothing was created",
                        existing_id=claims[0].lead_id,
                        errors=[FieldError(field=f"leads[{item.index}].{claims[0].kind}",
                                           message="already used by another lead")],
                    )
            ids = derived_ids(request_uuid, f"lead/{item.index}") or []
            events = [NewEvent(e, ids[i]) if i < len(ids) else NewEvent(e)
                      for i, e in enumerate(item.events)]
            appended.append(await services.runtime.store.append(
                workspace, lead_id, 0, events, metadata, conn=conn
            ))
    stamps = await _stamps(services, workspace, [(a.stream_id, a.version) for a in appended])
    results = []
    for item, done in zip(items, appended, strict=True):
        created_at, position = stamps[done.stream_id]
        state = fold(item.events)
        result = WriteResult(done.stream_id, state, item.events, position, created_at, created_at)
        results.append(
            BatchItemResult(index=item.index, status="created", lead=lead_of_state(result))
        )
    return reply(HTTP_200_OK, BatchResponse(
        atomic=True, created=len(results), rejected=0, results=results
    ))


async def _stamps(
    services: Services, workspace: str, versions: list[tuple[str, int]]
) -> dict[str, tuple[Any, LogPosition]]:
    async with services.runtime.pool.connection() as conn:
        cur = await conn.execute(
            _STAMPS, ([s for s, _ in versions], [v for _, v in versions], workspace)
        )
        rows = await cur.fetchall()
    return {stream: (at, LogPosition(tx, pos)) for stream, at, tx, pos in rows}


__all__ = ["BatchController", "Response"]
