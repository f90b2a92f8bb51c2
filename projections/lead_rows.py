"""The lead read model's row: `LeadRow` (one row of `leads`), and folding a lead's events into
it with the lead's own pure `evolve`, so the read model can never disagree with the decider
about what an event means.

Each row also carries the lead's data-quality score (ledger/quality.py), recomputed whenever
the row is written. The projection has no workspace settings: it scores against the default
required fields and the built-in vocabularies, with freshness 1.0 (a score as of the change);
queries rescore against the workspace's settings and the current time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from ledger.lead import LeadState, evolve
from ledger.quality import score_quality
from ledger.store import RecordedEvent
from schema.events import (
    FIELD_NAMES,
    LEAD_EVENT_TYPES,
    EnrichmentValue,
    LeadCreated,
    LeadFields,
)


class LeadRow(msgspec.Struct, frozen=True):
    """A row of `leads`: the lead's folded state, flat."""

    workspace: str
    lead_id: str
    version: int
    status: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    title: str | None
    website: str | None
    country: str | None
    city: str | None
    address: str | None
    ip_address: str | None
    source: str | None
    external_id: str | None
    industry: str | None
    seniority: str | None
    department: str | None
    stage: str
    owner: str | None
    tags: list[str]
    notes_count: int
    merged_into: str | None
    merged_from: list[str]
    email_status: str | None
    email_reasons: list[str]
    quarantined: bool
    suspected_duplicates: list[str]
    created_at: datetime
    updated_at: datetime
    quality_score: int | None
    """None until the row is written by a projection that scores (see migration 0013)."""
    quality_completeness: float | None
    quality_validity: float | None
    quality_consistency: float | None
    quality_problems: list[str] | None
    attributes: dict[str, Any]
    activity_count: int
    last_activity_at: datetime | None
    score: float | None
    score_band: str | None
    score_model: str | None
    score_digest: str | None
    enrichment: dict[str, Any]
    team: str | None
    queue: str | None
    assigned_by: str | None
    open_tasks: list[str]


STATE_TAIL_COLUMNS = (
    "attributes", "activity_count", "last_activity_at", "score", "score_band", "score_model",
    "score_digest", "enrichment", "team", "queue", "assigned_by", "open_tasks",
)
"""Parts of the lead's state added after the quality columns (migrations 0015, 0020)."""
QUALITY_COLUMNS = (
    "quality_score", "quality_completeness", "quality_validity", "quality_consistency",
    "quality_problems",
)
COLUMNS: tuple[str, ...] = LeadRow.__struct_fields__
LIST_COLUMNS = ("tags", "merged_from", "email_reasons", "suspected_duplicates", "open_tasks")
# Every part of the lead's state has a column (a new LeadState field fails here, not silently),
# and the lead's fields sit together in LeadFields' order (row_values relies on it).
_FIELDS_AT = COLUMNS.index(FIELD_NAMES[0])
assert COLUMNS[_FIELDS_AT : _FIELDS_AT + len(FIELD_NAMES)] == FIELD_NAMES
assert COLUMNS[:_FIELDS_AT] == ("workspace", "lead_id", "version", "status")
assert COLUMNS[_FIELDS_AT + len(FIELD_NAMES):] == (
    "stage", "owner", "tags", "notes_count", "merged_into", "merged_from", "email_status",
    "email_reasons", "quarantined", "suspected_duplicates", "created_at", "updated_at",
    *QUALITY_COLUMNS, *STATE_TAIL_COLUMNS,
)
assert set(COLUMNS) == (
    {"workspace", "created_at", "updated_at", *FIELD_NAMES, *LeadState.__struct_fields__,
     *QUALITY_COLUMNS} - {"fields"}
), "the leads columns and LeadState differ"

PG_TYPES_BY_COLUMN = {
    "version": "int4", "notes_count": "int4", "quarantined": "bool",
    "created_at": "timestamptz", "updated_at": "timestamptz",
    **dict.fromkeys(LIST_COLUMNS, "text[]"),
    "quality_score": "int4", "quality_completeness": "float8", "quality_validity": "float8",
    "quality_consistency": "float8", "quality_problems": "text[]",
    "attributes": "jsonb", "activity_count": "int4", "last_activity_at": "timestamptz",
    "score": "float8", "enrichment": "jsonb",
}
COPY_TYPES = [PG_TYPES_BY_COLUMN.get(column, "text") for column in COLUMNS]

LEAD_EVENTS = tuple(LEAD_EVENT_TYPES)
Key = tuple[str, str]
"""(workspace, lead id)"""


class Folded(msgspec.Struct):
    """A lead mid-fold: the decider's state plus the row's timestamps."""

    state: LeadState
    created_at: datetime | None = None
    updated_at: datetime | None = None


def state_from_row(row: LeadRow) -> LeadState:
    fields: dict[str, Any] = {name: getattr(row, name) for name in FIELD_NAMES}
    return LeadState(
        lead_id=row.lead_id,
        version=row.version,
        status=row.status,
        fields=LeadFields(**fields),
        stage=row.stage,
        owner=row.owner,
        tags=tuple(row.tags),
        notes_count=row.notes_count,
        merged_into=row.merged_into,
        merged_from=tuple(row.merged_from),
        email_status=row.email_status,
        email_reasons=tuple(row.email_reasons),
        quarantined=row.quarantined,
        suspected_duplicates=tuple(row.suspected_duplicates),
        attributes=row.attributes,
        activity_count=row.activity_count,
        last_activity_at=row.last_activity_at,
        score=row.score,
        score_band=row.score_band,
        score_model=row.score_model,
        score_digest=row.score_digest,
        enrichment=msgspec.convert(row.enrichment, dict[str, EnrichmentValue]),
        team=row.team,
        queue=row.queue,
        assigned_by=row.assigned_by,
        open_tasks=tuple(row.open_tasks),
    )


def row_from_state(
    workspace: str, state: LeadState, created_at: datetime, updated_at: datetime
) -> LeadRow:
    return LeadRow(*row_values(workspace, state, created_at, updated_at))


def row_values(
    workspace: str, state: LeadState, created_at: datetime, updated_at: datetime
) -> tuple[Any, ...]:
    """A row as a tuple in COLUMNS order, what COPY takes (built directly: a replay writes
    one per lead, and a Struct in between would double the work)."""
    fields = msgspec.structs.astuple(state.fields)  # FIELD_NAMES order, as in COLUMNS
    # As of the change (freshness 1.0), with the defaults: see the module docstring.
    quality = score_quality(state, updated_at=updated_at, now=updated_at)
    return (
        workspace, state.lead_id or "", state.version, state.status or "",
        *(None if value is msgspec.UNSET else value for value in fields),
        state.stage or "", state.owner, list(state.tags), state.notes_count, state.merged_into,
        list(state.merged_from), state.email_status, list(state.email_reasons),
        state.quarantined, list(state.suspected_duplicates), created_at, updated_at,
        quality.score, quality.completeness, quality.validity, quality.consistency,
        list(quality.problems), state.attributes, state.activity_count,
        state.last_activity_at, state.score, state.score_band, state.score_model,
        state.score_digest, _enrichment_json(state.enrichment), state.team, state.queue,
        state.assigned_by, list(state.open_tasks),
    )


def _enrichment_json(enrichment: dict[str, EnrichmentValue]) -> dict[str, Any]:
    return msgspec.to_builtins(enrichment) if enrichment else {}


def fold_event(folded: Folded, recorded: RecordedEvent) -> None:
    """Applies the lead's next event (version = current + 1), in place."""
    folded.state = evolve(folded.state, recorded.event)
    if isinstance(recorded.event, LeadCreated):
        folded.created_at = recorded.recorded_at
    folded.updated_at = recorded.recorded_at


def folded_values(workspace: str, folded: Folded) -> tuple[Any, ...]:
    assert folded.created_at is not None and folded.updated_at is not None
    return row_values(workspace, folded.state, folded.created_at, folded.updated_at)
