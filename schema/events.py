"""Every event of the lead lifecycle, versioned, as msgspec Structs.

An event names itself (`event_type`, `schema_version`) and the dotted paths of its personal
fields (`personal`), which the ledger encrypts before anything is written. Events are facts in
the past tense; they carry only what changed, never derived state.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec
from msgspec import UNSET, UnsetType

PERSONAL_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "address",
    "ip_address",
)
"""Standard lead fields that identify a person; encrypted in the ledger, erased on request."""


class LeadFields(
    msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True, forbid_unknown_fields=True
):
    """The lead's descriptive fields. UNSET means "not given" (create) or "unchanged" (change);
    None means "cleared"."""

    first_name: str | None | UnsetType = UNSET
    last_name: str | None | UnsetType = UNSET
    email: str | None | UnsetType = UNSET
    phone: str | None | UnsetType = UNSET
    company: str | None | UnsetType = UNSET
    title: str | None | UnsetType = UNSET
    website: str | None | UnsetType = UNSET
    country: str | None | UnsetType = UNSET
    city: str | None | UnsetType = UNSET
    address: str | None | UnsetType = UNSET
    ip_address: str | None | UnsetType = UNSET
    source: str | None | UnsetType = UNSET
    external_id: str | None | UnsetType = UNSET
    industry: str | None | UnsetType = UNSET
    seniority: str | None | UnsetType = UNSET
    department: str | None | UnsetType = UNSET


FIELD_NAMES: tuple[str, ...] = LeadFields.__struct_fields__


def _personal_paths(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{name}" for name in PERSONAL_FIELDS)


class Event(msgspec.Struct, kw_only=True, frozen=True):
    """Base of every ledger event."""

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1
    personal: ClassVar[tuple[str, ...]] = ()


class LeadCreated(Event, frozen=True):
    event_type: ClassVar[str] = "LeadCreated"
    personal: ClassVar[tuple[str, ...]] = _personal_paths("fields")

    lead_id: str
    fields: LeadFields
    stage: str
    owner: str | None = None
    tags: tuple[str, ...] = ()


class LeadFieldsChanged(Event, frozen=True):
    event_type: ClassVar[str] = "LeadFieldsChanged"
    personal: ClassVar[tuple[str, ...]] = _personal_paths("changes")

    changes: LeadFields


class LeadTagged(Event, frozen=True):
    event_type: ClassVar[str] = "LeadTagged"
    tag: str


class LeadUntagged(Event, frozen=True):
    event_type: ClassVar[str] = "LeadUntagged"
    tag: str


class LeadNoteAdded(Event, frozen=True):
    event_type: ClassVar[str] = "LeadNoteAdded"
    personal: ClassVar[tuple[str, ...]] = ("text",)

    note_id: str
    text: str


class LeadStageChanged(Event, frozen=True):
    event_type: ClassVar[str] = "LeadStageChanged"
    stage: str
    previous: str


class LeadOwnerAssigned(Event, frozen=True):
    event_type: ClassVar[str] = "LeadOwnerAssigned"
    owner: str | None
    previous: str | None = None


class LeadArchived(Event, frozen=True):
    event_type: ClassVar[str] = "LeadArchived"


class LeadRestored(Event, frozen=True):
    event_type: ClassVar[str] = "LeadRestored"


class LeadMergedInto(Event, frozen=True):
    event_type: ClassVar[str] = "LeadMergedInto"
    survivor_id: str


class LeadEmailChecked(Event, frozen=True):
    """The result of validating the lead's current email when it was set: the offline checks,
    plus `no-mx` when the workspace's MX lookup found the domain takes no mail."""

    event_type: ClassVar[str] = "LeadEmailChecked"
    status: str  # valid, risky, invalid
    reasons: tuple[str, ...] = ()
    suggestion_domain: str | None = None


class LeadEmailBounced(Event, frozen=True):
    """The email platform reported a bounce; a hard bounce makes the email invalid."""

    event_type: ClassVar[str] = "LeadEmailBounced"
    kind: str  # hard, soft
    detail: str | None = None


class LeadMerged(Event, frozen=True):
    """On the survivor: another lead was merged into it, with the fields it contributed."""

    event_type: ClassVar[str] = "LeadMerged"
    personal: ClassVar[tuple[str, ...]] = _personal_paths("changes")

    absorbed_id: str
    changes: LeadFields
    tags: tuple[str, ...] = ()


class LeadDuplicateSuspected(Event, frozen=True):
    event_type: ClassVar[str] = "LeadDuplicateSuspected"
    other_id: str
    score: float
    matched: tuple[str, ...]
    exact: bool = False


class LeadDuplicateDismissed(Event, frozen=True):
    event_type: ClassVar[str] = "LeadDuplicateDismissed"
    other_id: str


AttributeValue = str | int | float | bool | list[str] | None
"""A custom attribute's value as stored: dates and datetimes as ISO 8601 text, None clears."""


class LeadAttributesChanged(Event, frozen=True):
    """Custom attribute values set or cleared (None), validated against the workspace's
    definitions when written. Values of personal attributes travel in `personal_values`,
    encrypted like the standard personal fields; once the lead's key is destroyed that whole
    map reads as the redaction marker (a string)."""

    event_type: ClassVar[str] = "LeadAttributesChanged"
    personal: ClassVar[tuple[str, ...]] = ("personal_values",)

    values: dict[str, AttributeValue] = {}
    personal_values: dict[str, AttributeValue] | str = {}


class LeadActivityRecorded(Event, frozen=True):
    """A behavioural signal: something the person did, when they did it (`occurred_at`, which
    may be earlier than the event's own recorded time). `kind` is one of ACTIVITY_KINDS;
    `name` names a custom activity."""

    event_type: ClassVar[str] = "LeadActivityRecorded"

    activity_id: str
    kind: str
    occurred_at: datetime
    name: str | None = None
    properties: dict[str, str] = {}


class RuleContribution(msgspec.Struct, frozen=True, kw_only=True):
    """What one rule of a scoring model gave a lead: `points` when it matched (0 otherwise, or
    when it failed: `error` says why)."""

    rule: str
    points: float
    matched: bool
    error: str | None = None


class LeadScored(Event, frozen=True):
    """The lead's score under the workspace's active model, appended by the scoring processor
    only when the total or the decomposition changes. `observed` is the JSON of the values each
    rule saw (rule name -> {reference: value}); they may be personal, so it is encrypted."""

    event_type: ClassVar[str] = "LeadScored"
    personal: ClassVar[tuple[str, ...]] = ("observed",)

    model_id: str
    model_version: int
    score: float
    band: str | None = None
    contributions: tuple[RuleContribution, ...] = ()
    observed: str = "{}"
    cause_event_id: str | None = None
    cause_type: str | None = None
    digest: str = ""
    """A fingerprint of (model, score, band, contributions): equal digests, nothing new."""


class EnrichmentValue(msgspec.Struct, frozen=True, kw_only=True):
    """One enriched value with its provenance."""

    value: AttributeValue
    provider: str
    fetched_at: datetime
    confidence: float = 1.0


class LeadEnriched(Event, frozen=True):
    """What an enrichment provider found. `values` are enrichment facts (firmographics, email
    and phone intelligence), each with its provenance; `fills` are the standard fields the
    enrichment set (only empty ones, unless the workspace lets enrichment overwrite). Personal
    values (a name guessed from the email) travel in `personal_values` and `fills`, encrypted."""

    event_type: ClassVar[str] = "LeadEnriched"
    personal: ClassVar[tuple[str, ...]] = (*_personal_paths("fills"), "personal_values")

    provider: str
    values: dict[str, EnrichmentValue] = {}
    personal_values: dict[str, EnrichmentValue] | str = {}
    fills: LeadFields = LeadFields()
    trigger: str | None = None
    """Why it ran: created, email-changed, website-changed, on-demand."""


class LeadEnrichmentRequested(Event, frozen=True):
    """Someone asked for the lead to be enriched again (POST /v1/leads/{id}/enrich): the
    enrichment processor reacts to it like to a new lead. Empty `providers`: all of them."""

    event_type: ClassVar[str] = "LeadEnrichmentRequested"

    providers: tuple[str, ...] = ()


class LeadAssigned(Event, frozen=True):
    """Routing decided who works the lead: an owner, or a team's member, or a queue; `rule`
    names the assignment rule that decided (None: the fallback)."""

    event_type: ClassVar[str] = "LeadAssigned"

    owner: str | None = None
    team: str | None = None
    queue: str | None = None
    rule_id: str | None = None
    rule_name: str | None = None
    previous_owner: str | None = None
    reason: str = ""


class LeadTaskOpened(Event, frozen=True):
    """A follow-up task on the lead, due per the workspace's SLA."""

    event_type: ClassVar[str] = "LeadTaskOpened"

    task_id: str
    kind: str
    assignee: str | None
    due_at: datetime
    reason: str = ""


class LeadTaskCompleted(Event, frozen=True):
    event_type: ClassVar[str] = "LeadTaskCompleted"

    task_id: str
    outcome: str | None = None


class LeadTaskReassigned(Event, frozen=True):
    """A task moved to another assignee: by a person, or escalated because it went overdue."""

    event_type: ClassVar[str] = "LeadTaskReassigned"

    task_id: str
    assignee: str | None
    previous: str | None = None
    escalated: bool = False
    due_at: datetime | None = None
    reason: str = ""


class LeadErased(Event, frozen=True):
    """Tombstone: the person asked to be forgotten. Carries no personal data by design."""

    event_type: ClassVar[str] = "LeadErased"


LeadEvent = (
    LeadCreated
    | LeadFieldsChanged
    | LeadTagged
    | LeadUntagged
    | LeadNoteAdded
    | LeadStageChanged
    | LeadOwnerAssigned
    | LeadArchived
    | LeadRestored
    | LeadMergedInto
    | LeadEmailChecked
    | LeadEmailBounced
    | LeadMerged
    | LeadDuplicateSuspected
    | LeadDuplicateDismissed
    | LeadAttributesChanged
    | LeadActivityRecorded
    | LeadScored
    | LeadEnriched
    | LeadEnrichmentRequested
    | LeadAssigned
    | LeadTaskOpened
    | LeadTaskCompleted
    | LeadTaskReassigned
    | LeadErased
)

LEAD_EVENT_TYPES: tuple[type[Event], ...] = (
    LeadCreated,
    LeadFieldsChanged,
    LeadTagged,
    LeadUntagged,
    LeadNoteAdded,
    LeadStageChanged,
    LeadOwnerAssigned,
    LeadArchived,
    LeadRestored,
    LeadMergedInto,
    LeadEmailChecked,
    LeadEmailBounced,
    LeadMerged,
    LeadDuplicateSuspected,
    LeadDuplicateDismissed,
    LeadAttributesChanged,
    LeadActivityRecorded,
    LeadScored,
    LeadEnriched,
    LeadEnrichmentRequested,
    LeadAssigned,
    LeadTaskOpened,
    LeadTaskCompleted,
    LeadTaskReassigned,
    LeadErased,
)
