"""/v1/quality: the workspace's data quality, its rules' failures, and its ingestion policy.

GET /v1/quality summarizes the active leads: the distribution of their scores, the average
components and the most common problems. GET /v1/quality/problems/{problem} lists the leads that
fail one rule, worst first. Both rescore every lead against the workspace's required fields and
vocabularies at the current time (api/http/quality_queries.py). /v1/quality/settings holds the
ingestion policy: duplicate policies, fuzzy threshold, unknown vocabulary values, required
fields, the optional MX check of emails; any key reads it, only an admin key changes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, get, put
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from msgspec import Meta

from api.http.access import require_admin
from api.http.context import reason_from
from api.http.docs import ConsistencyTokenHeader, ReasonHeader
from api.http.lead_views import lead_of_row
from api.http.problems import ProblemError, problem_responses
from api.http.quality_queries import Rescoring, Summary, summarize
from api.http.quality_queries import failing as failing_leads
from api.http.representations import MAX_PAGE, LeadPage, Reason
from api.http.services import Services
from api.http.versions import read_your_writes
from ledger.quality import DEFAULT_REQUIRED, WEIGHTS
from ledger.quality_settings import QualityPolicy, WorkspaceQuality
from schema.events import FIELD_NAMES
from schema.vocabularies import VOCABULARY_FIELDS

Policy = Literal["reject", "merge", "flag"]
FieldName = Literal[FIELD_NAMES]  # type: ignore[valid-type]
PROBLEM_PATTERN = r"^[a-z][a-z0-9_:-]{0,63}$"


class QualitySettingsBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The workspace's ingestion policy; an omitted field takes its default."""

    exact_policy: Annotated[Policy, Meta(
        description="A create whose email, phone or external id belongs to a lead: `reject` "
        "(409), `merge` (into it, 200) or `flag` (create, queue the pair for review).")
    ] = "reject"
    fuzzy_policy: Annotated[Policy, Meta(
        description="A create with a likely duplicate (scoring at least `fuzzy_threshold`).")
    ] = "flag"
    fuzzy_threshold: Annotated[float, Meta(
        ge=50, le=100, description="How alike (0–100) a pair must be to be a likely "
        "duplicate.")] = 88.0
    on_unknown: Annotated[Literal["reject", "flag"], Meta(
        description="A value outside a vocabulary: `reject` (422 with the allowed values and "
        "the closest) or `flag` (kept as entered; the lead's quality names it "
        "`unmapped:<field>`).")] = "reject"
    required_fields: Annotated[list[FieldName], Meta(
        max_length=len(FIELD_NAMES), description="Lead fields a complete lead has: the "
        "completeness part of the quality score.")] = msgspec.field(
        default_factory=lambda: list(DEFAULT_REQUIRED))
    email_mx_check: Annotated[bool, Meta(
        description="Look up the email domain in DNS when a lead is created or its email "
        "changes: a domain that does not exist or takes no mail (no MX, and no address for "
        "the implicit MX) makes the email `invalid` with reason `no-mx`, quarantining the "
        "lead. A lookup that fails or times out (2 s by default) never holds up the write: "
        "the email is then left as the offline checks found it.")] = False
    reason: Reason | None = None


class QualitySettingsView(msgspec.Struct, kw_only=True, frozen=True):
    exact_policy: Policy
    fuzzy_policy: Policy
    fuzzy_threshold: float
    on_unknown: Literal["reject", "flag"]
    required_fields: list[str]
    email_mx_check: bool


class Bucket(msgspec.Struct, frozen=True):
    min: int
    max: int
    count: int


class ProblemCount(msgspec.Struct, frozen=True):
    problem: str
    description: str
    count: int


class Components(msgspec.Struct, frozen=True):
    completeness: float | None
    validity: float | None
    consistency: float | None
    freshness: float | None


class QualityReport(msgspec.Struct, frozen=True):
    """The data quality of the workspace's active leads, as of `as_of`."""

    leads: int
    average_score: float | None
    components: Annotated[Components, Meta(description="Average of each component, 0–1.")]
    weights: dict[str, int]
    distribution: Annotated[list[Bucket], Meta(description="How many leads score in each "
                                               "band of ten (the last is 90–100).")]
    problems: Annotated[list[ProblemCount], Meta(description="The most common problems, most "
                                                 "frequent first.")]
    required_fields: list[str]
    as_of: datetime


SETTINGS_BODY = Body(title="The ingestion policy", examples=[Example(
    summary="Merge exact duplicates, flag likely ones, accept unknown values", value={
        "exact_policy": "merge", "fuzzy_policy": "flag", "fuzzy_threshold": 90,
        "on_unknown": "flag", "required_fields": ["email", "first_name", "last_name",
                                                  "company", "country", "title"],
        "reason": "Imports from the events team",
    })])

_FIXED = {
    "email-risky": "The email is a role account (info@, sales@...): deliverable but risky.",
    "email-invalid": "The email is invalid: bad syntax, a disposable or typo domain, a "
                     "domain that takes no mail (with the MX check on), or a hard bounce. The "
                     "lead is quarantined.",
    "phone-unparseable": "The phone is not a valid number (kept as entered).",
    "phone-country-mismatch": "The phone's country is not the lead's country.",
    "email-domain-mismatch": "The business email's domain is not the website's.",
    "stale": "Unchanged for more than a year.",
}


def describe(problem: str) -> str | None:
    """What a problem code means; None for a code no rule produces."""
    kind, _, field = problem.partition(":")
    if kind == "missing" and field in FIELD_NAMES:
        return f"A required field, {field}, is empty."
    if kind == "unmapped" and field in VOCABULARY_FIELDS:
        return f"The {field} is outside its vocabulary (kept as entered)."
    return _FIXED.get(problem)


def _view(policy: QualityPolicy) -> QualitySettingsView:
    return QualitySettingsView(
        exact_policy=policy.exact_policy, fuzzy_policy=policy.fuzzy_policy,  # type: ignore[arg-type]
        fuzzy_threshold=policy.fuzzy_threshold, on_unknown=policy.on_unknown,  # type: ignore[arg-type]
        required_fields=list(policy.required_fields), email_mx_check=policy.email_mx_check,
    )


def _report(quality: WorkspaceQuality, summary: Summary, now: datetime) -> QualityReport:
    counts = dict(summary.buckets)
    return QualityReport(
        leads=summary.leads,
        average_score=_rounded(summary.average_score, 1),
        components=Components(**{k: _rounded(v, 3) for k, v in summary.averages.items()}),
        weights=dict(WEIGHTS),
        distribution=[Bucket(min=10 * b, max=10 * b + 9 if b < 9 else 100,
                             count=counts.get(b, 0)) for b in range(10)],
        problems=[ProblemCount(problem=p, description=describe(p) or p, count=n)
                  for p, n in summary.problems],
        required_fields=list(quality.policy.required_fields), as_of=now,
    )


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class QualityController(Controller):
    path = "/v1/quality"
    tags = ("quality",)

    @get("/", summary="The workspace's data quality",
         description="Every active lead rescored now against the workspace's required fields "
         "and vocabularies: how many score in each band of ten, the average of each "
         "component, and the most common problems (list the leads behind one with GET "
         "/v1/quality/problems/{problem}).",
         responses=problem_responses(400, 401, 429, 503))
    async def report(self, request: Request, services: Services,
                     x_consistency_token: ConsistencyTokenHeader = None) -> QualityReport:
        pool = services.runtime.pool
        await read_your_writes(request, pool, services.settings.consistency_wait_s)
        workspace = request.user.key.workspace
        quality = await services.writer.quality.load(workspace)
        now = datetime.now(UTC)
        async with pool.connection() as conn:
            summary = await summarize(conn, workspace, Rescoring(quality, now))
        return _report(quality, summary, now)

    @get("/problems/{problem:str}", summary="The leads failing one quality rule",
         description="Active leads whose quality names `problem` (e.g. `missing:company`, "
         "`email-invalid`, `unmapped:industry`, `stale`), lowest score first, a page at a time.",
         responses=problem_responses(400, 401, 404, 429, 503))
    async def failing(
        self, request: Request, services: Services,
        problem: Annotated[str, Parameter(pattern=PROBLEM_PATTERN, max_length=64,
                                          description="A problem code from GET /v1/quality.")],
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE, description="Page size.")] = 50,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
        x_consistency_token: ConsistencyTokenHeader = None,
    ) -> LeadPage:
        if describe(problem) is None:
            raise ProblemError("not-found", f"no quality rule produces {problem!r}")
        pool = services.runtime.pool
        await read_your_writes(request, pool, services.settings.consistency_wait_s)
        workspace = request.user.key.workspace
        quality = await services.writer.quality.load(workspace)
        now = datetime.now(UTC)
        async with pool.connection() as conn:
            rows, next_cursor = await failing_leads(
                conn, workspace, Rescoring(quality, now), problem, limit=limit, cursor=cursor
            )
        return LeadPage(data=[lead_of_row(r, quality, now) for r in rows],
                        next_cursor=next_cursor)

    @get("/settings", summary="The workspace's ingestion policy",
         responses=problem_responses(401, 429))
    async def settings(self, request: Request, services: Services) -> QualitySettingsView:
        return _view((await services.writer.quality.load(request.user.key.workspace)).policy)

    @put("/settings", summary="Set the workspace's ingestion policy (admin)",
         description="Duplicate policies (per request, `?on_duplicate=` and `?on_fuzzy=` "
         "override them), the fuzzy threshold, what happens to a value outside a vocabulary, "
         "the fields a complete lead has, and whether emails' domains are checked in DNS. "
         "Omitted fields take their defaults.",
         guards=[require_admin],
         responses=problem_responses(400, 401, 403, 413, 415, 422, 429))
    async def change(
        self, request: Request, data: Annotated[QualitySettingsBody, SETTINGS_BODY],
        services: Services, x_reason: ReasonHeader = None,
    ) -> QualitySettingsView:
        policy = QualityPolicy(
            exact_policy=data.exact_policy, fuzzy_policy=data.fuzzy_policy,
            fuzzy_threshold=data.fuzzy_threshold, on_unknown=data.on_unknown,
            required_fields=tuple(dict.fromkeys(data.required_fields)),
            email_mx_check=data.email_mx_check,
        )
        key = request.user.key
        await services.writer.quality.save_policy(
            key.workspace, policy, key.key_id, reason_from(request, data.reason)
        )
        return _view(policy)
