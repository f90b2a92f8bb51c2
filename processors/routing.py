"""The routing reactor ("route"): assigns leads per their workspace's rules and opens follow-ups.

It wants three events, and only in workspaces that configured routing (processors/
routing_store.py):

- `LeadCreated`: the lead is routed (processors/assignment.py: rules in order, territories, the
  fallback queue) and gets a follow-up task, due at the event's `recorded_at` plus the SLA of
  its band and its rule's priority.
- `LeadEnriched`, while the lead has no owner (it waits in a queue, or was never routed): it is
  routed again, since enrichment may have filled the country, a region or a value a rule reads.
  The waiting follow-up moves to the new assignee (due afresh from the event) instead of a second
  one opening. A lead with an owner is not re-routed by enrichment: people keep their leads.
- `LeadScored` whose band differs from the lead's previous band, when the workspace's SLA has a
  due time for the new band: a `score-band` follow-up for the lead's owner (or its queue).

The lead is read as it is now (its whole stream), at the causing event's time. A lead whose
owner a person set (on create, or by assigning an owner) is left alone unless the matching rule
says `reassign`. Archived, merged and erased leads are not routed.

Everything it appends is idempotent: the decision is stored once per causing event (with the
team's cursor, in one transaction), and AssignLead / OpenTask / ReassignTask carry event ids
derived from the causing event's id (uuid5), so a re-run appends nothing new. Each appended event
records the processor as actor, the causing event as causation, its correlation id, and the
decision's reason.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import timedelta

import structlog
from psycopg_pool import AsyncConnectionPool

from ledger.attribute_definitions import AttributeDefinitions
from ledger.errors import InvalidValue, LeadGone, LeadNotFound
from ledger.lead import ACTIVE, LeadState
from ledger.lead_commands import LeadCommands
from ledger.store import EventStore, RecordedEvent, Stream
from processors.assignment import (
    CompiledRules,
    InvalidRules,
    compile_rules,
    due_at,
    first_match,
    region_of,
    target_for,
)
from processors.lead_facts import fold_facts
from processors.reactor import FirstReads
from processors.routing_store import RoutingStore, StoredDecision
from schema.commands import AssignLead, LeadCommand, OpenTask, ReassignTask
from schema.events import (
    LeadAssigned,
    LeadCreated,
    LeadEnriched,
    LeadOwnerAssigned,
    LeadScored,
    LeadTaskCompleted,
    LeadTaskOpened,
    LeadTaskReassigned,
)
from schema.metadata import Actor, EventMetadata
from schema.routing import FALLBACK_RULE, FOLLOW_UP, SCORE_BAND, Decision, RoutingBook

log = structlog.get_logger(__name__)

NAME = "route"
ACTOR = Actor(key_id="processor:route", role="processor")
SOURCE = "processor"
BOOK_TTL_S = 1.0
IDS = uuid.UUID("0b6c2d1e-6a57-4a8e-9a3f-5d2e7c1b9f40")
"""Namespace of the event and task ids routing derives from what caused them."""


def derived_id(cause_id: str, what: str) -> str:
    return str(uuid.uuid5(IDS, f"{cause_id}/{what}"))


class OpenTaskView:
    """A task as the lead's own stream tells it: open or not, and with whom."""

    def __init__(self, kind: str, assignee: str | None) -> None:
        self.kind, self.assignee, self.open = kind, assignee, True


def tasks_of(events: Sequence[RecordedEvent]) -> dict[str, OpenTaskView]:
    tasks: dict[str, OpenTaskView] = {}
    for recorded in events:
        match recorded.event:
            case LeadTaskOpened() as e:
                tasks[e.task_id] = OpenTaskView(e.kind, e.assignee)
            case LeadTaskReassigned() as e if e.task_id in tasks:
                tasks[e.task_id].assignee = e.assignee
            case LeadTaskCompleted() as e if e.task_id in tasks:
                tasks[e.task_id].open = False
    return tasks


def owned_by_person(events: Sequence[RecordedEvent]) -> bool:
    """Whether the lead's current owner was set by a person (not by a processor)."""
    person = False
    for recorded in events:
        match recorded.event:
            case LeadCreated() as e:
                person = e.owner is not None and recorded.metadata.source != SOURCE
            case LeadOwnerAssigned() as e:
                person = e.owner is not None and recorded.metadata.source != SOURCE
            case LeadAssigned():
                person = False
    return person


def previous_band(events: Sequence[RecordedEvent], before_version: int) -> str | None:
    band = None
    for recorded in events:
        if recorded.version >= before_version:
            break
        if isinstance(recorded.event, LeadScored):
            band = recorded.event.band
    return band


def metadata_for(cause: RecordedEvent, reason: str) -> EventMetadata:
    meta = cause.metadata
    return EventMetadata(
        actor=ACTOR, source=SOURCE, causation_id=cause.event_id,
        correlation_id=meta.correlation_id or meta.request_id, reason=reason[:1000],
    )


def assign_command(decision: Decision) -> AssignLead:
    rule_id = None if decision.rule_id == FALLBACK_RULE else decision.rule_id
    return AssignLead(owner=decision.owner, team=decision.team, queue=decision.queue,
                      rule_id=rule_id, rule_name=decision.rule_name, reason=decision.reason)


async def execute(
    commands: LeadCommands, cause: RecordedEvent, command: LeadCommand, event_id: str,
    reason: str, *, before: tuple[LeadCommand, str] | None = None, stream: Stream | None = None,
) -> int:
    """Appends the command's events (idempotent by `event_id`), after `before`'s in the same
    write when given; the count appended, 0 when the lead is gone or a task it names is no
    longer open (then `before` alone is tried)."""
    plan = [before, (command, event_id)] if before is not None else [(command, event_id)]
    try:
        result = await commands.execute_plan(
            cause.workspace, cause.stream_id, lambda _state: [c for c, _ in plan],
            metadata_for(cause, reason), event_ids=[i for _, i in plan], known=stream,
        )
    except (LeadGone, LeadNotFound):
        return 0
    except InvalidValue as exc:
        if exc.field != "task_id":
            raise
        # Completed meanwhile: nothing left to move (the assignment still stands).
        return await execute(commands, cause, *before, reason) if before is not None else 0
    return len(result.events)


class RulesCache:
    """Compiled rules per workspace, recompiled when the rules or attribute types change."""

    def __init__(self, attributes: AttributeDefinitions) -> None:
        self.attributes = attributes
        self._compiled: dict[str, tuple[object, CompiledRules]] = {}

    async def get(self, workspace: str, book: RoutingBook) -> CompiledRules:
        definitions = await self.attributes.current(workspace)
        key = (book.rules, tuple(sorted((n, d.type) for n, d in definitions.items())))
        cached = self._compiled.get(workspace)
        if cached is not None and cached[0] == key:
            return cached[1]
        rules = list(book.rules)
        try:
            compiled = compile_rules(rules, list(definitions.values()))
        except InvalidRules as exc:
            # Saved rules that no longer compile (an attribute was retired since): route
            # with the others rather than not at all, and say so.
            bad = {p.rule_index for p in exc.problems}
            log.warning("routing rules skipped", workspace=workspace,
                        rules=[rules[i].name for i in sorted(bad)])
            compiled = compile_rules([r for i, r in enumerate(rules) if i not in bad],
                                     list(definitions.values()))
        self._compiled[workspace] = (key, compiled)
        return compiled


OWNER_CHANGES = (LeadAssigned, LeadOwnerAssigned)


class RoutingBatch:
    """What routing reads once for a batch (the streams of its leads that need one), and what
    it learned while acting on it: the leads it left with an owner, whose later `LeadEnriched`
    in the same batch has nothing to do (enrichment does not re-route an owned lead)."""

    def __init__(self, reads: FirstReads) -> None:
        self.reads = reads
        self.owned: set[tuple[str, str]] = set()


def band_needs_follow_up(event: LeadScored, book: RoutingBook) -> bool:
    """Whether a score may open a band follow-up at all (its band has an SLA): the others need
    no look at the lead."""
    return event.band is not None and event.band in book.sla.by_band


class RoutingReactor:
    name = NAME

    def __init__(self, store: EventStore, commands: LeadCommands, routing: RoutingStore,
                 attributes: AttributeDefinitions) -> None:
        self.store = store
        self.commands = commands
        self.routing = routing
        self.rules = RulesCache(attributes)
        self._books: dict[str, tuple[float, RoutingBook]] = {}
        self.appended = 0
        """Events this process appended (for tests and logs)."""

    async def _book(self, workspace: str) -> RoutingBook | None:
        """The workspace's book, read at most every BOOK_TTL_S (saves take effect within it).
        Only found books are kept: a workspace that turns routing on is routed at once."""
        cached = self._books.get(workspace)
        if cached is not None and time.monotonic() - cached[0] < BOOK_TTL_S:
            return cached[1]
        book = await self.routing.book(workspace)
        if book is not None:
            self._books[workspace] = (time.monotonic(), book)
        return book

    def wants(self, recorded: RecordedEvent) -> bool:
        """The events it acts on, and those that change an owner (which only update what the
        batch knows: see RoutingBatch)."""
        return isinstance(recorded.event, (LeadCreated, LeadEnriched, LeadScored, *OWNER_CHANGES))

    async def prepare(self, events: list[RecordedEvent]) -> RoutingBatch:
        """The streams of the batch's leads that routing may act on, in workspaces that route
        (the others: no read)."""
        books = {w: await self._book(w) for w in {e.workspace for e in events}}
        return RoutingBatch(await FirstReads.of(self.store, [
            e for e in events if (book := books[e.workspace]) is not None
            and not isinstance(e.event, OWNER_CHANGES)
            and not (isinstance(e.event, LeadScored) and not band_needs_follow_up(e.event, book))
        ]))

    async def react(self, recorded: RecordedEvent, prepared: RoutingBatch) -> None:
        book = await self._book(recorded.workspace)
        if book is None:
            return
        lead = (recorded.workspace, recorded.stream_id)
        match recorded.event:
            case LeadAssigned(owner=owner) | LeadOwnerAssigned(owner=owner):
                (prepared.owned.add if owner is not None else prepared.owned.discard)(lead)
                return
            case LeadScored() as scored if not band_needs_follow_up(scored, book):
                return
            case LeadEnriched() if lead in prepared.owned:
                return
        stream = await prepared.reads.stream(self.store, *lead)
        facts = fold_facts(stream.events)
        if facts.state.status != ACTIVE:
            return
        if isinstance(recorded.event, LeadScored):
            await self._band_follow_up(recorded, stream, book, facts.state)
            return
        if facts.state.owner is not None:
            prepared.owned.add(lead)
        if isinstance(recorded.event, LeadEnriched) and facts.state.owner is not None:
            return
        compiled = await self.rules.get(recorded.workspace, book)
        now = recorded.recorded_at
        country = facts.state.fields.country
        target = target_for(
            first_match(compiled, facts, now), book,
            country if isinstance(country, str) else None, region_of(facts),
            owned_by_person=owned_by_person(stream.events),
        )
        if target is None:
            return
        tasks = tasks_of(stream.events)
        waiting = next((t for t, v in tasks.items() if v.open and v.kind == FOLLOW_UP), None)
        stored = await self.routing.decide(
            recorded.workspace, recorded.event_id, recorded.stream_id, target, book,
            waiting or derived_id(recorded.event_id, "task"),
        )
        await self._carry_out(recorded, stored, book, facts.state, tasks, stream)
        if stored.decision.owner is not None:
            prepared.owned.add(lead)

    async def _carry_out(
        self, cause: RecordedEvent, stored: StoredDecision, book: RoutingBook,
        state: LeadState, tasks: dict[str, OpenTaskView], stream: Stream,
    ) -> None:
        """`stream`: the lead as `react` read it, so the command need not read it again."""
        decision = stored.decision
        # One write for the assignment and its task (a crash cannot leave one without the
        # other); the assignment goes first only when it changes something, so that each event
        # keeps the id derived for it.
        assign = assign_command(decision)
        moves = (assign.owner, assign.team, assign.queue) != (
            state.owner, state.team, state.queue)
        first = (assign, derived_id(cause.event_id, "assign")) if moves else None
        task_id = stored.task_id
        due = due_at(cause.recorded_at, book.sla, state.score_band, decision.priority)
        known = tasks.get(task_id) if task_id is not None else None
        if task_id is None or (known is not None and (
                not known.open or known.assignee == decision.owner)):
            if first is not None:
                self.appended += await execute(self.commands, cause, *first, decision.reason,
                                               stream=stream)
            return
        if known is None:
            command: LeadCommand = OpenTask(
                task_id=task_id, kind=FOLLOW_UP, assignee=decision.owner, due_at=due,
                reason=decision.reason,
            )
            event_id = derived_id(cause.event_id, "open-task")
        else:
            command = ReassignTask(task_id=task_id, assignee=decision.owner,
                                   previous=known.assignee, due_at=due, reason=decision.reason)
            event_id = derived_id(cause.event_id, "reassign-task")
        self.appended += await execute(self.commands, cause, command, event_id, decision.reason,
                                       before=first, stream=stream)

    async def _band_follow_up(
        self, cause: RecordedEvent, stream: Stream, book: RoutingBook, state: LeadState,
    ) -> None:
        """`stream`: the lead as `react` read it, so the command need not read it again."""
        event = cause.event
        assert isinstance(event, LeadScored)
        before = previous_band(stream.events, cause.version)
        minutes = book.sla.by_band.get(event.band) if event.band is not None else None
        if event.band == before or minutes is None or (state.owner is None and
                                                       state.queue is None):
            return
        where = state.owner or f"queue {state.queue}"
        reason = f"score band {before or 'none'} -> {event.band}: follow up ({where})"
        command = OpenTask(
            task_id=derived_id(cause.event_id, "band-task"), kind=SCORE_BAND,
            assignee=state.owner, due_at=cause.recorded_at + timedelta(minutes=minutes),
            reason=reason,
        )
        self.appended += await execute(
            self.commands, cause, command, derived_id(cause.event_id, "open-band-task"), reason,
            stream=stream,
        )


def routing_reactor(store: EventStore, commands: LeadCommands, pool: AsyncConnectionPool
                    ) -> RoutingReactor:
    """The reactor as `api/reactors.py` registers it."""
    return RoutingReactor(store, commands, RoutingStore(pool), AttributeDefinitions(pool))
