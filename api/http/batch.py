"""POST /v1/leads/batch: up to 1,000 leads in one call, with a result per item.

Each item is decoded, normalized and decided against an empty lead before anything is written,
so a bad item is reported by index and never costs the good ones. Every item is then created
through ingestion, the creation path every interface shares: normalized, deduplicated against
the workspace (exact identity keys, likely duplicates) and against the batch's own earlier
items, under the request's or the workspace's duplicate policies.

Without `atomic`, the valid items are created one by one (a few at a time): two items for the
same person make one lead (the second is merged into it, flagged or rejected, per the policy).
With `atomic=true` the batch is all or nothing: any invalid item makes it 422 with every item's
errors; otherwise every item is ingested in one transaction (a rejected duplicate makes the
whole batch 409, naming the item), so nothing is visible until all of it is.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from api.http.context import write_metadata
from api.http.creates import OnDuplicate, OnFuzzy, create_one, new_lead
from api.http.docs import BATCH_BODY, IdempotencyKeyHeader, ReasonHeader
from api.http.idempotency import Reply, derived_id, derived_ids, reply, run_idempotent
from api.http.lead_views import lead_of_state
from api.http.leads import WRITE_PROBLEMS
from api.http.problems import (
    FieldError,
    ProblemError,
    field_error,
    problem_responses,
    problem_type_uri,
    to_problem,
)
from api.http.representations import (
    BatchItemError,
    BatchItemResult,
    BatchRequest,
    BatchResponse,
    LeadCreate,
)
from api.http.services import Services
from api.http.writes import WriteResult, quality_of, with_overrides
from ledger.errors import DomainError, DuplicateLead, InvalidValue
from ledger.fuzzy import Person
from ledger.ingest import CREATED, CandidateFinder, Ingestor, IngestResult
from ledger.lead import INITIAL, decide
from ledger.lead_input import normalize_lead
from ledger.quality_settings import WorkspaceQuality
from schema.attributes import AttributeDefinition
from schema.commands import CreateLead
from schema.positions import LogPosition
from schema.vocabularies import DEFAULT_STAGE

CONCURRENCY = 4
"""Items created at once in a non-atomic batch: enough to hide round trips, few enough to
leave the connection pool to other requests."""

# The event at each (lead, version) the batch left its leads at, and each lead's first event.
_STAMPS = """
SELECT l.stream_id, l.version, f.recorded_at, l.recorded_at, l.transaction_id, l.position
FROM events l JOIN unnest(%s::text[], %s::int[]) AS w(stream_id, version)
  ON l.stream_id = w.stream_id AND l.version = w.version
JOIN events f ON f.workspace = l.workspace AND f.stream_id = l.stream_id AND f.version = 1
WHERE l.workspace = %s
"""


class _Item(msgspec.Struct):
    index: int
    data: Any = None
    errors: list[FieldError] | None = None
    detail: str = ""


def _validated(index: int, raw: Any, quality: WorkspaceQuality, on_unknown: str,
               definitions: Mapping[str, AttributeDefinition]) -> _Item:
    """Decodes, normalizes (the workspace's vocabularies, its attribute definitions) and
    decides one item, purely."""
    item = _Item(index)
    try:
        item.data = msgspec.convert(raw, LeadCreate, strict=False)
        lead = new_lead(item.data, f"item-{index}", definitions)
        normalized = normalize_lead(
            lead.fields, stage=lead.stage, vocabularies=quality.vocabularies,
            on_unknown=on_unknown,
        )
        decide(INITIAL, CreateLead(
            lead_id=lead.lead_id, fields=normalized.fields,
            stage=normalized.stage or DEFAULT_STAGE, owner=lead.owner, tags=lead.tags,
            attributes=lead.attributes, personal_attributes=lead.personal_attributes,
        ))
    except msgspec.ValidationError as exc:
        error = field_error(str(exc))
        item.errors = [error]
        item.detail = f"{error.field}: {error.message}"
    except InvalidValue as exc:
        item.errors = to_problem(exc).errors
        item.detail = str(exc)
    except DomainError as exc:
        item.detail = str(exc)
    return item


def _rejected(item: _Item, exc: DomainError | None = None) -> BatchItemResult:
    if exc is not None:
        problem = to_problem(exc)
        duplicate = problem.duplicate
        error = BatchItemError(
            type=problem_type_uri(problem.type.slug), title=problem.type.title,
            detail=problem.detail,
            errors=[msgspec.to_builtins(e) for e in problem.errors or []] or None,
            existing_id=duplicate.existing_id if duplicate else None,
            matched=duplicate.matched if duplicate else None,
            exact=duplicate.exact if duplicate else None,
            score=duplicate.score if duplicate else None,
        )
        return BatchItemResult(index=item.index, status="rejected", error=error)
    error = BatchItemError(
        type=problem_type_uri("validation-failed"), title="Validation failed",
        detail=item.detail, errors=[msgspec.to_builtins(e) for e in item.errors or []] or None,
    )
    return BatchItemResult(index=item.index, status="rejected", error=error)


class BatchCandidates:
    """Likely-duplicate candidates: the workspace's (from the read model) and the leads this
    batch has created so far (which the read model may not show yet, or, in an atomic batch,
    cannot)."""

    def __init__(self, workspace_candidates: CandidateFinder) -> None:
        self.workspace_candidates = workspace_candidates
        self.created: list[Person] = []

    async def __call__(self, workspace: str, person: Person) -> list[Person]:
        found = await self.workspace_candidates(workspace, person)
        known = {p.lead_id for p in found}
        return found + [p for p in self.created if p.lead_id not in known]

    def add(self, lead_id: str, result: WriteResult | IngestResult) -> None:
        state = result.state if isinstance(result, WriteResult) else result.result.state
        f = state.fields
        self.created.append(Person(
            lead_id=lead_id, first_name=_text(f.first_name), last_name=_text(f.last_name),
            email=_text(f.email), phone=_text(f.phone), company=_text(f.company),
        ))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class BatchController(Controller):
    path = "/v1/leads/batch"
    tags = ("leads",)

    @post(
        "/",
        status_code=HTTP_200_OK,
        summary="Create up to 1,000 leads",
        description="A result per item, by index: `created` with the lead, `merged` with the "
        "existing lead it was merged into (a `merge` duplicate policy), or `rejected` with the "
        "reason (a duplicate under `reject` carries `existing_id`). A bad item never loses the "
        "good ones. Items are deduplicated against the workspace and against each other: two "
        "items for the same person make one lead. With `atomic=true`, every item is created "
        "or none is: one invalid item makes the whole batch 422, with each invalid item's "
        "errors named `leads[i].field`; a rejected duplicate makes it 409.",
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def create_many(
        self,
        request: Request,
        data: Annotated[BatchRequest, BATCH_BODY],
        services: Services,
        atomic: Annotated[bool, Parameter(description="All or nothing.")] = False,
        on_duplicate: OnDuplicate = None,
        on_fuzzy: OnFuzzy = None,
        idempotency_key: IdempotencyKeyHeader = None,
        x_reason: ReasonHeader = None,
    ) -> BatchResponse:
        async def work(request_uuid: uuid.UUID | None) -> Reply:
            quality = await services.writer.quality.load(request.user.key.workspace)
            policy = with_overrides(quality, on_duplicate, on_fuzzy)
            definitions = await services.attributes.current(request.user.key.workspace)
            items = [_validated(i, raw, quality, policy.on_unknown, definitions)
                     for i, raw in enumerate(data.leads)]
            batch = _Batch(services, request, quality, request_uuid, on_duplicate, on_fuzzy,
                           definitions)
            if atomic:
                return await batch.atomic(items, data.reason)
            return await batch.each(items)

        return await run_idempotent(request, services.idempotency, work)  # type: ignore[return-value]


class _Batch:
    def __init__(
        self, services: Services, request: Request, quality: WorkspaceQuality,
        request_uuid: uuid.UUID | None, on_duplicate: str | None, on_fuzzy: str | None,
        definitions: Mapping[str, AttributeDefinition],
    ) -> None:
        self.services = services
        self.request = request
        self.workspace: str = request.user.key.workspace
        self.quality = quality
        self.request_uuid = request_uuid
        self.on_duplicate = on_duplicate
        self.on_fuzzy = on_fuzzy
        self.definitions = definitions
        self.candidates = BatchCandidates(services.writer.ingestor.find_candidates)
        self.ingestor = Ingestor(services.runtime.commands, self.candidates,
                                 mx=services.writer.ingestor.mx)

    async def each(self, items: list[_Item]) -> Reply:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def create(item: _Item) -> BatchItemResult:
            if item.detail:
                return _rejected(item)
            async with gate:
                try:
                    result = await create_one(
                        self.services, self.request, item.data, self.request_uuid,
                        f"lead/{item.index}", self.on_duplicate, self.on_fuzzy, self.ingestor,
                    )
                except DomainError as exc:
                    return _rejected(item, exc)
            if not result.merged_into:
                self.candidates.add(result.lead_id, result)
            status = "merged" if result.merged_into else "created"
            return BatchItemResult(index=item.index, status=status, lead=lead_of_state(result))

        results = await asyncio.gather(*(create(item) for item in items))
        return _response(False, list(results))

    async def atomic(self, items: list[_Item], reason: str | None) -> Reply:
        invalid = [item for item in items if item.detail]
        if invalid:
            errors = [
                msgspec.structs.replace(e, field=f"leads[{item.index}].{e.field}")
                for item in invalid
                for e in (item.errors or [FieldError(field="item", message=item.detail)])
            ]
            raise ProblemError(
                "validation-failed",
                f"{len(invalid)} of {len(items)} items are invalid; nothing was created",
                errors=errors,
            )
        metadata = write_metadata(self.request, reason)
        policy = with_overrides(self.quality, self.on_duplicate, self.on_fuzzy)
        ids = {derived_id(self.request_uuid, f"lead/{item.index}"): item.index for item in items}
        outcomes: list[IngestResult] = []
        # One transaction: every item is ingested inside it (its identity keys claimed, its
        # events appended, a duplicate merged or flagged), so all of them commit or none does;
        # the keys an earlier item claimed catch a later item for the same person.
        async with self.services.runtime.pool.connection() as conn, conn.transaction():
            for item, lead_id in zip(items, ids, strict=True):
                lead = new_lead(item.data, lead_id, self.definitions)
                try:
                    outcome = await self.ingestor.create(
                        self.workspace, lead, metadata, self.quality, policy=policy,
                        event_ids=derived_ids(self.request_uuid, f"lead/{item.index}"),
                        conn=conn,
                    )
                except DomainError as exc:
                    raise _whole_batch(item.index, exc, ids) from None
                if outcome.outcome == CREATED:
                    self.candidates.add(lead_id, outcome)
                outcomes.append(outcome)
        stamps = await self._stamps([(o.result.lead_id, o.result.state.version)
                                     for o in outcomes])
        results = []
        for item, outcome in zip(items, outcomes, strict=True):
            done = outcome.result
            created_at, updated_at, position = stamps[(done.lead_id, done.state.version)]
            result = WriteResult(
                done.lead_id, done.state, done.events, position, created_at, updated_at,
                merged_into=outcome.merged_into,
                quality=quality_of(done.state, updated_at, self.quality),
            )
            status = "created" if outcome.outcome == CREATED else "merged"
            results.append(
                BatchItemResult(index=item.index, status=status, lead=lead_of_state(result))
            )
        return _response(True, results)

    async def _stamps(
        self, versions: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], tuple[datetime, datetime, LogPosition]]:
        async with self.services.runtime.pool.connection() as conn:
            cur = await conn.execute(_STAMPS, (
                [s for s, _ in versions], [v for _, v in versions], self.workspace
            ))
            rows = await cur.fetchall()
        return {(stream, version): (created, updated, LogPosition(tx, pos))
                for stream, version, created, updated, tx, pos in rows}


def _whole_batch(index: int, exc: DomainError, batch_ids: dict[str, int]) -> ProblemError:
    """An item the ledger refused, as the whole batch's problem, naming the item."""
    problem = to_problem(exc)
    errors = [msgspec.structs.replace(e, field=f"leads[{index}].{e.field}")
              for e in problem.errors or []]
    detail = f"item {index}: {problem.detail}; nothing was created"
    if isinstance(exc, DuplicateLead) and exc.existing_id in batch_ids:
        earlier = batch_ids[exc.existing_id]
        detail = (f"item {index} is the same person as item {earlier} "
                  f"({', '.join(exc.matched)}); nothing was created")
        errors = [FieldError(field=f"leads[{index}].{m}", message=f"same as leads[{earlier}]")
                  for m in exc.matched]
        return ProblemError("duplicate-lead", detail, errors=errors)
    if problem.duplicate is not None:
        return ProblemError(problem.type.slug, detail, errors=errors or None,
                            duplicate=problem.duplicate)
    return ProblemError(problem.type.slug, detail, errors=errors or None)


def _response(atomic: bool, results: list[BatchItemResult]) -> Reply:
    counts = {s: sum(r.status == s for r in results) for s in ("created", "merged", "rejected")}
    return reply(HTTP_200_OK, BatchResponse(
        atomic=atomic, created=counts["created"], merged=counts["merged"],
        rejected=counts["rejected"], results=results,
    ))


__all__ = ["BatchController", "Response"]
