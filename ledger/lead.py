"""The lead's decision logic: `decide(state, command) -> events` and `evolve(state, event)`.

Pure functions over plain data: no I/O, no clock, no randomness (ids come in on the command).
The lead's invariants live here and nowhere else:
  * a lead is created once; every other command needs an existing lead;
  * an erased or merged lead takes no further change (erasure of a merged lead is allowed);
  * an archived lead takes only restore, merge and erase;
  * stages come from the lifecycle vocabulary; tags are short lowercase tokens;
  * a command that changes nothing produces no event;
  * every email set on a lead is checked (offline, plus the MX lookup the shell did when the
    workspace asks for one, given on the command) and the result recorded; a lead whose email
    is invalid (or hard-bounced, or at a domain that takes no mail) is quarantined: visible and
    fixable, out of the active pipeline.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import assert_never

import msgspec
from msgspec import UNSET

from ledger.email_check import INVALID, check_email
from ledger.errors import (
    InvalidValue,
    LeadAlreadyExists,
    LeadArchivedError,
    LeadGone,
    LeadNotFound,
)
from schema.commands import (
    AbsorbLead,
    AddNote,
    ArchiveLead,
    AssignLead,
    AssignOwner,
    ChangeLeadAttributes,
    ChangeLeadFields,
    ChangeStage,
    CompleteTask,
    CreateLead,
    DismissDuplicate,
    EraseLead,
    LeadCommand,
    MarkMergedInto,
    OpenTask,
    ReassignTask,
    RecordActivity,
    RecordEmailBounce,
    RecordEnrichment,
    RecordScore,
    RequestEnrichment,
    RestoreLead,
    SuspectDuplicate,
    TagLead,
    UntagLead,
)
from schema.events import (
    FIELD_NAMES,
    AttributeValue,
    EnrichmentValue,
    Event,
    LeadActivityRecorded,
    LeadArchived,
    LeadAssigned,
    LeadAttributesChanged,
    LeadCreated,
    LeadDuplicateDismissed,
    LeadDuplicateSuspected,
    LeadEmailBounced,
    LeadEmailChecked,
    LeadEnriched,
    LeadEnrichmentRequested,
    LeadErased,
    LeadEvent,
    LeadFields,
    LeadFieldsChanged,
    LeadMerged,
    LeadMergedInto,
    LeadNoteAdded,
    LeadOwnerAssigned,
    LeadRestored,
    LeadScored,
    LeadStageChanged,
    LeadTagged,
    LeadTaskCompleted,
    LeadTaskOpened,
    LeadTaskReassigned,
    LeadUntagged,
)
from schema.vocabularies import ACTIVITY_KINDS, LIFECYCLE_STAGES

TAG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_:.\-]{0,63}$")
MAX_TAGS = 100
MAX_NOTE_LENGTH = 10_000

ACTIVE, ARCHIVED, MERGED, ERASED = "active", "archived", "merged", "erased"


class LeadState(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str | None = None
    version: int = 0
    status: str | None = None  # None until created
    fields: LeadFields = LeadFields()
    stage: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    notes_count: int = 0
    merged_into: str | None = None
    email_status: str | None = None
    email_reasons: tuple[str, ...] = ()
    quarantined: bool = False
    suspected_duplicates: tuple[str, ...] = ()
    merged_from: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = {}
    """Custom attribute values, personal ones included (plaintext here, never in the ledger)."""
    activity_count: int = 0
    last_activity_at: datetime | None = None
    score: float | None = None
    score_band: str | None = None
    score_model: str | None = None
    """`<model id>@<version>` of the model behind `score`."""
    score_digest: str | None = None
    enrichment: dict[str, EnrichmentValue] = {}
    """Enriched facts by name, each with its provenance (personal ones included)."""
    team: str | None = None
    queue: str | None = None
    assigned_by: str | None = None
    """The routing rule behind the current assignment (its id; "fallback" for the fallback)."""
    open_tasks: tuple[str, ...] = ()


INITIAL = LeadState()


def evolve(state: LeadState, event: Event) -> LeadState:
    """Folds one event into the state. Events are facts: evolve never refuses one."""
    version = state.version + 1
    match event:
        case LeadCreated():
            fields = msgspec.structs.replace(
                LeadFields(), **{n: _given(getattr(event.fields, n)) for n in FIELD_NAMES}
            )
            return LeadState(
                lead_id=event.lead_id, version=version, status=ACTIVE, fields=fields,
                stage=event.stage, owner=event.owner, tags=tuple(event.tags),
            )
        case LeadFieldsChanged():
            return msgspec.structs.replace(
                state, version=version, fields=apply_changes(state.fields, event.changes)
            )
        case LeadTagged():
            return msgspec.structs.replace(state, version=version, tags=(*state.tags, event.tag))
        case LeadUntagged():
            tags = tuple(t for t in state.tags if t != event.tag)
            return msgspec.structs.replace(state, version=version, tags=tags)
        case LeadNoteAdded():
            return msgspec.structs.replace(
                state, version=version, notes_count=state.notes_count + 1
            )
        case LeadStageChanged():
            return msgspec.structs.replace(state, version=version, stage=event.stage)
        case LeadOwnerAssigned():
            return msgspec.structs.replace(state, version=version, owner=event.owner)
        case LeadArchived():
            return msgspec.structs.replace(state, version=version, status=ARCHIVED)
        case LeadRestored():
            return msgspec.structs.replace(state, version=version, status=ACTIVE)
        case LeadMergedInto():
            return msgspec.structs.replace(
                state, version=version, status=MERGED, merged_into=event.survivor_id
            )
        case LeadEmailChecked():
            return msgspec.structs.replace(
                state, version=version, email_status=event.status, email_reasons=event.reasons,
                quarantined=event.status == INVALID,
            )
        case LeadEmailBounced():
            if event.kind != "hard":
                return msgspec.structs.replace(state, version=version)
            return msgspec.structs.replace(
                state, version=version, email_status=INVALID,
                email_reasons=("hard-bounce",), quarantined=True,
            )
        case LeadMerged():
            tags = tuple(dict.fromkeys((*state.tags, *event.tags)))
            return msgspec.structs.replace(
                state, version=version, fields=apply_changes(state.fields, event.changes),
                tags=tags, merged_from=(*state.merged_from, event.absorbed_id),
                suspected_duplicates=tuple(
                    d for d in state.suspected_duplicates if d != event.absorbed_id
                ),
            )
        case LeadDuplicateSuspected():
            return msgspec.structs.replace(
                state, version=version,
                suspected_duplicates=(*state.suspected_duplicates, event.other_id),
            )
        case LeadDuplicateDismissed():
            return msgspec.structs.replace(
                state, version=version, suspected_duplicates=tuple(
                    d for d in state.suspected_duplicates if d != event.other_id
                ),
            )
        case LeadAttributesChanged():
            return msgspec.structs.replace(
                state, version=version, attributes=_with_attributes(state.attributes, event),
            )
        case LeadActivityRecorded():
            last = state.last_activity_at
            return msgspec.structs.replace(
                state, version=version, activity_count=state.activity_count + 1,
                last_activity_at=event.occurred_at if last is None else max(last, event.occurred_at),
            )
        case LeadScored():
            return msgspec.structs.replace(
                state, version=version, score=event.score, score_band=event.band,
                score_model=f"{event.model_id}@{event.model_version}", score_digest=event.digest,
            )
        case LeadEnriched():
            personal = event.personal_values if isinstance(event.personal_values, dict) else {}
            return msgspec.structs.replace(
                state, version=version, fields=apply_changes(state.fields, event.fills),
                enrichment={**state.enrichment, **event.values, **personal},
            )
        case LeadEnrichmentRequested():
            return msgspec.structs.replace(state, version=version)
        case LeadAssigned():
            return msgspec.structs.replace(
                state, version=version, owner=event.owner, team=event.team, queue=event.queue,
                assigned_by=event.rule_id or "fallback",
            )
        case LeadTaskOpened():
            return msgspec.structs.replace(
                state, version=version, open_tasks=(*state.open_tasks, event.task_id)
            )
        case LeadTaskCompleted():
            return msgspec.structs.replace(
                state, version=version,
                open_tasks=tuple(t for t in state.open_tasks if t != event.task_id),
            )
        case LeadTaskReassigned():
            return msgspec.structs.replace(state, version=version)
        case LeadErased():
            return LeadState(lead_id=state.lead_id, version=version, status=ERASED)
        case _:
            raise TypeError(f"not a lead event: {type(event).__name__}")


def fold(events: list[Event], state: LeadState = INITIAL) -> LeadState:
    for event in events:
        state = evolve(state, event)
    return state


def decide(state: LeadState, command: LeadCommand) -> list[LeadEvent]:
    """The events a command produces on this lead, or a DomainError. Never any I/O."""
    if isinstance(command, CreateLead):
        return _create(state, command)
    _require_live(state, command)
    match command:
        case ChangeLeadFields():
            changes = _diff(state.fields, command.changes)
            if changes == LeadFields():
                return []
            return [LeadFieldsChanged(changes=changes),
                    *_email_checked(changes.email, command.email_deliverable)]
        case TagLead():
            tag = _valid_tag(command.tag)
            if tag in state.tags:
                return []
            if len(state.tags) >= MAX_TAGS:
                raise InvalidValue("tags", f"a lead has at most {MAX_TAGS} tags")
            return [LeadTagged(tag=tag)]
        case UntagLead():
            return [LeadUntagged(tag=command.tag)] if command.tag in state.tags else []
        case AddNote():
            return [LeadNoteAdded(note_id=command.note_id, text=_valid_note(command.text))]
        case ChangeStage():
            stage = _valid_stage(command.stage)
            if stage == state.stage:
                return []
            return [LeadStageChanged(stage=stage, previous=state.stage or "")]
        case AssignOwner():
            if command.owner == state.owner:
                return []
            return [LeadOwnerAssigned(owner=command.owner, previous=state.owner)]
        case ArchiveLead():
            return [LeadArchived()] if state.status == ACTIVE else []
        case RestoreLead():
            return [LeadRestored()] if state.status == ARCHIVED else []
        case MarkMergedInto():
            if command.survivor_id == state.lead_id:
                raise InvalidValue("survivor_id", "a lead cannot be merged into itself")
            return [LeadMergedInto(survivor_id=command.survivor_id)]
        case EraseLead():
            return [LeadErased()]
        case RecordEmailBounce():
            if command.kind not in ("hard", "soft"):
                raise InvalidValue("kind", "a bounce is 'hard' or 'soft'")
            if not isinstance(state.fields.email, str):
                raise InvalidValue("email", "the lead has no email to bounce")
            return [LeadEmailBounced(kind=command.kind, detail=command.detail)]
        case AbsorbLead():
            return _absorb(state, command)
        case SuspectDuplicate():
            if command.other_id == state.lead_id or command.other_id in state.suspected_duplicates:
                return []
            return [LeadDuplicateSuspected(
                other_id=command.other_id, score=command.score, matched=command.matched,
                exact=command.exact,
            )]
        case DismissDuplicate():
            if command.other_id not in state.suspected_duplicates:
                return []
            return [LeadDuplicateDismissed(other_id=command.other_id)]
        case ChangeLeadAttributes():
            return _attributes_changed(state.attributes, command.values, command.personal_values)
        case RecordActivity():
            return [_activity(command)]
        case RecordScore():
            if command.digest and command.digest == state.score_digest:
                return []
            return [LeadScored(**msgspec.structs.asdict(command))]
        case RecordEnrichment():
            return _enriched(state, command)
        case RequestEnrichment():
            return [LeadEnrichmentRequested(providers=tuple(command.providers))]
        case AssignLead():
            same = (command.owner, command.team, command.queue) == (
                state.owner, state.team, state.queue)
            if same:
                return []
            return [LeadAssigned(
                owner=command.owner, team=command.team, queue=command.queue,
                rule_id=command.rule_id, rule_name=command.rule_name,
                previous_owner=state.owner, reason=command.reason,
            )]
        case OpenTask():
            if command.task_id in state.open_tasks:
                return []
            return [LeadTaskOpened(
                task_id=command.task_id, kind=command.kind, assignee=command.assignee,
                due_at=command.due_at, reason=command.reason,
            )]
        case CompleteTask():
            if command.task_id not in state.open_tasks:
                return []  # already completed (a retry), or never opened: nothing to do
            return [LeadTaskCompleted(task_id=command.task_id, outcome=command.outcome)]
        case ReassignTask():
            if command.task_id not in state.open_tasks:
                raise InvalidValue("task_id", f"task {command.task_id} is not open")
            return [LeadTaskReassigned(**msgspec.structs.asdict(command))]
        case _:
            assert_never(command)


def _create(state: LeadState, command: CreateLead) -> list[LeadEvent]:
    if state.status is not None:
        raise LeadAlreadyExists(f"lead {command.lead_id} already exists")
    tags = tuple(dict.fromkeys(_valid_tag(t) for t in command.tags))
    if len(tags) > MAX_TAGS:
        raise InvalidValue("tags", f"a lead has at most {MAX_TAGS} tags")
    fields = msgspec.structs.replace(
        LeadFields(), **{n: v for n in FIELD_NAMES if (v := _given(getattr(command.fields, n)))}
    )
    created = LeadCreated(
        lead_id=command.lead_id, fields=fields, stage=_valid_stage(command.stage),
        owner=command.owner, tags=tags,
    )
    attributes = _attributes_changed({}, command.attributes, command.personal_attributes)
    return [created, *_email_checked(fields.email, command.email_deliverable), *attributes]


def _attributes_changed(
    current: dict[str, AttributeValue],
    values: dict[str, AttributeValue],
    personal_values: dict[str, AttributeValue],
) -> list[LeadEvent]:
    """Only the attributes whose value actually changes; clearing an absent one is no change."""
    changed = {k: v for k, v in values.items() if current.get(k) != v}
    personal = {k: v for k, v in personal_values.items() if current.get(k) != v}
    if not changed and not personal:
        return []
    return [LeadAttributesChanged(values=changed, personal_values=personal)]


def _with_attributes(
    current: dict[str, AttributeValue], event: LeadAttributesChanged
) -> dict[str, AttributeValue]:
    merged = dict(current)
    # A string is the redaction marker: the lead's key is gone, and its personal values with it.
    personal = event.personal_values if isinstance(event.personal_values, dict) else {}
    for name, value in (*event.values.items(), *personal.items()):
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def _enriched(state: LeadState, command: RecordEnrichment) -> list[LeadEvent]:
    """Only values that are new or changed; fills only where the lead has no value (a value a
    person entered wins) unless the workspace lets enrichment overwrite."""
    def changed(values: dict[str, EnrichmentValue]) -> dict[str, EnrichmentValue]:
        return {
            k: v for k, v in values.items()
            if (old := state.enrichment.get(k)) is None or old.value != v.value
            or old.provider != v.provider
        }

    values, personal = changed(command.values), changed(command.personal_values)
    fills = {
        name: value for name in FIELD_NAMES
        if (value := _given(getattr(command.fills, name))) is not None
        and (command.overwrite or _given(getattr(state.fields, name)) is None)
        and value != _given(getattr(state.fields, name))
    }
    if not values and not personal and not fills:
        return []
    return [LeadEnriched(
        provider=command.provider, values=values, personal_values=personal,
        fills=LeadFields(**fills), trigger=command.trigger,
    )]


def _activity(command: RecordActivity) -> LeadActivityRecorded:
    if command.kind not in ACTIVITY_KINDS:
        raise InvalidValue("kind", f"{command.kind!r} is not one of {', '.join(ACTIVITY_KINDS)}")
    if command.kind == "custom" and not (command.name or "").strip():
        raise InvalidValue("name", "a custom activity needs a name")
    if command.occurred_at.tzinfo is None:
        raise InvalidValue("occurred_at", "occurred_at needs a time zone (e.g. Z or +02:00)")
    return LeadActivityRecorded(
        activity_id=command.activity_id, kind=command.kind, occurred_at=command.occurred_at,
        name=command.name, properties=dict(command.properties),
    )


def _email_checked(email: object, deliverable: bool | None = None) -> list[LeadEvent]:
    """Every email set on a lead gets its check recorded (clearing it records nothing).
    `deliverable` is the shell's MX lookup: False makes the email invalid (`no-mx`); None (not
    checked, or the lookup failed) adds nothing."""
    if not isinstance(email, str):
        return []
    result = check_email(email)
    status, reasons = result.status, result.reasons
    if deliverable is False:
        status, reasons = INVALID, (*reasons, "no-mx")
    suggestion = result.suggestion.rsplit("@", 1)[1] if result.suggestion else None
    return [LeadEmailChecked(status=status, reasons=reasons, suggestion_domain=suggestion)]


def _absorb(state: LeadState, command: AbsorbLead) -> list[LeadEvent]:
    if command.absorbed_id == state.lead_id:
        raise InvalidValue("absorbed_id", "a lead cannot be merged into itself")
    if command.absorbed_id in state.merged_from:
        return []
    missing = {
        n: v for n in FIELD_NAMES
        if _given(getattr(state.fields, n)) is None
        and (v := _given(getattr(command.absorbed_fields, n))) is not None
    }
    tags = tuple(t for t in command.absorbed_tags if t not in state.tags)
    events: list[LeadEvent] = [
        LeadMerged(absorbed_id=command.absorbed_id, changes=LeadFields(**missing), tags=tags)
    ]
    return events + _email_checked(missing.get("email"))


def _require_live(state: LeadState, command: LeadCommand) -> None:
    if state.status is None:
        raise LeadNotFound("lead not found")
    if state.status == ERASED:
        raise LeadGone(f"lead {state.lead_id} was erased")
    if state.status == MERGED and not isinstance(command, EraseLead):
        raise LeadGone(f"lead {state.lead_id} was merged into {state.merged_into}")
    # Facts about the person (bounces, activities) and the processors' scores still arrive
    # for an archived lead; what people edit waits for a restore.
    allowed_when_archived = (
        RestoreLead, ArchiveLead, MarkMergedInto, EraseLead, RecordEmailBounce, DismissDuplicate,
        RecordActivity, RecordScore, RecordEnrichment, CompleteTask,
    )
    if state.status == ARCHIVED and not isinstance(command, allowed_when_archived):
        raise LeadArchivedError(f"lead {state.lead_id} is archived; restore it first")


def apply_changes(fields: LeadFields, changes: LeadFields) -> LeadFields:
    given = {n: v for n in FIELD_NAMES if (v := getattr(changes, n)) is not UNSET}
    return msgspec.structs.replace(fields, **given) if given else fields


def _diff(fields: LeadFields, changes: LeadFields) -> LeadFields:
    """Only the fields whose value actually changes."""
    changed = {}
    for name in FIELD_NAMES:
        new = getattr(changes, name)
        if new is UNSET:
            continue
        if new == "":
            new = None
        if new != _given(getattr(fields, name)):
            changed[name] = new
    return LeadFields(**changed)


def _given(value: object) -> object:
    return None if value is UNSET or value == "" else value


def _valid_stage(stage: str) -> str:
    if stage not in LIFECYCLE_STAGES:
        raise InvalidValue("stage", f"{stage!r} is not one of {', '.join(LIFECYCLE_STAGES)}")
    return stage


def _valid_tag(tag: str) -> str:
    if not TAG_PATTERN.match(tag):
        raise InvalidValue(
            "tag", f"{tag!r} must be 1-64 lowercase letters, digits or _:.- (starting alnum)"
        )
    return tag


def _valid_note(text: str) -> str:
    if not text.strip():
        raise InvalidValue("text", "a note cannot be empty")
    if len(text) > MAX_NOTE_LENGTH:
        raise InvalidValue("text", f"a note is at most {MAX_NOTE_LENGTH} characters")
    return text
