"""Creating leads from HTTP: a request's lead made into a `NewLead` and handed to ingestion,
with the request's duplicate policies (`?on_duplicate=` for exact identity matches,
`?on_fuzzy=` for likely duplicates). Shared by POST /v1/leads and the batch endpoint.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from litestar import Request
from litestar.params import Parameter
from msgspec import UNSET

from api.http.context import write_metadata
from api.http.idempotency import derived_id, derived_ids
from api.http.services import Services
from api.http.writes import WriteResult
from ledger.attributes import validate as validate_attributes
from ledger.errors import InvalidValue, LeadAlreadyExists
from ledger.ingest import Ingestor, NewLead
from schema.attributes import AttributeDefinition
from schema.events import FIELD_NAMES, LeadFields

OnDuplicate = Annotated[
    Literal["reject", "merge", "flag"] | None,
    Parameter(description="When the lead's email, phone or external id already belongs to a "
              "lead: `reject` (409 naming it in `existing_id`), `merge` (update it with the new "
              "non-empty fields: 200 with that lead, `merged_into` naming it) or `flag` "
              "(create, and record the suspected duplicate for review in /v1/duplicates). "
              "Default: the workspace's policy (GET /v1/quality/settings)."),
]
OnFuzzy = Annotated[
    Literal["reject", "merge", "flag"] | None,
    Parameter(description="When a likely duplicate exists (a similar name at the same "
              "company, with the same phone, or with the same email mailbox), scoring at least "
              "the workspace's fuzzy threshold: `reject` (409 with `existing_id` and `score`), "
              "`merge` (200 with that lead) or `flag` (create, and queue the pair in "
              "/v1/duplicates). Default: the workspace's policy."),
]


def lead_fields(data: Any, *, patch: bool) -> dict[str, Any]:
    """The lead fields a create (None: absent) or a patch (UNSET: absent) gives."""
    absent = UNSET if patch else None
    given = {n: v for n in FIELD_NAMES if (v := getattr(data, n)) is not absent}
    ip = given.get("ip_address")
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidValue("ip_address", f"{ip!r} is not an IPv4 or IPv6 address") from None
    return given


def new_lead(
    data: Any, lead_id: str, definitions: Mapping[str, AttributeDefinition]
) -> NewLead:
    """The request's lead, its custom attributes checked against `definitions` (the
    workspace's current ones): InvalidValue naming `attributes.<name>` otherwise."""
    attributes = validate_attributes(definitions, data.attributes, create=True)
    return NewLead(
        lead_id=lead_id, fields=LeadFields(**lead_fields(data, patch=False)), stage=data.stage,
        owner=data.owner, tags=tuple(data.tags), attributes=attributes.values,
        personal_attributes=attributes.personal,
    )


async def create_one(
    services: Services,
    request: Request,
    data: Any,
    request_uuid: uuid.UUID | None,
    name: str,
    on_duplicate: str | None = None,
    on_fuzzy: str | None = None,
    ingestor: Ingestor | None = None,
) -> WriteResult:
    """Creates one lead; with a request_uuid (Idempotency-Key), its ids derive from it, so a
    retry after a crash finds the lead its first attempt wrote instead of writing another."""
    workspace = request.user.key.workspace
    definitions = await services.attributes.current(workspace)
    lead = new_lead(data, derived_id(request_uuid, name), definitions)
    metadata = write_metadata(request, data.reason)
    try:
        return await services.writer.create(
            workspace, lead, metadata, event_ids=derived_ids(request_uuid, name),
            on_duplicate=on_duplicate, on_fuzzy=on_fuzzy, ingestor=ingestor,
        )
    except LeadAlreadyExists:
        if request_uuid is None:
            raise
        return await services.writer.current(workspace, lead.lead_id)
