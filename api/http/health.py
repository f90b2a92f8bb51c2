"""Liveness, readiness and the problem-type catalogue: the public, unauthenticated routes."""

from __future__ import annotations

import time

import nats
from litestar import Controller, Response, get
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from api.http.problems import PROBLEM_TYPES, ProblemError, ProblemType, problem_responses
from api.http.representations import Check, Health, Ready
from api.http.services import Services
from ledger.checkpoints import read_checkpoint
from projections.leads import NAME as LEAD_PROJECTION

# Events the lead projection has yet to apply, counted only up to a bound (a cheap index scan).
_LAG = """
SELECT count(*) FROM (
    SELECT 1 FROM events
    WHERE (transaction_id, position) > (%s, %s)
      AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
    LIMIT %s) behind
"""


class HealthController(Controller):
    tags = ["operations"]

    @get("/health", summary="Liveness", description="The process is up and serving.")
    async def health(self) -> Health:
        return Health(status="ok")

    @get(
        "/ready",
        summary="Readiness",
        description="PostgreSQL answers, NATS answers, and the lead projection is not too far "
        "behind the ledger. 503 with the failing checks otherwise.",
        responses={503: problem_responses(503)[503]},
    )
    async def ready(self, services: Services) -> Response[Ready]:
        checks = {"postgres": await _postgres(services)}
        if checks["postgres"].ok:
            checks["projection"] = await _projection(services)
        if services.settings.check_nats:
            checks["nats"] = await _nats(services.runtime.nats_url)
        ok = all(c.ok for c in checks.values())
        body = Ready(status="ready" if ok else "not_ready", checks=checks)
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)

    @get("/problems", summary="The problem types this API returns")
    async def problem_types(self) -> list[ProblemType]:
        return list(PROBLEM_TYPES.values())

    @get(
        "/problems/{slug:str}",
        summary="One problem type",
        responses=problem_responses(404),
    )
    async def problem_type(self, slug: str) -> ProblemType:
        if slug not in PROBLEM_TYPES:
            raise ProblemError("not-found", "no such problem type")
        return PROBLEM_TYPES[slug]


async def _postgres(services: Services) -> Check:
    started = time.perf_counter()
    try:
        async with services.runtime.pool.connection(timeout=2.0) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
        return Check(ok=False, detail=type(exc).__name__)
    return Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))


async def _projection(services: Services) -> Check:
    bound = services.settings.ready_max_projection_lag
    async with services.runtime.pool.connection(timeout=2.0) as conn:
        position = await read_checkpoint(conn, LEAD_PROJECTION)
        cur = await conn.execute(_LAG, (position.transaction_id, position.position, bound + 1))
        row = await cur.fetchone()
    lag = row[0] if row else 0
    return Check(ok=lag <= bound, lag_events=lag, position=position.token())


async def _nats(url: str) -> Check:
    if not url:
        return Check(ok=False, detail="no NATS configured")
    started = time.perf_counter()
    try:
        client = await nats.connect(
            url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0
        )
        await client.close()
    except Exception as exc:  # noqa: BLE001 - any failure is "not ready"
        return Check(ok=False, detail=type(exc).__name__)
    return Check(ok=True, latency_ms=round((time.perf_counter() - started) * 1000, 2))
