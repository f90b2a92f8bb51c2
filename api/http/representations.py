"""What the HTTP API accepts and returns: msgspec Structs, documented field by field.

The lead's descriptive fields follow `schema.events.FIELD_NAMES`, so a field added to the
contract appears in the API without an edit here (with default constraints until it is given
its own below). Every request Struct rejects unknown fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from ledger.lead import MAX_NOTE_LENGTH, MAX_TAGS
from schema.events import FIELD_NAMES, PERSONAL_FIELDS
from schema.vocabularies import CHANNELS, LEAD_SOURCES, LIFECYCLE_STAGES

SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
"""No control characters (tabs and newlines included)."""
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
"""Tabs and newlines allowed; other control characters not."""

MAX_PAGE = 1000
MAX_BATCH = 1000

_FIELD_SPECS: dict[str, tuple[int, str, str, str]] = {
    # name: (max length, pattern, description, example)
    "first_name": (200, SINGLE_LINE, "Given name.", "Ada"),
    "last_name": (200, SINGLE_LINE, "Family name.", "Lovelace"),
    "email": (320, SINGLE_LINE, "Email address.", "ada@analytical.example"),
    "phone": (64, SINGLE_LINE, "Phone number, preferably E.164.", "+442071838750"),
    "company": (300, SINGLE_LINE, "Company name.", "Analytical Engines Ltd"),
    "title": (300, SINGLE_LINE, "Job title.", "Head of Engineering"),
    "website": (2048, SINGLE_LINE, "Company website.", "https://analytical.example"),
    "country": (64, SINGLE_LINE, "Country, preferably ISO 3166-1 alpha-2.", "GB"),
    "city": (200, SINGLE_LINE, "City.", "London"),
    "address": (1000, MULTI_LINE, "Postal address.", "12 St James's Square"),
    "ip_address": (45, r"^[0-9A-Fa-f:.]*$", "IP address the lead came from.", "203.0.113.7"),
    "source": (
        64, SINGLE_LINE, "Where the lead came from: " + ", ".join(LEAD_SOURCES) + ".", "web_form"
    ),
    "external_id": (256, SINGLE_LINE, "The lead's id in the source system.", "crm-00042"),
}
_DEFAULT_SPEC = (300, SINGLE_LINE, "", "")


def _describe(name: str) -> str:
    description = _FIELD_SPECS.get(name, _DEFAULT_SPEC)[2]
    return description or name.replace("_", " ").capitalize() + "."


def _field_type(name: str) -> Any:
    max_length, pattern, description, example = _FIELD_SPECS.get(name, _DEFAULT_SPEC)
    if name in PERSONAL_FIELDS:
        description += " Personal data: encrypted in the ledger, erased on request."
    meta = Meta(
        max_length=max_length,
        pattern=pattern,
        description=description.strip() or name.replace("_", " ").capitalize() + ".",
        examples=[example] if example else None,
    )
    return Annotated[str, meta]


Stage = Annotated[
    str,
    Meta(min_length=1, max_length=64, pattern=SINGLE_LINE,
         description="Lifecycle stage: " + ", ".join(LIFECYCLE_STAGES) + " (on create, the "
         "workspace's synonyms are accepted too).", examples=["mql"]),
]
Owner = Annotated[
    str,
    Meta(min_length=1, max_length=200, pattern=SINGLE_LINE,
         description="Who owns the lead (a user id or email of the revenue team).",
         examples=["owner@seller.example"]),
]
Tag = Annotated[
    str,
    Meta(pattern=r"^[a-z0-9][a-z0-9_:.\-]{0,63}$",
         description="1-64 lowercase letters, digits or `_:.-`, starting with a letter or digit.",
         examples=["webinar-2025"]),
]
Tags = Annotated[list[Tag], Meta(max_length=MAX_TAGS, description="Tags, at most 100.")]
Reason = Annotated[
    str,
    Meta(max_length=1000, pattern=MULTI_LINE,
         description="Why this change is made; recorded in the lead's history. The X-Reason "
         "header does the same on any write.",
         examples=["Requested a demo at the webinar"]),
]
NoteText = Annotated[
    str,
    Meta(min_length=1, max_length=MAX_NOTE_LENGTH, pattern=MULTI_LINE,
         description="The note. Personal data: encrypted in the ledger.",
         examples=["Called: interested in the enterprise plan, follow up in March."]),
]


Attributes = Annotated[
    dict[Annotated[str, Meta(max_length=63)], Any],
    Meta(max_length=200, description="Custom attribute values by name, checked against the "
         "workspace's definitions (GET /v1/attributes); a problem is 422 naming "
         "`attributes.<name>`. On PATCH only the attributes given change, and null clears one.",
         examples=[{"plan": "pro", "seats": 25}]),
]


def _lead_create() -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = [
        (name, _field_type(name) | None, None) for name in FIELD_NAMES
    ]
    fields += [("stage", Stage, "lead"), ("owner", Owner | None, None),
               ("tags", Tags, msgspec.field(default_factory=list)), ("reason", Reason | None, None),
               ("attributes", Attributes, msgspec.field(default_factory=dict))]
    cls = msgspec.defstruct(
        "LeadCreate", fields, kw_only=True, frozen=True, forbid_unknown_fields=True,
        module=__name__,
    )
    cls.__doc__ = "A new lead. Every field is optional; `stage` defaults to `lead`."
    return cls


def _lead_patch() -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = [
        (name, _field_type(name) | None | UnsetType, UNSET) for name in FIELD_NAMES
    ]
    fields += [("stage", Stage | UnsetType, UNSET), ("owner", Owner | None | UnsetType, UNSET),
               ("tags", Tags | UnsetType, UNSET), ("reason", Reason | None, None),
               ("attributes", Attributes | UnsetType, UNSET)]
    cls = msgspec.defstruct(
        "LeadPatch", fields, kw_only=True, frozen=True, forbid_unknown_fields=True,
        module=__name__,
    )
    cls.__doc__ = (
        "Changes to a lead. An absent field is left as it is; `null` clears it. `tags`, when "
        "given, replaces the lead's tags. All changes apply together, as one write."
    )
    return cls


LeadCreate = _lead_create()
LeadPatch = _lead_patch()


class Quality(msgspec.Struct, frozen=True, kw_only=True):
    """The lead's data quality against the workspace's required fields and vocabularies, now.
    Score = 40 × completeness + 35 × validity + 15 × consistency + 10 × freshness."""

    score: Annotated[int, Meta(ge=0, le=100, description="0–100.", examples=[87])]
    completeness: Annotated[float, Meta(ge=0, le=1, description="Share of the workspace's "
                                        "required fields that are present.")]
    validity: Annotated[float, Meta(ge=0, le=1, description="Email status, a parseable "
                                    "phone, values inside their vocabularies.")]
    consistency: Annotated[float, Meta(ge=0, le=1, description="Phone country matches the "
                                       "lead's country; a business email's domain matches the "
                                       "website.")]
    freshness: Annotated[float, Meta(ge=0, le=1, description="1 for a year after the last "
                                     "change, then falling to 0 over two more.")]
    problems: Annotated[list[str], Meta(description="The rules the lead fails (see GET "
                                        "/v1/quality).", examples=[["missing:company"]])]


def _lead() -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = [
        ("id", Annotated[str, Meta(description="The lead's id.")], msgspec.NODEFAULT),
        ("version", Annotated[int, Meta(ge=1, description="The lead's version; its ETag.")],
         msgspec.NODEFAULT),
        ("status", Annotated[Literal["active", "archived", "merged"],
                             Meta(description="Archived leads take no change until restored.")],
         msgspec.NODEFAULT),
    ]
    fields += [(name, Annotated[str | None, Meta(description=_describe(name))], None)
               for name in FIELD_NAMES]
    fields += [
        ("stage", Annotated[str, Meta(description="Lifecycle stage.")], msgspec.NODEFAULT),
        ("owner", Annotated[str | None, Meta(description="Who owns the lead.")], None),
        ("tags", Annotated[list[str], Meta(description="Tags.")],
         msgspec.field(default_factory=list)),
        ("notes_count", Annotated[int, Meta(description="How many notes the lead has.")], 0),
        ("merged_into", Annotated[str | None, Meta(
            description="The lead this one was merged into (status merged). On a create "
            "answered 200 (the `merge` duplicate policy): the existing lead the submission was "
            "merged into, which is the lead returned.")], None),
        ("merged_from", Annotated[list[str], Meta(description="Leads merged into this one.")],
         msgspec.field(default_factory=list)),
        ("email_status", Annotated[Literal["valid", "risky", "invalid"] | None, Meta(
            description="The email's check: `invalid` (bad syntax, disposable or typo domain, "
            "a domain that takes no mail, hard bounce) quarantines the lead; `risky` (a role "
            "account) is flagged.")], None),
        ("email_reasons", Annotated[list[str], Meta(
            description="Why, e.g. `role-account`, `free-mail`, `typo-domain`, `no-mx`, "
            "`hard-bounce`.")],
         msgspec.field(default_factory=list)),
        ("quarantined", Annotated[bool, Meta(
            description="Out of the active pipeline until its email is fixed.")], False),
        ("suspected_duplicates", Annotated[list[str], Meta(
            description="Leads this one is suspected to duplicate (see /v1/duplicates).")],
         msgspec.field(default_factory=list)),
        ("quality", Annotated[Quality | None, Meta(description="Data quality.")], None),
        ("attributes", Annotated[dict[str, Any], Meta(
            description="Custom attribute values (see /v1/attributes).")],
         msgspec.field(default_factory=dict)),
        ("score", Annotated[float | None, Meta(
            description="The lead's score under the workspace's active model (see GET "
            "/v1/leads/{id}/score); null until scored.")], None),
        ("score_band", Annotated[str | None, Meta(description="The score's band, e.g. A.")],
         None),
        ("score_model", Annotated[str | None, Meta(
            description="`<model id>@<version>` of the model behind the score.")], None),
        ("activity_count", Annotated[int, Meta(description="Activities recorded.")], 0),
        ("enrichment", Annotated[dict[str, Any], Meta(
            description="Enriched facts by name: {value, provider, fetched_at, confidence}.")],
         msgspec.field(default_factory=dict)),
        ("team", Annotated[str | None, Meta(description="The team routing gave the lead.")],
         None),
        ("queue", Annotated[str | None, Meta(description="The queue routing put the lead in.")],
         None),
        ("assigned_by", Annotated[str | None, Meta(
            description="The routing rule behind the current assignment.")], None),
        ("open_tasks", Annotated[list[str], Meta(description="Open follow-up task ids.")],
         msgspec.field(default_factory=list)),
        ("last_activity_at", Annotated[datetime | None, Meta(
            description="When the latest activity occurred.")], None),
        ("created_at", Annotated[datetime, Meta(description="When the ledger recorded the "
                                                "lead's creation.")], msgspec.NODEFAULT),
        ("updated_at", Annotated[datetime, Meta(description="When the ledger recorded the "
                                                "lead's latest change.")], msgspec.NODEFAULT),
    ]
    # Required (no-default) fields must come first for defstruct: reorder keeping doc order.
    required = [f for f in fields if f[2] is msgspec.NODEFAULT]
    optional = [f for f in fields if f[2] is not msgspec.NODEFAULT]
    cls = msgspec.defstruct(
        "Lead", [(n, t) for n, t, _ in required] + optional, kw_only=True, frozen=True,
        module=__name__,
    )
    cls.__doc__ = "A lead as the API shows it."
    return cls


Lead = _lead()


class LeadPage(msgspec.Struct, frozen=True):
    """One page of leads. Pass `next_cursor` as `cursor` for the next page; null at the end."""

    data: list[Lead]  # type: ignore[valid-type]
    next_cursor: str | None = None


class BatchRequest(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Up to 1,000 leads. Each item is validated on its own (documented as LeadCreate)."""

    leads: Annotated[list[Any], Meta(min_length=1, max_length=MAX_BATCH)]
    reason: Reason | None = None


class BatchItemError(msgspec.Struct, frozen=True, omit_defaults=True):
    type: str
    title: str
    detail: str
    errors: list[dict[str, Any]] | None = None
    existing_id: str | None = None
    """For a duplicate: the lead that already has this identity (or the likely match)."""
    matched: list[str] | None = None
    exact: bool | None = None
    score: float | None = None


class BatchItemResult(msgspec.Struct, frozen=True, omit_defaults=True):
    index: int
    status: Literal["created", "merged", "rejected"]
    lead: Lead | None = None  # type: ignore[valid-type]
    error: BatchItemError | None = None


class BatchResponse(msgspec.Struct, frozen=True, kw_only=True):
    """A result per item, by index: `created`, `merged` (into an existing lead, by the
    duplicate policy) or `rejected` with the reason."""

    atomic: bool
    created: int
    rejected: int
    results: list[BatchItemResult]
    merged: int = 0


class NoteCreate(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    text: NoteText
    reason: Reason | None = None


class Author(msgspec.Struct, frozen=True):
    key_id: str
    role: str


class Note(msgspec.Struct, frozen=True):
    id: str
    text: str | None
    """null when the lead's personal data was erased."""
    author: Author
    created_at: datetime
    version: int
    """The lead version the note was added at."""


class NotePage(msgspec.Struct, frozen=True):
    data: list[Note]
    next_cursor: str | None = None


class FieldChange(msgspec.Struct, frozen=True):
    field: str
    before: Any
    after: Any


class HistoryEntry(msgspec.Struct, frozen=True):
    version: int
    event_id: str
    type: str
    recorded_at: datetime
    actor: Author
    source: Annotated[str, Meta(description="Through what: " + ", ".join(CHANNELS) + ".")]
    reason: str | None
    request_id: str | None
    correlation_id: str | None
    position: Annotated[str, Meta(description="The event's ledger position (a consistency "
                                              "token).")]
    changes: list[FieldChange]
    redacted: bool = False


class HistoryPage(msgspec.Struct, frozen=True):
    data: list[HistoryEntry]
    next_cursor: str | None = None


class ChangeEvent(msgspec.Struct, frozen=True):
    id: str
    type: str
    schema_version: int
    lead_id: str
    version: int
    position: str
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]
    redacted: bool = False


class EventPage(msgspec.Struct, frozen=True):
    """Events in ledger order. `next_cursor` is never null: poll it for newer events."""

    data: list[ChangeEvent]
    next_cursor: str


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok"]


class Check(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    latency_ms: float | None = None
    detail: str | None = None
    lag_events: int | None = None
    position: str | None = None


class Ready(msgspec.Struct, frozen=True):
    status: Literal["ready", "not_ready"]
    checks: dict[str, Check]


class WorkspaceSettings(msgspec.Struct, kw_only=True, frozen=True):
    workspace: str
    require_if_match: bool


class WorkspaceSettingsPatch(
    msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True
):
    require_if_match: bool | UnsetType = UNSET


# -- building representations --------------------------------------------------------------


def lead_from_values(values: dict[str, Any]) -> Any:
    """A Lead from a mapping of its attributes (read-model columns or write-side state);
    keys that are not Lead fields are ignored, so a read model with more columns is fine."""
    return Lead(**{k: values[k] for k in _LEAD_FIELDS if k in values})


_LEAD_FIELDS: tuple[str, ...] = Lead.__struct_fields__
