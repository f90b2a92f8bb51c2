"""/v1/leads/{id}/score and /score/history: a lead's score, with its decomposition, and every
score it had, from the score-history read model (projections/score_history.py).

The score shows the total, the band, the model (`<id>@<version>`), each rule's contribution
(points when it matched, the error when it failed) with the values the rule saw, when it was
computed and what caused it (the event, or `ModelActivated` for a rescore).

X-Consistency-Token: the token of a write names the write's event, but the score that event
causes is appended later, by the scoring processor. So the read waits, bounded, until the
processor has handled the token's position (its score, if any, then committed with its
checkpoint), and then until the history has caught up with the lead's latest event.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import Parameter
from msgspec import Meta

from api.http.cursors import decode_cursor, encode_cursor
from api.http.docs import ConsistencyTokenHeader
from api.http.leads import LeadId, require_lead_id
from api.http.problems import ProblemError, problem_responses
from api.http.representations import MAX_PAGE
from api.http.services import Services
from api.http.versions import consistency_token
from processors.scoring import NAME as SCORING
from projections.checkpoints import wait_for
from projections.score_history import NAME as HISTORY
from projections.score_history import ScoreRow, latest_score, score_history
from schema.positions import LogPosition

# The lead's latest event: by the (workspace, stream_id, version) unique index.
_LEAD_HEAD = """
SELECT transaction_id, position FROM events
WHERE workspace = %s AND stream_id = %s ORDER BY version DESC LIMIT 1
"""


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    rule: str
    points: Annotated[float, Meta(description="What the rule added (0 unless it matched).")]
    matched: bool
    error: Annotated[str | None, Meta(description="Why the rule failed (it then adds 0).")]
    observed: Annotated[dict[str, Any], Meta(description="The values the rule read, by "
                                             "reference (e.g. `lead.country`).")]


class Cause(msgspec.Struct, frozen=True, kw_only=True):
    type: Annotated[str | None, Meta(description="The causing event's type, or "
                                     "`ModelActivated` for a rescore after an activation.")]
    event_id: str | None


class Score(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    score: float
    band: str | None
    model: Annotated[str, Meta(description="`<model id>@<version>`.")]
    model_id: str
    model_version: int
    contributions: list[Contribution]
    scored_at: datetime
    cause: Cause
    version: Annotated[int, Meta(description="The lead's version its LeadScored event made.")]


class ScorePage(msgspec.Struct, frozen=True):
    data: list[Score]
    next_cursor: str | None


class HistoryCursor(msgspec.Struct, frozen=True, array_like=True):
    before_version: int


def score_of(row: ScoreRow) -> Score:
    return Score(
        lead_id=row.lead_id, score=row.score, band=row.band,
        model=f"{row.model_id}@{row.model_version}", model_id=row.model_id,
        model_version=row.model_version,
        contributions=[
            Contribution(rule=c.rule, points=c.points, matched=c.matched, error=c.error,
                         observed=_observed(row.observed.get(c.rule)))
            for c in row.contributions
        ],
        scored_at=row.recorded_at, cause=Cause(type=row.cause_type, event_id=row.cause_event_id),
        version=row.version,
    )


def _observed(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def wait_for_score(request: Request, services: Services, workspace: str,
                         lead_id: str) -> None:
    """Read-your-writes for scores (see the module docstring); 503 when not reached in time."""
    position = consistency_token(request)
    if position is None:
        return
    pool = services.runtime.pool
    deadline = time.monotonic() + services.settings.consistency_wait_s
    if await wait_for(pool, SCORING, position, _left(deadline)):
        async with pool.connection() as conn:
            cur = await conn.execute(_LEAD_HEAD, (workspace, lead_id))
            row = await cur.fetchone()
        head = LogPosition(row[0], row[1]) if row else position
        if await wait_for(pool, HISTORY, max(head, position), _left(deadline)):
            return
    raise ProblemError(
        "unavailable", f"the score has not yet caught up with {position.token()}; retry shortly",
        headers={"Retry-After": "1"},
    )


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class ScoresController(Controller):
    path = "/v1/leads/{lead_id:str}/score"
    tags = ("scoring",)

    @get("/", summary="A lead's score and why",
         description="The total, the band, the model, and each rule's contribution with the "
         "values it saw; 404 while the lead was never scored (no active model, or not yet).",
         responses=problem_responses(400, 401, 404, 429, 503))
    async def score(self, request: Request, lead_id: LeadId, services: Services,
                    x_consistency_token: ConsistencyTokenHeader = None) -> Score:
        require_lead_id(lead_id)
        workspace = request.user.key.workspace
        await wait_for_score(request, services, workspace, lead_id)
        async with services.runtime.pool.connection() as conn:
            row = await latest_score(conn, workspace, lead_id)
        if row is None:
            raise ProblemError("not-found", "this lead has no score (yet) in this workspace")
        return score_of(row)

    @get("/history", summary="Every score a lead had",
         description="Newest first, a page at a time: each score with its model, its "
         "decomposition and what caused it.",
         responses=problem_responses(400, 401, 404, 429, 503))
    async def history(
        self, request: Request, lead_id: LeadId, services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
        x_consistency_token: ConsistencyTokenHeader = None,
    ) -> ScorePage:
        require_lead_id(lead_id)
        workspace = request.user.key.workspace
        await wait_for_score(request, services, workspace, lead_id)
        before = decode_cursor(cursor, HistoryCursor).before_version if cursor else None
        async with services.runtime.pool.connection() as conn:
            rows = await score_history(conn, workspace, lead_id, before, limit + 1)
        page = rows[:limit]
        next_cursor = (
            encode_cursor(HistoryCursor(page[-1].version)) if len(rows) > limit else None
        )
        return ScorePage(data=[score_of(r) for r in page], next_cursor=next_cursor)
