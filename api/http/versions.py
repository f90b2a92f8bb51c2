"""Versions and positions on the wire: ETag / If-Match (optimistic concurrency on a lead) and
X-Consistency-Token (read-your-writes across the asynchronous read model).

A lead's ETag is its version, as a strong entity tag (`"7"`). A write sent with `If-Match: "7"`
applies only if the lead is still at version 7, else 412. Every write answers with
`X-Consistency-Token`, the ledger position of the lead's latest event; a read that sends it back
waits, bounded, until the lead read model has applied that position, and answers 503 with
Retry-After if it does not get there in time: never stale data silently.
"""

from __future__ import annotations

import re

from litestar import Request
from psycopg_pool import AsyncConnectionPool

from api.http.problems import FieldError, ProblemError
from projections.checkpoints import wait_for
from projections.leads import NAME as LEAD_PROJECTION
from schema.positions import LogPosition

CONSISTENCY_HEADER = "X-Consistency-Token"
ANY = -1
"""`If-Match: *`: any current version, as long as the lead exists."""

_ETAG = re.compile(r'^\s*"(\d{1,9})"\s*$')
_LEAD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def etag(version: int) -> str:
    return f'"{version}"'


def if_match(request: Request) -> int | None:
    """The version If-Match requires; None without the header, ANY for `*`."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    if raw.strip() == "*":
        return ANY
    if raw.strip().startswith("W/"):
        raise ProblemError(
            "precondition-failed",
            "If-Match uses strong comparison: a weak ETag never matches",
        )
    match = _ETAG.match(raw)
    if match is None:
        raise ProblemError(
            "bad-request", "If-Match must be one ETag as the API returned it, e.g. \"3\"",
            errors=[FieldError(field="header:If-Match", message='one strong ETag, e.g. "3"')],
        )
    return int(match.group(1))


def if_none_match(request: Request, version: int) -> bool:
    """True when the client's If-None-Match already names this version (answer 304)."""
    raw = request.headers.get("if-none-match")
    if raw is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in raw.split(",")}
    return "*" in tags or etag(version) in tags


def valid_lead_id(lead_id: str) -> bool:
    """Ids the API can hold; anything else cannot exist, so it is a 404 before any query."""
    return bool(_LEAD_ID.match(lead_id))


def consistency_token(request: Request) -> LogPosition | None:
    raw = request.headers.get(CONSISTENCY_HEADER)
    if raw is None or not raw.strip():
        return None
    try:
        return LogPosition.parse(raw)
    except ValueError:
        raise ProblemError(
            "bad-request", f"{CONSISTENCY_HEADER} must be a token a write returned",
            errors=[FieldError(field=f"header:{CONSISTENCY_HEADER}",
                               message="the X-Consistency-Token of a previous write")],
        ) from None


async def read_your_writes(
    request: Request, pool: AsyncConnectionPool, timeout: float,
    projection: str = LEAD_PROJECTION,
) -> None:
    """Waits until the read model (the lead's, unless named) has applied the request's
    consistency token, if any."""
    position = consistency_token(request)
    if position is None:
        return
    if not await wait_for(pool, projection, position, timeout):
        raise ProblemError(
            "unavailable",
            f"the read model has not yet reached {position.token()}; retry shortly",
            headers={"Retry-After": "1"},
        )
