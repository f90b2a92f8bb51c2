"""/v1/dead-letters: events a processor gave up on, per workspace, to inspect, retry or discard.

A processor (enrichment, routing, webhooks, ...) retries each event with bounded backoff; an
event that still fails is parked here with the last error and the processor moves on. A retry
request hands the event back to the processor that parked it, which runs it again within a few
seconds (the row then reads `resolved`, or `parked` again with the new error). Admin keys only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import Parameter
from msgspec import Meta

from api.http.access import require_admin
from api.http.cursors import decode_query_cursor, encode_cursor, query_hash
from api.http.problems import ProblemError, problem_responses
from api.http.services import Services
from processors import dead_letters
from processors.dead_letters import DeadLetter

Status = Literal["parked", "retrying", "resolved", "discarded"]


class DeadLetterView(msgspec.Struct, frozen=True):
    reactor: Annotated[str, Meta(description="The processor that parked the event.")]
    event_id: str
    lead_id: str
    event_type: str
    position: Annotated[str, Meta(description="The event's ledger position.")]
    error: Annotated[str, Meta(description="The last error.")]
    attempts: Annotated[int, Meta(description="Tries so far, retries included.")]
    status: Status
    parked_at: datetime
    updated_at: datetime


class DeadLetterPage(msgspec.Struct, frozen=True):
    data: list[DeadLetterView]
    next_cursor: str | None = None


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    parked_at: datetime
    event_id: str


def _view(letter: DeadLetter) -> DeadLetterView:
    return DeadLetterView(
        reactor=letter.reactor, event_id=letter.event_id, lead_id=letter.stream_id,
        event_type=letter.event_type, position=f"{letter.transaction_id}-{letter.position}",
        error=letter.error, attempts=letter.attempts, status=letter.status,  # type: ignore[arg-type]
        parked_at=letter.parked_at, updated_at=letter.updated_at,
    )


class DeadLettersController(Controller):
    path = "/v1/dead-letters"
    tags = ("operations",)
    guards = (require_admin,)

    @get("/", summary="Events processors gave up on (admin)",
         description="Oldest first; filter by processor (`reactor`) and `status`.",
         responses=problem_responses(400, 401, 403, 429))
    async def index(
        self, request: Request, services: Services,
        reactor: Annotated[str | None, Parameter(description="e.g. enrich, route, webhooks")]
        = None,
        status: Annotated[Status | None, Parameter(description="Default: every status.")] = None,
        cursor: Annotated[str | None, Parameter(description="next_cursor of the last page.")]
        = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
    ) -> DeadLetterPage:
        workspace = request.user.key.workspace
        query = query_hash("dead-letters", reactor, status)
        after = None
        if cursor is not None:
            decoded = decode_query_cursor(cursor, _Cursor, query)
            after = (decoded.parked_at, decoded.event_id)
        async with services.runtime.pool.connection() as conn:
            rows = await dead_letters.page(conn, workspace, reactor=reactor, status=status,
                                           after=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            encode_cursor(_Cursor(query, rows[-1].parked_at, rows[-1].event_id)) if more else None
        )
        return DeadLetterPage(data=[_view(r) for r in rows], next_cursor=next_cursor)

    @post("/{reactor:str}/{event_id:str}/retry", status_code=202,
          summary="Hand a parked event back to its processor (admin)",
          responses=problem_responses(401, 403, 404, 409, 429))
    async def retry(self, request: Request, reactor: str, event_id: str,
                    services: Services) -> DeadLetterView:
        return await self._move(request, services, reactor, event_id, dead_letters.RETRYING,
                                (dead_letters.PARKED,))

    @post("/{reactor:str}/{event_id:str}/discard", status_code=200,
          summary="Give up on a parked event for good (admin)",
          responses=problem_responses(401, 403, 404, 409, 429))
    async def discard(self, request: Request, reactor: str, event_id: str,
                      services: Services) -> DeadLetterView:
        return await self._move(request, services, reactor, event_id, dead_letters.DISCARDED,
                                (dead_letters.PARKED, dead_letters.RETRYING))

    async def _move(self, request: Request, services: Services, reactor: str, event_id: str,
                    status: str, only_from: tuple[str, ...]) -> DeadLetterView:
        workspace = request.user.key.workspace
        async with services.runtime.pool.connection() as conn:
            moved = await dead_letters.set_status(conn, workspace, reactor, event_id, status,
                                                  only_from=only_from)
            if moved is not None:
                return _view(moved)
            current = await dead_letters.get(conn, workspace, reactor, event_id)
        if current is None:
            raise ProblemError("not-found", f"no dead letter {reactor}/{event_id}")
        raise ProblemError("conflict", f"dead letter {reactor}/{event_id} is {current.status}, "
                           "not " + " or ".join(only_from))
