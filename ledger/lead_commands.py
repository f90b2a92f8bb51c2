"""Executes lead commands: read the stream, fold it, decide, append at the version read.

This is the one command path every interface shares (HTTP, CLI, import, MCP, processors). It
keeps the identity index in step with the lead in the same transaction as the append: a create
or change that would give a lead an identity key (email, phone, external id) another lead owns
raises DuplicateLead (or, when asked to flag, records the suspected duplicate and goes on);
erasure releases the keys; a merge hands them to the survivor.

A concurrent writer that moves the stream between our read and our append makes the append fail
with ConcurrencyError; without an explicit expected version the command is re-decided against
the new state a bounded number of times.

Given a connection (`conn=`), a command reads and appends inside the caller's transaction, each
append in a savepoint of its own (a refused append leaves the transaction usable): several
creates then commit or roll back together, as an atomic batch does.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec
import psycopg
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from ledger import identity
from ledger.errors import (
    ConcurrencyError,
    DomainError,
    DuplicateLead,
    IdentityClaimed,
    LeadNotFound,
)
from ledger.identity import IdentityClaim, IdentityHasher, IdentityKey
from ledger.lead import ACTIVE, ARCHIVED, INITIAL, LeadState, decide, fold
from ledger.store import (
    AppendResult,
    EventStore,
    IdentityChange,
    NewEvent,
    OneEvent,
    Stream,
    StreamAppend,
)
from schema.commands import (
    AbsorbLead,
    CreateLead,
    LeadCommand,
    MarkMergedInto,
    SuspectDuplicate,
)
from schema.events import Event
from schema.metadata import EventMetadata
from schema.positions import LogPosition

RAISE, FLAG = "raise", "flag"
EXACT_SCORE = 100.0
FIRST_RETRY_WAIT_S = 0.01
"""At most this long (random) before a write that lost a race is tried again: writers that
collided do not collide again in step."""
"""An exact identity match, on the fuzzy matcher's 0–100 scale."""

Plan = Callable[[LeadState], Sequence[LeadCommand]]
"""Makes a write's commands from the lead's current state (a PATCH that replaces tags)."""


class CommandResult(msgspec.Struct, frozen=True):
    lead_id: str
    state: LeadState
    events: list[Event]
    position: LogPosition | None
    """Ledger position of the write; None when the command changed nothing."""
    recorded_at: datetime | None = None
    """When the write was recorded, where the append reported it."""


class Planned(msgspec.Struct, frozen=True):
    """A command for one lead, decided on the stream the caller read (LeadCommands.execute_each)."""

    lead_id: str
    command: LeadCommand
    metadata: EventMetadata
    event_id: str
    known: Stream


class LeadCommands:
    def __init__(
        self, store: EventStore, hasher: IdentityHasher | None = None, *, attempts: int = 5
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.attempts = attempts

    async def load(
        self, workspace: str, lead_id: str, *, conn: psycopg.AsyncConnection | None = None
    ) -> LeadState:
        stream = await self.store.read_stream(workspace, lead_id, conn=conn)
        return fold([r.event for r in stream.events], INITIAL)

    async def execute(
        self,
        workspace: str,
        lead_id: str,
        command: LeadCommand,
        metadata: EventMetadata,
        *,
        expected_version: int | None = None,
        event_ids: Sequence[str] | None = None,
        on_duplicate: str = RAISE,
        conn: psycopg.AsyncConnection | None = None,
        known: Stream | None = None,
    ) -> CommandResult:
        """`expected_version` (an If-Match) makes a conflict final instead of retried;
        `event_ids` make a retried request idempotent (the same ids append once);
        `on_duplicate="flag"` records identity clashes as suspected duplicates instead of
        refusing the command; `conn` runs it inside the caller's transaction."""
        return await self.execute_plan(
            workspace, lead_id, lambda _state: [command], metadata,
            expected_version=expected_version, event_ids=event_ids, on_duplicate=on_duplicate,
            conn=conn, known=known,
        )

    async def execute_plan(
        self,
        workspace: str,
        lead_id: str,
        plan: Plan,
        metadata: EventMetadata,
        *,
        expected_version: int | None = None,
        event_ids: Sequence[str] | None = None,
        command_ids: Sequence[str] | None = None,
        on_duplicate: str = RAISE,
        conn: psycopg.AsyncConnection | None = None,
        known: Stream | None = None,
    ) -> CommandResult:
        """The commands `plan` makes of the lead's current state, decided in turn and appended
        as one write at one version: all of them or none (a PATCH of several fields at once).

        `command_ids` (instead of `event_ids`, which number the events in order): the id of
        the event each command decides, so that a command deciding nothing shifts no other
        command's id (a further event of one command gets an id derived from its own).

        `known`: the lead's stream as the caller just read it (a processor that looked at the
        lead before deciding to act), used instead of reading it again on the first attempt;
        if the lead moved on since, the append conflicts and the retry reads it afresh."""
        try:
            # The first attempt outside tenacity: most commands land on it, and building the
            # retry machinery for every command cost more than the command's own decision.
            return await self._once(
                workspace, lead_id, plan, metadata, expected_version, event_ids, on_duplicate,
                assume_new=True, conn=conn, command_ids=command_ids, known=known,
            )
        except ConcurrencyError:
            if expected_version is not None or self.attempts <= 1:
                raise
        await asyncio.sleep(random.uniform(0, FIRST_RETRY_WAIT_S))
        async for attempt in self._retrying(None, tries=self.attempts - 1):
            with attempt:
                return await self._once(
                    workspace, lead_id, plan, metadata, expected_version, event_ids,
                    on_duplicate, assume_new=False, conn=conn, command_ids=command_ids,
                )
        raise AssertionError("unreachable")

    async def execute_each(
        self, workspace: str, planned: Sequence[Planned], *, conn: psycopg.AsyncConnection
    ) -> list[CommandResult | None]:
        """Commands for several leads, each decided on the stream its caller read and all
        appended in one statement inside the caller's transaction (a processor's batch). A
        result per command, in order; None for one that did not land in that statement (its
        lead moved on since it was read, the event is a repeat, the decider refused it, or it
        needs more than one plain event): run it with `execute`, which settles each case."""
        results: list[CommandResult | None] = [None] * len(planned)
        ready: list[tuple[int, LeadState, list[Event], OneEvent]] = []
        for index, item in enumerate(planned):
            state = fold([r.event for r in item.known.events], INITIAL)
            try:
                events = decide(state, item.command)
            except DomainError:
                continue
            if not events:
                results[index] = CommandResult(item.lead_id, state, [], None)
                continue
            release, claim = self._identity_change(state, fold(events, state))
            if len(events) != 1 or release or claim or (
                    events[0].personal and item.known.key is None):
                continue
            ready.append((index, state, events, OneEvent(
                item.lead_id, state.version, NewEvent(events[0], item.event_id), item.metadata,
                item.known.key)))
        landed = await self.store.append_each(workspace, [one for *_, one in ready], conn=conn)
        for index, state, events, one in ready:
            appended = landed.get(one.stream_id)
            if appended is not None:
                results[index] = CommandResult(one.stream_id, fold(events, state), events,
                                               appended.last, appended.recorded_at)
        return results

    async def merge(
        self, workspace: str, survivor_id: str, absorbed_id: str, metadata: EventMetadata
    ) -> tuple[CommandResult, CommandResult]:
        """Merges `absorbed_id` into `survivor_id` atomically: the survivor records what it
        took, the absorbed stream ends with merged-into, and its identity keys move over."""
        async for attempt in self._retrying(None):
            with attempt:
                return await self._merge_once(workspace, survivor_id, absorbed_id, metadata)
        raise AssertionError("unreachable")

    def _retrying(self, expected_version: int | None, tries: int | None = None) -> AsyncRetrying:
        """Retries a write that lost a race (ConcurrencyError) on a fresh read, `tries` times in
        all (default: the commands' attempts), after a short random wait that grows."""
        if tries is None:
            tries = 1 if expected_version is not None else self.attempts
        return AsyncRetrying(
            stop=stop_after_attempt(tries),
            wait=wait_random_exponential(multiplier=0.005, max=0.1),
            retry=retry_if_exception_type(ConcurrencyError),
            reraise=True,
        )

    async def _once(
        self,
        workspace: str,
        lead_id: str,
        plan: Plan,
        metadata: EventMetadata,
        expected_version: int | None,
        event_ids: Sequence[str] | None,
        on_duplicate: str,
        *,
        assume_new: bool,
        conn: psycopg.AsyncConnection | None = None,
        command_ids: Sequence[str] | None = None,
        known: Stream | None = None,
    ) -> CommandResult:
        stream = known if known is not None else await self._read(
            workspace, lead_id, plan, expected_version, assume_new, conn)
        state = fold([r.event for r in stream.events], INITIAL)
        if expected_version is not None and expected_version != state.version:
            if state.status is None:
                raise LeadNotFound("lead not found")
            raise ConcurrencyError(lead_id, expected_version, state.version)
        events: list[Event] = []
        aligned: list[str] = []
        after = state
        for i, command in enumerate(plan(state)):
            decided = decide(after, command)
            if command_ids is not None:
                aligned += _ids_for(command_ids[i], len(decided))
            events.extend(decided)
            after = fold(decided, after)
        if command_ids is not None:
            event_ids = aligned
        if not events:
            return CommandResult(lead_id, state, [], None)
        release, claim = self._identity_change(state, after)
        try:
            appended = await self._append(
                workspace, stream, state, events, metadata, event_ids, release, claim, conn
            )
        except IdentityClaimed as clash:
            events = self._on_claims(clash.claims, state, events, on_duplicate)
            taken = {c.kind for c in clash.claims}
            free = [k for k in claim if k.kind not in taken]
            appended = await self._append(
                workspace, stream, state, events, metadata, event_ids, release, free, conn
            )
            after = fold(events, state)
        return CommandResult(lead_id, after, list(events), appended.last, appended.recorded_at)

    async def _read(
        self, workspace: str, lead_id: str, plan: Plan, expected_version: int | None,
        assume_new: bool, conn: psycopg.AsyncConnection | None = None,
    ) -> Stream:
        """A create (with whatever else its write decides, such as duplicates it is suspected
        of) skips reading its (normally empty) stream: the append at version 0 proves the lead
        is new, and a retry after a conflict reads it for real."""
        if assume_new and expected_version in (None, 0):
            commands = plan(INITIAL)
            if commands and isinstance(commands[0], CreateLead):
                return Stream(lead_id, 0, [], None)
        return await self.store.read_stream(workspace, lead_id, conn=conn)

    async def _append(
        self, workspace: str, stream: Stream, state: LeadState, events: list[Event],
        metadata: EventMetadata, event_ids: Sequence[str] | None,
        release: list[IdentityKey], claim: list[IdentityKey],
        conn: psycopg.AsyncConnection | None = None,
    ) -> AppendResult:
        ids = list(event_ids or [])
        new = [NewEvent(e, ids[i]) if i < len(ids) else NewEvent(e) for i, e in enumerate(events)]
        if conn is None:
            result = await self.store.append(
                workspace, stream.stream_id, state.version, new, metadata, key=stream.key,
                identity=IdentityChange(release, claim),
            )
            return result
        # A savepoint: a refused append (a version conflict, a claimed identity) aborts only
        # itself, and the caller's transaction goes on (to retry, flag or merge).
        async with conn.transaction():
            result = await self.store.append(
                workspace, stream.stream_id, state.version, new, metadata, key=stream.key,
                identity=IdentityChange(release, claim), conn=conn,
            )
        return result

    def _identity_change(
        self, before: LeadState, after: LeadState
    ) -> tuple[list[IdentityKey], list[IdentityKey]]:
        if self.hasher is None:
            return [], []
        if before.fields is after.fields and before.status == after.status:
            # Scores, activities, tags, tasks...: evolve kept the very same fields, so the keys
            # are the same (and hashing them is a processor write's largest pure cost).
            return [], []
        old = self._keys(before)
        new = self._keys(after)
        return [k for k in old if k not in new], [k for k in new if k not in old]

    def _keys(self, state: LeadState) -> list[IdentityKey]:
        if self.hasher is None or state.status not in (ACTIVE, ARCHIVED):
            return []
        return self.hasher.keys_for(state.fields)

    @staticmethod
    def _on_claims(
        claims: list[IdentityClaim], state: LeadState, events: list[Event], on_duplicate: str
    ) -> list[Event]:
        owners: dict[str, list[str]] = {}
        for claim in claims:
            owners.setdefault(claim.lead_id, []).append(claim.kind)
        if on_duplicate != FLAG:
            existing, kinds = next(iter(owners.items()))
            raise DuplicateLead(existing, tuple(kinds))
        flagged = list(events)
        for other, kinds in owners.items():
            command = SuspectDuplicate(
                other_id=other, score=EXACT_SCORE, matched=tuple(kinds), exact=True
            )
            flagged += decide(fold(flagged, state), command)
        return flagged

    async def _merge_once(
        self, workspace: str, survivor_id: str, absorbed_id: str, metadata: EventMetadata
    ) -> tuple[CommandResult, CommandResult]:
        survivor_stream = await self.store.read_stream(workspace, survivor_id)
        absorbed_stream = await self.store.read_stream(workspace, absorbed_id)
        survivor = fold([r.event for r in survivor_stream.events])
        absorbed = fold([r.event for r in absorbed_stream.events])
        if absorbed.status is None:
            raise LeadNotFound(f"lead {absorbed_id} not found")
        ended = decide(absorbed, MarkMergedInto(survivor_id=survivor_id))
        took = decide(survivor, AbsorbLead(
            absorbed_id=absorbed_id, absorbed_fields=absorbed.fields, absorbed_tags=absorbed.tags
        ))
        survivor_after = fold(took, survivor)
        async with self.store.pool.connection() as conn, conn.transaction():
            await identity.repoint(conn, workspace, absorbed_id, survivor_id)
            _, claim = self._identity_change(survivor, survivor_after)
            claims = await identity.reserve(conn, workspace, survivor_id, claim)
            if claims:
                raise DuplicateLead(claims[0].lead_id, tuple(c.kind for c in claims))
            results = [
                await self.store.append(
                    workspace, s.stream_id, st.version, [NewEvent(e) for e in evs], metadata,
                    key=s.key, conn=conn,
                )
                for s, st, evs in (
                    (absorbed_stream, absorbed, ended), (survivor_stream, survivor, took)
                ) if evs
            ]
        last = results[-1].last if results else None
        return (
            CommandResult(survivor_id, survivor_after, list(took), last),
            CommandResult(absorbed_id, fold(ended, absorbed), list(ended), last),
        )


__all__ = ["FLAG", "RAISE", "CommandResult", "LeadCommands", "StreamAppend"]


_FURTHER_IDS = uuid.UUID("5b0c3f1e-9d47-4a8e-b1f2-7c6d2e8a4f90")


def _ids_for(first: str, count: int) -> list[str]:
    """Ids of the `count` events one command decided: its own id, then ids derived from it."""
    return [first, *(str(uuid.uuid5(_FURTHER_IDS, f"{first}/{n}")) for n in range(1, count))][
        :count]
