"""Ingestion: the one creation path shared by single creates, batches, imports, MCP and
processors. Normalize → validate → deduplicate → create, merge or flag.

When the workspace checks MX (`QualityPolicy.email_mx_check`), the email's domain is looked up
here, before the command is decided (the decider does no I/O), and the outcome rides on the
command (`email_deliverable`); a lookup that fails gives None and never fails the create.

Exact duplicates are caught by the identity index inside the append's transaction (so they hold
under concurrency); likely duplicates are found by fuzzy matching against the read model (best
effort: the read model may trail the ledger by a moment). Each has its own policy.

Given a connection (`conn=`), every read and append runs inside the caller's transaction: an
atomic batch creates its leads through here and commits them together, deduplicated against each
other (the identity keys its earlier items claimed are visible to its later ones).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import msgspec
import psycopg
from msgspec import UNSET

from ledger.email_check import INVALID, check_email
from ledger.email_dns import MxChecker
from ledger.errors import DuplicateLead
from ledger.fuzzy import Match, Person, likely_duplicates
from ledger.lead_commands import FLAG, RAISE, CommandResult, LeadCommands
from ledger.lead_input import normalize_lead
from ledger.quality_settings import QualityPolicy, WorkspaceQuality
from schema.commands import (
    ChangeLeadAttributes,
    ChangeLeadFields,
    CreateLead,
    LeadCommand,
    SuspectDuplicate,
    TagLead,
)
from schema.events import FIELD_NAMES, AttributeValue, LeadFields
from schema.metadata import EventMetadata
from schema.vocabularies import DEFAULT_STAGE

CandidateFinder = Callable[[str, Person], Awaitable[list[Person]]]
CREATED, MERGED = "created", "merged"


class NewLead(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    fields: LeadFields
    full_name: str | None = None
    stage: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()
    attributes: dict[str, AttributeValue] = {}
    """Custom attribute values, validated against the workspace's definitions
    (ledger/attributes.py); personal ones apart, to be encrypted in the ledger."""
    personal_attributes: dict[str, AttributeValue] = {}


class IngestResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: str  # created, merged
    result: CommandResult
    merged_into: str | None = None
    duplicates: tuple[Match, ...] = ()
    unmapped: tuple[str, ...] = ()


class Ingestor:
    def __init__(
        self, commands: LeadCommands, find_candidates: CandidateFinder, *, fuzzy: bool = True,
        mx: MxChecker | None = None,
    ) -> None:
        self.commands = commands
        self.find_candidates = find_candidates
        self.fuzzy = fuzzy
        """False only with dedup off (api/settings.py): no likely-duplicate lookups."""
        self.mx = mx
        """The MX checker, for workspaces that turn the check on; None: never checked."""

    async def email_deliverable(self, policy: QualityPolicy, email: object) -> bool | None:
        """The MX lookup's outcome for a command's `email_deliverable`, when `policy` asks for
        one; None when it does not, or the lookup could not tell."""
        if not policy.email_mx_check or self.mx is None or not isinstance(email, str):
            return None
        if check_email(email).status == INVALID:
            return None  # invalid offline already (and so quarantined): spare the lookup
        return await self.mx.deliverable(email)

    async def create(
        self,
        workspace: str,
        lead: NewLead,
        metadata: EventMetadata,
        quality: WorkspaceQuality,
        *,
        policy: QualityPolicy | None = None,
        event_ids: Sequence[str] | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> IngestResult:
        """`policy` overrides the workspace's for this request (e.g. ?on_duplicate=merge);
        `conn` runs the whole ingestion inside the caller's transaction."""
        policy = policy or quality.policy
        normalized = normalize_lead(
            lead.fields, stage=lead.stage, full_name=lead.full_name,
            vocabularies=quality.vocabularies, on_unknown=policy.on_unknown,
        )
        command = CreateLead(
            lead_id=lead.lead_id, fields=normalized.fields,
            stage=normalized.stage or DEFAULT_STAGE, owner=lead.owner, tags=lead.tags,
            attributes=lead.attributes, personal_attributes=lead.personal_attributes,
            email_deliverable=await self.email_deliverable(policy, normalized.fields.email),
        )
        matches = await self._fuzzy(workspace, command, policy)
        if matches and policy.fuzzy_policy == "reject":
            best = matches[0]
            raise DuplicateLead(best.lead_id, best.matched, exact=False, score=best.score)
        if matches and policy.fuzzy_policy == "merge":
            return await self._merge_into(workspace, matches[0].lead_id, command, metadata,
                                          normalized.unmapped, conn)
        # The lead and what it likely duplicates in one write: one version, one statement.
        plan: list[LeadCommand] = [command, *(
            SuspectDuplicate(other_id=m.lead_id, score=m.score, matched=m.matched)
            for m in matches
        )]
        try:
            result = await self.commands.execute_plan(
                workspace, lead.lead_id, lambda _state: plan, metadata, event_ids=event_ids,
                on_duplicate=FLAG if policy.exact_policy == "flag" else RAISE, conn=conn,
            )
        except DuplicateLead as duplicate:
            if policy.exact_policy != "merge":
                raise
            return await self._merge_into(workspace, duplicate.existing_id, command, metadata,
                                          normalized.unmapped, conn)
        return IngestResult(outcome=CREATED, result=result, duplicates=tuple(matches),
                            unmapped=normalized.unmapped)

    async def _fuzzy(self, workspace: str, command: CreateLead,
                     policy: QualityPolicy) -> list[Match]:
        f = command.fields
        person = Person(
            lead_id=command.lead_id, first_name=_str(f.first_name), last_name=_str(f.last_name),
            email=_str(f.email), phone=_str(f.phone), company=_str(f.company),
        )
        if not self.fuzzy or not (person.first_name or person.last_name):
            return []
        candidates = await self.find_candidates(workspace, person)
        return likely_duplicates(person, candidates, policy.fuzzy_threshold)

    async def _merge_into(self, workspace: str, existing_id: str, command: CreateLead,
                          metadata: EventMetadata, unmapped: tuple[str, ...],
                          conn: psycopg.AsyncConnection | None = None) -> IngestResult:
        """The submission updates the existing lead with its non-empty fields, tags and
        attributes."""
        given = {n: v for n in FIELD_NAMES if (v := getattr(command.fields, n)) not in (UNSET, None)}
        result = await self.commands.execute(
            workspace, existing_id, ChangeLeadFields(
                changes=LeadFields(**given), email_deliverable=command.email_deliverable),
            metadata, conn=conn,
        )
        for tag in command.tags:
            tagged = await self.commands.execute(workspace, existing_id, TagLead(tag=tag), metadata,
                                                 conn=conn)
            result = tagged if tagged.events else result
        if command.attributes or command.personal_attributes:
            changed = await self.commands.execute(
                workspace, existing_id, ChangeLeadAttributes(
                    values=command.attributes, personal_values=command.personal_attributes),
                metadata, conn=conn,
            )
            result = changed if changed.events else result
        return IngestResult(outcome=MERGED, result=result, merged_into=existing_id,
                            unmapped=unmapped)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
