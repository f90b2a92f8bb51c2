"""Commands on a lead: imperative requests that the lead's decider accepts or refuses."""

from __future__ import annotations

from datetime import datetime

import msgspec

from schema.events import AttributeValue, EnrichmentValue, LeadFields, RuleContribution


class CreateLead(msgspec.Struct, kw_only=True, frozen=True):
    lead_id: str
    fields: LeadFields
    stage: str
    owner: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = {}
    """Custom attribute values, already validated against the workspace's definitions."""
    personal_attributes: dict[str, AttributeValue] = {}
    email_deliverable: bool | None = None
    """Whether the email's domain takes mail, looked up by the shell (ledger/email_dns.py) when
    the workspace checks MX; None: not checked, or the lookup failed."""


class ChangeLeadFields(msgspec.Struct, kw_only=True, frozen=True):
    changes: LeadFields
    email_deliverable: bool | None = None
    """As on CreateLead, for the email in `changes`."""


class ChangeLeadAttributes(msgspec.Struct, kw_only=True, frozen=True):
    """Set (or clear, with None) custom attribute values, validated against the definitions;
    personal attributes go in `personal_values`."""

    values: dict[str, AttributeValue] = {}
    personal_values: dict[str, AttributeValue] = {}


class RecordActivity(msgspec.Struct, kw_only=True, frozen=True):
    activity_id: str
    kind: str
    occurred_at: datetime
    name: str | None = None
    properties: dict[str, str] = {}


class RecordScore(msgspec.Struct, kw_only=True, frozen=True):
    """From the scoring processor: the lead's score under a model, caused by `cause_event_id`."""

    model_id: str
    model_version: int
    score: float
    band: str | None = None
    contributions: tuple[RuleContribution, ...] = ()
    observed: str = "{}"
    cause_event_id: str | None = None
    cause_type: str | None = None
    digest: str = ""


class RecordEnrichment(msgspec.Struct, kw_only=True, frozen=True):
    """From an enrichment provider: what it found. `fills` are standard fields it offers; only
    empty ones are set unless `overwrite` (the workspace lets enrichment overwrite)."""

    provider: str
    values: dict[str, EnrichmentValue] = {}
    personal_values: dict[str, EnrichmentValue] = {}
    fills: LeadFields = LeadFields()
    overwrite: bool = False
    trigger: str | None = None


class RequestEnrichment(msgspec.Struct, kw_only=True, frozen=True):
    providers: tuple[str, ...] = ()


class AssignLead(msgspec.Struct, kw_only=True, frozen=True):
    owner: str | None = None
    team: str | None = None
    queue: str | None = None
    rule_id: str | None = None
    rule_name: str | None = None
    reason: str = ""


class OpenTask(msgspec.Struct, kw_only=True, frozen=True):
    task_id: str
    kind: str
    assignee: str | None
    due_at: datetime
    reason: str = ""


class CompleteTask(msgspec.Struct, kw_only=True, frozen=True):
    task_id: str
    outcome: str | None = None


class ReassignTask(msgspec.Struct, kw_only=True, frozen=True):
    task_id: str
    assignee: str | None
    previous: str | None = None
    escalated: bool = False
    due_at: datetime | None = None
    reason: str = ""


class TagLead(msgspec.Struct, kw_only=True, frozen=True):
    tag: str


class UntagLead(msgspec.Struct, kw_only=True, frozen=True):
    tag: str


class AddNote(msgspec.Struct, kw_only=True, frozen=True):
    note_id: str
    text: str


class ChangeStage(msgspec.Struct, kw_only=True, frozen=True):
    stage: str


class AssignOwner(msgspec.Struct, kw_only=True, frozen=True):
    owner: str | None


class ArchiveLead(msgspec.Struct, kw_only=True, frozen=True):
    pass


class RestoreLead(msgspec.Struct, kw_only=True, frozen=True):
    pass


class MarkMergedInto(msgspec.Struct, kw_only=True, frozen=True):
    survivor_id: str


class EraseLead(msgspec.Struct, kw_only=True, frozen=True):
    pass




class RecordEmailBounce(msgspec.Struct, kw_only=True, frozen=True):
    kind: str  # hard, soft
    detail: str | None = None


class AbsorbLead(msgspec.Struct, kw_only=True, frozen=True):
    """On the survivor of a merge: take the absorbed lead's values where the survivor has none."""

    absorbed_id: str
    absorbed_fields: LeadFields
    absorbed_tags: tuple[str, ...] = ()


class SuspectDuplicate(msgspec.Struct, kw_only=True, frozen=True):
    other_id: str
    score: float
    matched: tuple[str, ...]
    exact: bool = False


class DismissDuplicate(msgspec.Struct, kw_only=True, frozen=True):
    other_id: str


LeadCommand = (
    CreateLead
    | ChangeLeadFields
    | TagLead
    | UntagLead
    | AddNote
    | ChangeStage
    | AssignOwner
    | ArchiveLead
    | RestoreLead
    | MarkMergedInto
    | EraseLead
    | RecordEmailBounce
    | AbsorbLead
    | SuspectDuplicate
    | DismissDuplicate
    | ChangeLeadAttributes
    | RecordActivity
    | RecordScore
    | RecordEnrichment
    | RequestEnrichment
    | AssignLead
    | OpenTask
    | CompleteTask
    | ReassignTask
)
