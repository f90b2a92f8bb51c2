"""How a lead is shown: from the read model's row or from a write's state, with the headers that
carry its version (ETag) and the write's ledger position (X-Consistency-Token)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.status_codes import HTTP_200_OK
from msgspec import UNSET

from api.http.idempotency import Reply, reply
from api.http.representations import lead_from_values
from api.http.versions import etag
from api.http.writes import WriteResult
from ledger.lead import LeadState
from projections.leads import LeadRow
from schema.events import FIELD_NAMES


def lead_of_state(result: WriteResult) -> Any:
    state: LeadState = result.state
    values: dict[str, Any] = {
        name: None if (v := getattr(state.fields, name)) is UNSET else v for name in FIELD_NAMES
    }
    values.update(
        id=result.lead_id, version=state.version, status=state.status, stage=state.stage,
        owner=state.owner, tags=list(state.tags), notes_count=state.notes_count,
        merged_into=state.merged_into, created_at=result.created_at,
        updated_at=result.updated_at,
    )
    return lead_from_values(values)


def lead_of_row(row: LeadRow) -> Any:
    values = msgspec.structs.asdict(row)
    values["id"] = row.lead_id
    return lead_from_values(values)


def write_headers(result: WriteResult) -> dict[str, str]:
    return {"etag": etag(result.state.version), "x-consistency-token": result.position.token()}


def lead_reply(result: WriteResult, status: int = HTTP_200_OK) -> Reply:
    return reply(status, lead_of_state(result), write_headers(result))


