"""/v1/scoring: the workspace's scoring models, their versions, activation, and rescore jobs.

A model is saved as a new version every time (`POST /v1/scoring/models` with a model id it
already has makes version + 1): versions are immutable, so every score names the exact model
that computed it. Each save compiles and type-checks the rules (processors/rules.py) against
the workspace's custom attributes: a rule that does not compile is refused with 422, listing
each problem with its rule's index and name and the line and column of the error. Activating a
version makes it the workspace's model: the scoring processor uses it from its next event, and a
background job rescores every lead (202 with the job; its progress at
`GET /v1/scoring/rescore-jobs/{id}` and in `leadledger status`). Any key reads; saving and
activating need an admin key, like the workspace's other settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED
from msgspec import Meta

from api.http.access import require_admin
from api.http.context import reason_from
from api.http.docs import LOCATION, ReasonHeader
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.representations import SINGLE_LINE, Reason
from api.http.services import Services
from ledger.scoring_models import ModelNotFound, ModelVersion
from processors.rescore import RescoreJob, create_job, get_job
from processors.rules import InvalidModel, compile_model
from schema.scoring import (
    MAX_EXPRESSION_LENGTH,
    MAX_RULES,
    RuleProblem,
    ScoreBand,
    ScoringModelSpec,
    ScoringRule,
)

MODEL_ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
Points = Annotated[float, Meta(ge=-1_000_000, le=1_000_000)]

ModelIdParam = Annotated[str, Parameter(
    description="The model's id: 1-64 lowercase letters, digits or `_.-`.", max_length=64,
    pattern=MODEL_ID_PATTERN)]
VersionParam = Annotated[int, Parameter(ge=1, le=2**31 - 1, description="A version number.")]


class RuleBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=100, pattern=SINGLE_LINE,
                              description="Unique within the model.")]
    expression: Annotated[str, Meta(
        min_length=1, max_length=MAX_EXPRESSION_LENGTH,
        description="CEL, evaluating to a boolean over the lead's facts (`lead`, `attributes`, "
        "`activity`, `count(kind, days)`...).",
        examples=['lead.country == "DE" && activity.demo_request.count > 0'])]
    points: Annotated[Points, Meta(description="Added when the rule matches (negative "
                                   "subtracts).")]
    description: Annotated[str, Meta(max_length=1000)] = ""


class BandBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, Meta(min_length=1, max_length=64, pattern=SINGLE_LINE)]
    min_score: Points


class ModelCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A scoring model, saved as a new version of `model_id` (a draft until activated)."""

    model_id: Annotated[str, Meta(pattern=MODEL_ID_PATTERN, description="1-64 lowercase "
                                  "letters, digits or `_.-`.", examples=["inbound"])]
    rules: Annotated[list[RuleBody], Meta(min_length=1, max_length=MAX_RULES)]
    bands: Annotated[list[BandBody], Meta(max_length=50, description="A lead is in the "
                                          "highest band whose `min_score` it reaches.")] = []
    min_score: Annotated[Points | None, Meta(description="The total's floor.")] = None
    max_score: Annotated[Points | None, Meta(description="The total's cap.")] = None
    mql_threshold: Annotated[Points | None, Meta(description="The score at which a lead "
                                                 "counts as marketing-qualified.")] = None
    description: Annotated[str, Meta(max_length=2000)] = ""
    reason: Reason | None = None

    def spec(self) -> ScoringModelSpec:
        return spec_of(self, self.description)


def spec_of(body: ModelCreate | Any, description: str = "") -> ScoringModelSpec:
    """The model a request body describes (POST /v1/scoring/models, or a what-if candidate)."""
    return ScoringModelSpec(
        rules=tuple(ScoringRule(name=r.name, expression=r.expression, points=r.points,
                                description=r.description) for r in body.rules),
        bands=tuple(ScoreBand(name=b.name, min_score=b.min_score) for b in body.bands),
        min_score=body.min_score, max_score=body.max_score,
        mql_threshold=body.mql_threshold, description=description,
    )


class ModelView(msgspec.Struct, kw_only=True, frozen=True):
    model_id: str
    version: int
    label: Annotated[str, Meta(description="`<model id>@<version>`, as a lead's `score_model` "
                               "names it.")]
    status: Literal["draft", "active", "retired"]
    rules: list[ScoringRule]
    bands: list[ScoreBand]
    min_score: float | None
    max_score: float | None
    mql_threshold: float | None
    description: str
    created_at: datetime
    created_by: str
    reason: str | None
    activated_at: datetime | None
    activated_by: str | None


class ModelList(msgspec.Struct, frozen=True):
    data: list[ModelView]


class RescoreJobView(msgspec.Struct, kw_only=True, frozen=True):
    id: str
    model_id: str
    model_version: int
    status: Literal["running", "done", "superseded", "failed"]
    total: Annotated[int, Meta(description="Leads in the workspace when the job started.")]
    done: int
    changed: Annotated[int, Meta(description="Leads whose score changed.")]
    progress: Annotated[float, Meta(description="done / total, 0-1.")]
    error: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class Activation(msgspec.Struct, kw_only=True, frozen=True):
    model: ModelView
    job: Annotated[RescoreJobView | None, Meta(
        description="The background rescore of the workspace's leads; null when the version "
        "was already active.")]


def model_view(model: ModelVersion) -> ModelView:
    spec = model.spec
    return ModelView(
        model_id=model.model_id, version=model.version, label=model.label,
        status=model.status,  # type: ignore[arg-type]
        rules=list(spec.rules), bands=list(spec.bands), min_score=spec.min_score,
        max_score=spec.max_score, mql_threshold=spec.mql_threshold,
        description=spec.description, created_at=model.created_at, created_by=model.created_by,
        reason=model.reason, activated_at=model.activated_at, activated_by=model.activated_by,
    )


def job_view(job: RescoreJob) -> RescoreJobView:
    return RescoreJobView(
        id=job.job_id, model_id=job.model_id, model_version=job.model_version,
        status=job.status,  # type: ignore[arg-type]
        total=job.total, done=job.done, changed=job.changed,
        progress=1.0 if job.total == 0 else min(1.0, job.done / job.total), error=job.error,
        started_at=job.started_at, updated_at=job.updated_at, finished_at=job.finished_at,
    )


def refused(problems: list[RuleProblem]) -> ProblemError:
    """422 listing every problem, also as field errors (`rules[2].expression`)."""
    errors = []
    for p in problems:
        where = f" (line {p.line}, column {p.column})" if p.line is not None else ""
        field = f"rules[{p.rule_index}].expression" if p.rule_index >= 0 else "body"
        errors.append(FieldError(field=field, message=f"{p.message}{where}"))
    return ProblemError("validation-failed", f"{len(problems)} problem(s) in the model's rules",
                        errors=errors, problems=list(problems))


def _not_found(model_id: str, version: int | None = None) -> ProblemError:
    which = f"version {version} of " if version is not None else ""
    return ProblemError("not-found", f"no {which}scoring model {model_id!r} in this workspace")


MODEL_BODY = Body(title="A scoring model", examples=[Example(
    summary="Fit and intent, with bands", value={
        "model_id": "inbound",
        "rules": [
            {"name": "target-country", "expression": 'lead.country in ["DE", "FR", "GB"]',
             "points": 10, "description": "Markets we sell in"},
            {"name": "asked-for-demo", "expression": "activity.demo_request.count > 0",
             "points": 40},
            {"name": "engaged", "expression": 'count("email_click", 30) >= 3', "points": 15},
            {"name": "personal-mailbox", "expression": 'lead.email_domain == "gmail.com"',
             "points": -20},
        ],
        "bands": [{"name": "A", "min_score": 50}, {"name": "B", "min_score": 25},
                  {"name": "C", "min_score": 0}],
        "min_score": 0, "max_score": 100, "mql_threshold": 50,
        "reason": "First inbound model",
    })])


class ScoringController(Controller):
    path = "/v1/scoring"
    tags = ("scoring",)

    @post("/models", status_code=HTTP_201_CREATED, guards=[require_admin],
          summary="Save a scoring model (a new version; admin)",
          description="Compiles and type-checks every rule against the lead's variables and the "
          "workspace's custom attributes; a rule that does not compile is refused (422) with "
          "its index, name, and the line and column of the error (`problems`). A model id "
          "already used gets its next version; the new version is a draft until activated.",
          response_headers=[LOCATION],
          responses=problem_responses(400, 401, 403, 413, 415, 422, 429))
    async def save(
        self, request: Request, data: Annotated[ModelCreate, MODEL_BODY], services: Services,
        x_reason: ReasonHeader = None,
    ) -> Response[ModelView]:
        key = request.user.key
        spec = data.spec()
        attributes = tuple((await services.attributes.current(key.workspace)).values())
        try:
            compile_model(spec, attributes)
        except InvalidModel as exc:
            raise refused(list(exc.problems)) from None
        saved = await services.scoring.save(
            key.workspace, data.model_id, spec, key.key_id, reason_from(request, data.reason),
            attributes,
        )
        location = f"/v1/scoring/models/{saved.model_id}/versions/{saved.version}"
        return Response(model_view(saved), status_code=HTTP_201_CREATED,
                        headers={"location": location})

    @get("/models", summary="The workspace's scoring models (latest version of each)",
         responses=problem_responses(401, 429))
    async def models(self, request: Request, services: Services) -> ModelList:
        found = await services.scoring.list(request.user.key.workspace)
        return ModelList(data=[model_view(m) for m in found])

    @get("/models/{model_id:str}", summary="A scoring model's latest version",
         responses=problem_responses(401, 404, 429))
    async def model(self, request: Request, model_id: ModelIdParam,
                    services: Services) -> ModelView:
        found = await services.scoring.get(request.user.key.workspace, model_id)
        if found is None:
            raise _not_found(model_id)
        return model_view(found)

    @get("/models/{model_id:str}/versions", summary="Every version of a scoring model",
         responses=problem_responses(401, 404, 429))
    async def versions(self, request: Request, model_id: ModelIdParam,
                       services: Services) -> ModelList:
        found = await services.scoring.versions(request.user.key.workspace, model_id)
        if not found:
            raise _not_found(model_id)
        return ModelList(data=[model_view(m) for m in found])

    @get("/models/{model_id:str}/versions/{version:int}", summary="One version of a model",
         responses=problem_responses(401, 404, 429))
    async def version(self, request: Request, model_id: ModelIdParam, version: VersionParam,
                      services: Services) -> ModelView:
        found = await services.scoring.get(request.user.key.workspace, model_id, version)
        if found is None:
            raise _not_found(model_id, version)
        return model_view(found)

    @post("/models/{model_id:str}/versions/{version:int}/activate", guards=[require_admin],
          status_code=HTTP_202_ACCEPTED,
          summary="Make a version the workspace's scoring model (admin)",
          description="The scoring processor uses it from its next event on, and every lead of "
          "the workspace is rescored in the background, throttled (202 with the job; follow "
          "it at /v1/scoring/rescore-jobs/{id}). The version that was active is retired. "
          "Activating the active version changes nothing (200, no job).",
          responses=problem_responses(401, 403, 404, 429))
    async def activate(self, request: Request, model_id: ModelIdParam, version: VersionParam,
                       services: Services, x_reason: ReasonHeader = None) -> Response[Activation]:
        key = request.user.key
        async with services.runtime.pool.connection() as conn, conn.transaction():
            try:
                model, changed = await services.scoring.activate(
                    key.workspace, model_id, version, key.key_id, conn=conn
                )
            except ModelNotFound:
                raise _not_found(model_id, version) from None
            job = await create_job(conn, model) if changed else None
        if job is not None:
            services.rescorer.start(job)
        return Response(
            Activation(model=model_view(model), job=job_view(job) if job else None),
            status_code=HTTP_202_ACCEPTED if job else HTTP_200_OK,
        )

    @get("/active", summary="The workspace's active scoring model",
         responses=problem_responses(401, 404, 429))
    async def active(self, request: Request, services: Services) -> ModelView:
        found = await services.scoring.active(request.user.key.workspace)
        if found is None:
            raise ProblemError("not-found", "this workspace has no active scoring model")
        return model_view(found)

    @get("/rescore-jobs/{job_id:str}", summary="A background rescore's progress",
         responses=problem_responses(401, 404, 429))
    async def job(self, request: Request, services: Services,
                  job_id: Annotated[str, Parameter(max_length=64)]) -> RescoreJobView:
        async with services.runtime.pool.connection() as conn:
            found = await get_job(conn, job_id, request.user.key.workspace)
        if found is None:
            raise ProblemError("not-found", "no such rescore job in this workspace")
        return job_view(found)
