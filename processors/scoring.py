"""The scoring processor: keeps every lead's score current under its workspace's active model.

It runs as a projection (`projections.runner.Projection`, name "scoring") without tables of its
own, so it gets the runner's machinery for free: ledger catch-up, the NATS fast path, and the
exactly-once checkpoint. Its output is ledger events: for each lead touched by an event that can
change its score, it reads the lead's stream on the runner's connection, folds the facts up to
that event (processors/lead_facts.py), evaluates the active model at the event's own recorded
time (deterministic: a replay computes the same score), and executes `RecordScore` through
`LeadCommands` on the same connection. The score and the checkpoint commit together: a crash
before the commit scores the batch again, after it never. The decider appends `LeadScored` only
when the digest of (model, total, band, contributions) differs from the lead's last one.

Which events cause a score: every lead event but
- `LeadScored` (its own output: scoring it again would loop),
- `LeadDuplicateSuspected`, `LeadDuplicateDismissed` (no scoring variable reads duplicate
  suspicions; see processors/lead_facts.py's catalogue: notes do count, `lead.notes_count`),
- `LeadErased` and `LeadMergedInto` (the lead is gone; the decider would refuse a score).

A batch that touches a lead several times scores it once, for its last cause in the batch (the
earlier states were superseded within the same batch). LeadScored event ids are derived from
(cause event id, model id, version): a score computed again for the same cause appends nothing
new (appends are idempotent by event id).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import msgspec
import psycopg
import structlog

from ledger.errors import ConcurrencyError, LeadGone, LeadNotFound
from ledger.lead import fold
from ledger.lead_commands import LeadCommands, Planned
from ledger.relay import CHANNEL
from ledger.scoring_models import ModelVersion, ScoringModels
from ledger.store import EventStore, RecordedEvent, Stream
from processors.lead_facts import fold_facts
from processors.rules import CompiledModel, compile_model, digest, score_lead
from schema.commands import RecordScore
from schema.events import (
    LeadDuplicateDismissed,
    LeadDuplicateSuspected,
    LeadErased,
    LeadMergedInto,
    LeadScored,
)
from schema.metadata import Actor, EventMetadata
from schema.scoring import ScoreResult

log = structlog.get_logger(__name__)

NAME = "scoring"
ACTOR = Actor(key_id="processor:scoring", role="processor")
SOURCE = "processor"
NOT_CAUSES: tuple[type, ...] = (
    LeadScored, LeadDuplicateSuspected, LeadDuplicateDismissed, LeadErased, LeadMergedInto,
)
"""Events that cannot change a lead's score (see the module docstring)."""
GONE: tuple[type, ...] = (LeadErased, LeadMergedInto)
SCORE_IDS = uuid.UUID("6d1f5d3c-2f44-4b7e-9a52-0c1f3e0a5c11")
"""Namespace of the LeadScored event ids derived from their cause."""
ROUNDS = 5
"""Rounds of LeadCommands' own retries a score gets on a lead many writers change at once."""

_encode = msgspec.json.Encoder().encode
Key = tuple[str, str]


def score_event_id(cause_id: str, model_id: str, version: int) -> str:
    return str(uuid.uuid5(SCORE_IDS, f"{cause_id}/{model_id}@{version}"))


def score_command(
    model: ModelVersion, result: ScoreResult, cause_id: str | None, cause_type: str
) -> RecordScore:
    return RecordScore(
        model_id=model.model_id, model_version=model.version, score=result.total,
        band=result.band, contributions=tuple(result.contributions),
        observed=_encode(result.observed).decode(), cause_event_id=cause_id,
        cause_type=cause_type, digest=digest(model.model_id, model.version, result),
    )


class CompiledModels:
    """Compiled model versions, by (workspace, model id, version): a version never changes, so
    it is compiled once per process. Bounded: the oldest entry goes first."""

    def __init__(
        self, compile: Callable[[ModelVersion], CompiledModel] | None = None, size: int = 256
    ) -> None:
        self._compile = compile or (lambda m: compile_model(m.spec, m.attributes))
        self._size = size
        self._compiled: dict[tuple[str, str, int], CompiledModel] = {}

    def get(self, model: ModelVersion) -> CompiledModel:
        key = (model.workspace, model.model_id, model.version)
        found = self._compiled.get(key)
        if found is None:
            if len(self._compiled) >= self._size:
                self._compiled.pop(next(iter(self._compiled)))
            found = self._compiled[key] = self._compile(model)
        return found


class _ScoreWrite(msgspec.Struct, frozen=True):
    """A score decided for a lead, waiting for the batch's writes."""

    cause: RecordedEvent
    stream: Stream
    command: RecordScore
    metadata: EventMetadata
    event_id: str


class ScoringProcessor:
    """The projection the runner feeds; `tables` is empty (its output is events)."""

    name = NAME
    tables: tuple[str, ...] = ()
    handles = None  # any event can be a cause (see NOT_CAUSES)

    def __init__(
        self, store: EventStore, commands: LeadCommands, models: ScoringModels,
        compiled: CompiledModels | None = None,
    ) -> None:
        self.store = store
        self.commands = commands
        self.models = models
        self.compiled = compiled or CompiledModels()
        self.scored = 0
        """LeadScored events appended by this process (for tests and logs)."""

    def shadow(self, suffix: str) -> ScoringProcessor:
        raise NotImplementedError("the scoring processor has no read model to rebuild")

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        return None

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """In the runner's transaction, with its checkpoint write."""
        causes: dict[Key, RecordedEvent] = {}
        for recorded in events:
            if not isinstance(recorded.event, NOT_CAUSES):
                causes[(recorded.workspace, recorded.stream_id)] = recorded
        active: dict[str, ModelVersion | None] = {}
        for workspace in sorted({w for w, _ in causes}):
            active[workspace] = await self.models.active(workspace, conn=conn, lock=True)
        scored = [key for key in causes if active[key[0]] is not None]
        streams = await self.store.read_streams(scored, conn=conn)  # one read for the batch
        # Every score first, then every write: the transaction gets its id (and starts holding
        # back the ledger's gap-safe readers) at its first write, not before the scoring.
        writes = []
        for key in scored:
            model = active[key[0]]
            assert model is not None
            write = self._score(model, causes[key], streams.get(key))
            if write is not None:
                writes.append(write)
        await self._write_all(conn, writes)
        if causes:
            # This transaction held the gap-safe horizon back while it scored: writes that
            # committed meanwhile were announced to the relay before it could read them, and
            # appends coalesce their NOTIFYs. Announcing this commit wakes the relay at once
            # instead of at its next poll (a second later).
            await conn.execute("SELECT pg_notify(%s, '')", (CHANNEL,))

    def _score(
        self, model: ModelVersion, cause: RecordedEvent, stream: Stream | None
    ) -> _ScoreWrite | None:
        """The LeadScored to append for `cause`, if the score changed. `stream`: the lead as
        the batch read it, in this transaction (None: no events)."""
        if stream is None or not stream.events or isinstance(stream.events[-1].event, GONE):
            return None
        # The lead as of its cause, at the cause's time: later events score on their own turn.
        upto = [r for r in stream.events if r.version <= cause.version]
        try:
            result = score_lead(self.compiled.get(model), fold_facts(upto), cause.recorded_at)
        except Exception:
            # The engine reports failing rules inside the result; anything else is a bug that
            # must not stop every other lead's scoring. Logged loudly, the lead keeps its score.
            log.exception("scoring a lead failed", workspace=cause.workspace,
                          lead_id=cause.stream_id, model=model.label, cause=cause.event_id)
            return None
        command = score_command(model, result, cause.event_id, cause.event.event_type)
        if command.digest == fold([r.event for r in stream.events]).score_digest:
            return None  # unchanged: what the decider would conclude, without another read
        meta = cause.metadata
        metadata = EventMetadata(
            actor=ACTOR, source=SOURCE, causation_id=cause.event_id,
            correlation_id=meta.correlation_id or meta.request_id,
        )
        event_id = score_event_id(cause.event_id, model.model_id, model.version)
        return _ScoreWrite(cause, stream, command, metadata, event_id)

    async def _write_all(self, conn: psycopg.AsyncConnection, writes: list[_ScoreWrite]) -> None:
        """Every workspace's scores in one statement; any that did not land there (its lead
        moved on since the batch read it, or a repeat after a crash) one by one."""
        by_workspace: dict[str, list[_ScoreWrite]] = {}
        for write in writes:
            by_workspace.setdefault(write.cause.workspace, []).append(write)
        for workspace, group in by_workspace.items():
            results = await self.commands.execute_each(workspace, [
                Planned(w.cause.stream_id, w.command, w.metadata, w.event_id, w.stream)
                for w in group
            ], conn=conn)
            for write, result in zip(group, results, strict=True):
                if result is None:
                    await self._write(conn, write)
                else:
                    self.scored += len(result.events)

    async def _write(self, conn: psycopg.AsyncConnection, write: _ScoreWrite) -> None:
        cause = write.cause
        for round_ in range(ROUNDS):
            try:
                outcome = await self.commands.execute(
                    cause.workspace, cause.stream_id, write.command, write.metadata,
                    event_ids=[write.event_id], conn=conn,
                    known=write.stream if round_ == 0 else None,
                )
                self.scored += len(outcome.events)
                return
            except (LeadGone, LeadNotFound):
                return
            except ConcurrencyError:
                if round_ == ROUNDS - 1:
                    raise
