"""POST /v1/scoring/what-if: what a candidate scoring model would do, by replaying the ledger.

The same replay as `leadledger rescore --dry-run` (processors/what_if.py): the workspace's
events are read up to the readable horizon and folded, and every lead is scored under the
candidate and under the model it is compared with (the active one unless `against` names
another). Nothing is written. The answer is the report: each model's score distribution and
bands, how well each ranks the leads that later converted (AUC), and the leads that change band.
It runs while the request waits (a million events take a minute or two here); for bigger
workspaces the CLI shows a progress bar. Admin keys only: it reads every lead of the workspace.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, post
from litestar.status_codes import HTTP_200_OK
from msgspec import Meta

from api.http.access import require_admin
from api.http.problems import ProblemError, problem_responses
from api.http.scoring import MODEL_ID_PATTERN, BandBody, Points, RuleBody, refused, spec_of
from api.http.services import Services
from processors.rules import InvalidModel, compile_model
from processors.what_if import ModelUnderTest, WhatIfReport, run_what_if
from schema.attributes import AttributeDefinition
from schema.scoring import MAX_RULES, ScoringModelSpec


class SavedModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model_id: Annotated[str, Meta(pattern=MODEL_ID_PATTERN)]
    version: Annotated[int, Meta(ge=1, le=2**31 - 1)] | None = None
    """None: the latest version."""


class CandidateModel(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A model written out, not saved: the same fields as POST /v1/scoring/models."""

    rules: Annotated[list[RuleBody], Meta(min_length=1, max_length=MAX_RULES)]
    bands: Annotated[list[BandBody], Meta(max_length=50)] = []
    min_score: Points | None = None
    max_score: Points | None = None
    mql_threshold: Points | None = None

    def spec(self) -> ScoringModelSpec:
        return spec_of(self)


class WhatIfRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The candidate: a saved model (`saved`) or one written out (`model`), exactly one."""

    saved: SavedModel | None = None
    model: CandidateModel | None = None
    against: SavedModel | None = None
    """The model to compare with; default: the workspace's active model (if any)."""


class WhatIfController(Controller):
    path = "/v1/scoring/what-if"
    tags = ("scoring",)

    @post("/", status_code=HTTP_200_OK, guards=[require_admin],
          summary="Replay the ledger through a candidate model, writing nothing (admin)",
          description="Scores every lead of the workspace under the candidate and under the "
          "active model (or `against`), as of each lead's last event, and answers the score "
          "distributions and bands, the AUC of each model over the leads that later reached "
          "opportunity or customer (scored just before converting), and the leads that change "
          "band. Nothing is written.",
          responses=problem_responses(400, 401, 403, 404, 413, 415, 422, 429))
    async def what_if(self, request: Request, data: WhatIfRequest,
                      services: Services) -> WhatIfReport:
        workspace = request.user.key.workspace
        if (data.saved is None) == (data.model is None):
            raise ProblemError("validation-failed", "give exactly one of `saved` and `model`")
        attributes = tuple((await services.attributes.current(workspace)).values())
        if data.model is not None:
            candidate = _compiled("candidate", data.model.spec(), attributes)
        else:
            assert data.saved is not None
            candidate = await _saved(services, workspace, data.saved)
        current = None
        if data.against is not None:
            current = await _saved(services, workspace, data.against)
        else:
            active = await services.scoring.active(workspace)
            if active is not None:
                current = _compiled(active.label, active.spec, active.attributes)
        return await run_what_if(services.runtime.store, workspace, candidate, current)


async def _saved(services: Services, workspace: str, ref: SavedModel) -> ModelUnderTest:
    found = await services.scoring.get(workspace, ref.model_id, ref.version)
    if found is None:
        which = f"version {ref.version} of " if ref.version is not None else ""
        raise ProblemError("not-found", f"no {which}scoring model {ref.model_id!r} in this "
                           "workspace")
    return _compiled(found.label, found.spec, found.attributes)


def _compiled(label: str, spec: ScoringModelSpec,
              attributes: tuple[AttributeDefinition, ...]) -> ModelUnderTest:
    try:
        return ModelUnderTest(label, compile_model(spec, attributes))
    except InvalidModel as exc:
        raise refused(list(exc.problems)) from None
