"""Lead writes from HTTP: the commands of one request, applied through the ledger's command path.

A create goes through ingestion (normalize, vocabularies, dedup) and a request that maps to one
command (note, tag, archive, ...) through `LeadCommands.execute`: the paths every interface
shares. A PATCH may change fields, stage, owner and tags at once: those commands are decided one
after another against the same state and appended as one write at one version (keeping the
identity index in step, as LeadCommands does), so a PATCH is all or nothing and its If-Match
guards the whole of it (`LeadCommands.execute_plan`). A merge of two leads goes through
`LeadCommands.merge`. A write answers with the lead as the ledger now has it, its version (the
ETag), the ledger times it was created and last changed, the position of its latest event (the
consistency token), and its data quality against the workspace's settings.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from api.http.problems import ProblemError
from ledger.errors import ConcurrencyError, InvalidValue, LeadNotFound
from ledger.ingest import CREATED, Ingestor, NewLead
from ledger.lead import LeadState
from ledger.lead_commands import CommandResult, LeadCommands
from ledger.quality import QualityScore, score_quality
from ledger.quality_settings import QualityPolicy, QualitySettings, WorkspaceQuality
from ledger.store import EventStore
from schema.commands import LeadCommand
from schema.events import Event
from schema.metadata import EventMetadata
from schema.positions import LogPosition

T = TypeVar("T")
Plan = Callable[[LeadState], Sequence[LeadCommand]]
"""Makes a request's commands from the lead's current state (a PATCH that replaces tags)."""


class WriteResult(msgspec.Struct, frozen=True):
    lead_id: str
    state: LeadState
    events: list[Event]
    position: LogPosition
    """Position of the lead's latest event: reading with it shows at least this state."""
    created_at: datetime
    updated_at: datetime
    merged_into: str | None = None
    """Set when a create was merged into an existing lead (the workspace's duplicate policy):
    `lead_id` and `state` are then the existing lead's."""
    quality: QualityScore | None = None

    @property
    def changed(self) -> bool:
        return bool(self.events)


# The lead's first and latest event, by the (workspace, stream_id, version) unique index.
_STAMP = """
SELECT f.recorded_at, l.recorded_at, l.transaction_id, l.position
FROM events l
JOIN events f ON f.workspace = l.workspace AND f.stream_id = l.stream_id AND f.version = 1
WHERE l.workspace = %s AND l.stream_id = %s AND l.version = %s
"""


CONTENDED_ROUNDS = 5
"""Rounds of LeadCommands' own bounded retries a write without If-Match gets on a busy lead."""


def quality_of(
    state: LeadState, updated_at: datetime, quality: WorkspaceQuality, now: datetime | None = None
) -> QualityScore:
    """The lead's data quality against the workspace's required fields and vocabularies."""
    return score_quality(
        state, updated_at=updated_at, now=now or datetime.now(UTC),
        required=quality.policy.required_fields, vocabularies=quality.vocabularies,
    )


def with_overrides(
    quality: WorkspaceQuality, on_duplicate: str | None, on_fuzzy: str | None
) -> QualityPolicy:
    """The workspace's ingestion policy with this request's overrides."""
    policy = quality.policy
    if on_duplicate is not None:
        policy = msgspec.structs.replace(policy, exact_policy=on_duplicate)
    if on_fuzzy is not None:
        policy = msgspec.structs.replace(policy, fuzzy_policy=on_fuzzy)
    return policy


def _contended() -> ProblemError:
    return ProblemError(
        "conflict", "the lead is being changed by many writers at once; retry",
        headers={"Retry-After": "1"},
    )


class LeadWriter:
    def __init__(
        self,
        store: EventStore,
        commands: LeadCommands,
        ingestor: Ingestor,
        quality: QualitySettings,
        *,
        attempts: int = 25,
    ) -> None:
        self.store = store
        self.commands = commands
        self.ingestor = ingestor
        self.quality = quality
        self.attempts = attempts

    async def create(
        self,
        workspace: str,
        lead: NewLead,
        metadata: EventMetadata,
        *,
        event_ids: Sequence[str] | None = None,
        on_duplicate: str | None = None,
        on_fuzzy: str | None = None,
        ingestor: Ingestor | None = None,
    ) -> WriteResult:
        """A new lead through ingestion, the creation path every interface shares (normalize,
        vocabularies, dedup). `on_duplicate` and `on_fuzzy` override the workspace's exact and
        likely-duplicate policies (reject, merge or flag) for this request; `ingestor` is one
        with other duplicate candidates (a batch's own items)."""
        quality = await self.quality.load(workspace)
        policy = with_overrides(quality, on_duplicate, on_fuzzy)
        # Many creates of one person at once under `merge` all write to the lead they merge
        # into: retried as a whole (the create then meets the same duplicate and merges again).
        outcome = await self._retry_contended(lambda: (ingestor or self.ingestor).create(
            workspace, lead, metadata, quality, policy=policy, event_ids=event_ids
        ))
        result = outcome.result
        stamped = await self._stamped(workspace, result.lead_id, result.state, result.events,
                                      written=result)
        if outcome.outcome == CREATED:
            return stamped
        return msgspec.structs.replace(stamped, merged_into=outcome.merged_into)

    async def email_deliverable(self, workspace: str, email: object) -> bool | None:
        """The MX lookup for an email a write sets (a PATCH's), when the workspace's policy asks
        for one (`Ingestor.email_deliverable`): done before the commands are decided, which do
        no I/O. None: not checked, or the lookup could not tell."""
        if not isinstance(email, str):
            return None
        quality = await self.quality.load(workspace)
        return await self.ingestor.email_deliverable(quality.policy, email)

    async def execute(
        self,
        workspace: str,
        lead_id: str,
        command: LeadCommand,
        metadata: EventMetadata,
        *,
        expected_version: int | None = None,
        event_ids: list[str] | None = None,
    ) -> WriteResult:
        """One command through `LeadCommands.execute`. `expected_version` is the request's
        If-Match: a mismatch is final (412); without it a concurrent writer makes the command
        re-decide against the new state, a bounded number of times."""
        for rounds_left in range(CONTENDED_ROUNDS - 1, -1, -1):
            try:
                result = await self.commands.execute(
                    workspace, lead_id, command, metadata,
                    expected_version=expected_version, event_ids=event_ids,
                )
                break
            except ConcurrencyError as exc:
                if exc.current == 0:
                    raise LeadNotFound("lead not found") from None
                if expected_version is not None:
                    raise
                if not rounds_left:
                    raise _contended() from None
                # LeadCommands retried already; many writers on one lead: back off longer.
                await asyncio.sleep(random.uniform(0.01, 0.05))
        return await self._stamped(workspace, lead_id, result.state, result.events)

    async def apply(
        self,
        workspace: str,
        lead_id: str,
        plan: Plan,
        metadata: EventMetadata,
        *,
        expected_version: int | None = None,
    ) -> WriteResult:
        """The commands `plan` makes of the lead's current state, decided in turn and appended
        as one write at one version (all or nothing), through `LeadCommands.execute_plan`.
        Retried like `execute`."""
        for rounds_left in range(CONTENDED_ROUNDS - 1, -1, -1):
            try:
                result = await self.commands.execute_plan(
                    workspace, lead_id, plan, metadata, expected_version=expected_version
                )
                break
            except ConcurrencyError:
                if expected_version is not None:
                    raise
                if not rounds_left:
                    raise _contended() from None
                await asyncio.sleep(random.uniform(0.01, 0.05))
        if result.state.status is None:
            raise LeadNotFound("lead not found")
        return await self._stamped(workspace, lead_id, result.state, result.events)

    async def merge(
        self, workspace: str, survivor_id: str, merged_id: str, metadata: EventMetadata
    ) -> WriteResult:
        """Merges `merged_id` into `survivor_id` (LeadCommands.merge, atomic); the survivor."""
        if survivor_id == merged_id:
            raise InvalidValue("merged_id", "a lead cannot be merged into itself")
        survivor, _ = await self._retry_contended(
            lambda: self.commands.merge(workspace, survivor_id, merged_id, metadata)
        )
        return await self._stamped(workspace, survivor_id, survivor.state, survivor.events)

    @staticmethod
    async def _retry_contended(write: Callable[[], Awaitable[T]]) -> T:
        """Rounds of LeadCommands' own bounded retries, for a write without If-Match."""
        for rounds_left in range(CONTENDED_ROUNDS - 1, -1, -1):
            try:
                return await write()
            except ConcurrencyError:
                if not rounds_left:
                    raise _contended() from None
                await asyncio.sleep(random.uniform(0.01, 0.05))
        raise AssertionError("unreachable")

    async def current(
        self, workspace: str, lead_id: str, *, expected_version: int | None = None
    ) -> WriteResult:
        """The lead as the ledger has it, for a write that turned out to change nothing."""
        state = await self.commands.load(workspace, lead_id)
        if state.status is None:
            raise LeadNotFound("lead not found")
        if expected_version is not None and expected_version != state.version:
            raise ConcurrencyError(lead_id, expected_version, state.version)
        return await self._stamped(workspace, lead_id, state, [])

    async def _stamped(
        self, workspace: str, lead_id: str, state: LeadState, events: list[Event],
        *, written: CommandResult | None = None,
    ) -> WriteResult:
        """The write's result with its times and ledger position. A lead's first write
        reported them already (all its events, from version 1, recorded at once)."""
        if (written is not None and written.position is not None
                and written.recorded_at is not None and state.version == len(written.events)):
            created_at = updated_at = written.recorded_at
            tx, pos = written.position.transaction_id, written.position.position
        else:
            async with self.store.pool.connection() as conn:
                cur = await conn.execute(_STAMP, (workspace, lead_id, state.version))
                row = await cur.fetchone()
            if row is None:  # pragma: no cover - the events were just read or written
                raise LeadNotFound("lead not found")
            created_at, updated_at, tx, pos = row
        quality = quality_of(state, updated_at, await self.quality.load(workspace))
        return WriteResult(
            lead_id, state, events, LogPosition(tx, pos), created_at, updated_at, quality=quality
        )
