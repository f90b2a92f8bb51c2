"""How a lead is shown: from the read model's row or from a write's state, with the headers that
carry its version (ETag) and the write's ledger position (X-Consistency-Token).

Its data quality is scored here, from its state, against the workspace's required fields and
vocabularies and the current time (the read model's stored score uses the defaults)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar.status_codes import HTTP_200_OK
from msgspec import UNSET

from api.http.idempotency import Reply, reply
from api.http.representations import Quality, lead_from_values
from api.http.versions import etag
from api.http.writes import WriteResult, quality_of
from ledger.lead import LeadState
from ledger.quality import QualityScore
from ledger.quality_settings import WorkspaceQuality
from projections.lead_rows import state_from_row
from projections.leads import LeadRow
from schema.events import FIELD_NAMES


def quality_view(score: QualityScore | None) -> Quality | None:
    if score is None:
        return None
    return Quality(
        score=score.score, completeness=score.completeness, validity=score.validity,
        consistency=score.consistency, freshness=score.freshness, problems=list(score.problems),
    )


def lead_of_state(result: WriteResult) -> Any:
    state: LeadState = result.state
    values: dict[str, Any] = {
        name: None if (v := getattr(state.fields, name)) is UNSET else v for name in FIELD_NAMES
    }
    values.update(
        id=result.lead_id, version=state.version, status=state.status, stage=state.stage,
        owner=state.owner, tags=list(state.tags), notes_count=state.notes_count,
        merged_into=result.merged_into or state.merged_into, merged_from=list(state.merged_from),
        email_status=state.email_status, email_reasons=list(state.email_reasons),
        quarantined=state.quarantined, suspected_duplicates=list(state.suspected_duplicates),
        quality=quality_view(result.quality), attributes=dict(state.attributes),
        score=state.score, score_band=state.score_band, score_model=state.score_model,
        activity_count=state.activity_count, last_activity_at=state.last_activity_at,
        enrichment=msgspec.to_builtins(state.enrichment), team=state.team, queue=state.queue,
        assigned_by=state.assigned_by, open_tasks=list(state.open_tasks),
        created_at=result.created_at, updated_at=result.updated_at,
    )
    return lead_from_values(values)


def lead_of_row(row: LeadRow, quality: WorkspaceQuality, now: datetime) -> Any:
    values = msgspec.structs.asdict(row)
    values["id"] = row.lead_id
    values["quality"] = quality_view(
        quality_of(state_from_row(row), row.updated_at, quality, now)
    )
    return lead_from_values(values)


def write_headers(result: WriteResult) -> dict[str, str]:
    return {"etag": etag(result.state.version), "x-consistency-token": result.position.token()}


def lead_reply(result: WriteResult, status: int = HTTP_200_OK) -> Reply:
    return reply(status, lead_of_state(result), write_headers(result))


