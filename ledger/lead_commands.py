"""Executes lead commands: read the stream, fold it, decide, append at the version read.

This is the one command path every interface shares (HTTP, CLI, import, MCP, processors). A
concurrent writer that moves the stream between our read and our append makes the append fail
with ConcurrencyError; without an explicit expected version the command is re-decided against
the new state a bounded number of times.
"""

from __future__ import annotations

import msgspec
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from ledger.errors import ConcurrencyError
from ledger.lead import INITIAL, LeadState, decide, fold
from ledger.store import AppendResult, EventStore, NewEvent
from schema.commands import LeadCommand
from schema.events import Event
from schema.metadata import EventMetadata
from schema.positions import LogPosition


class CommandResult(msgspec.Struct, frozen=True):
    lead_id: str
    state: LeadState
    events: list[Event]
    position: LogPosition | None
    """Ledger position of the write; None when the command changed nothing."""


class LeadCommands:
    def __init__(self, store: EventStore, *, attempts: int = 5) -> None:
        self.store = store
        self.attempts = attempts

    async def load(self, workspace: str, lead_id: str) -> LeadState:
        stream = await self.store.read_stream(workspace, lead_id)
        return fold([r.event for r in stream.events], INITIAL)

    async def execute(
        self,
        workspace: str,
        lead_id: str,
        command: LeadCommand,
        metadata: EventMetadata,
        *,
        expected_version: int | None = None,
        event_ids: list[str] | None = None,
    ) -> CommandResult:
        """`expected_version` (an If-Match) makes a conflict final instead of retried;
        `event_ids` make a retried request idempotent (the same ids append once)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 if expected_version is not None else self.attempts),
            wait=wait_random_exponential(multiplier=0.005, max=0.1),
            retry=retry_if_exception_type(ConcurrencyError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._once(
                    workspace, lead_id, command, metadata, expected_version, event_ids
                )
        raise AssertionError("unreachable")

    async def _once(
        self,
        workspace: str,
        lead_id: str,
        command: LeadCommand,
        metadata: EventMetadata,
        expected_version: int | None,
        event_ids: list[str] | None,
    ) -> CommandResult:
        stream = await self.store.read_stream(workspace, lead_id)
        state = fold([r.event for r in stream.events], INITIAL)
        if expected_version is not None and expected_version != state.version:
            raise ConcurrencyError(lead_id, expected_version, state.version)
        events = decide(state, command)
        if not events:
            return CommandResult(lead_id, state, [], None)
        ids = event_ids or [None] * len(events)
        new = [NewEvent(e, i) if i else NewEvent(e) for e, i in zip(events, ids, strict=False)]
        result: AppendResult = await self.store.append(
            workspace, lead_id, state.version, new, metadata, key=stream.key
        )
        return CommandResult(lead_id, fold(events, state), list(events), result.last)
