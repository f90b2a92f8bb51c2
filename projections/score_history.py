"""The score-history read model (table `score_history`): every score a lead had, when and why.

One row per `LeadScored` event, keyed by (workspace, lead id, the event's stream version): the
total, the band, the model, each rule's contribution, the values the rules saw (decrypted:
read models hold plaintext, and erasure deletes the rows), which event caused it and when it was
recorded. `LeadErased` deletes the lead's rows. Idempotent per key: a row that exists is kept.

Its queries serve GET /v1/leads/{id}/score (the latest row) and .../score/history (newest
first, by version). `rebuild_score_history` replays it from the ledger (`leadledger replay
score-history`); `diff_score_history` is what `--check` compares.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from ledger.store import EventStore, RecordedEvent
from projections.leads import FieldDifference, LeadDifference
from projections.rebuild import Progress, RebuildReport, rebuild
from schema.events import LeadErased, LeadScored, RuleContribution

NAME = "score-history"
TABLE = "score_history"
COLUMNS = (
    "workspace", "lead_id", "version", "score", "band", "model_id", "model_version",
    "contributions", "observed", "cause_event_id", "cause_type", "event_id", "recorded_at",
)
_decode_json = msgspec.json.Decoder().decode


class ScoreRow(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    version: int
    """The LeadScored event's version in the lead's stream."""
    score: float
    band: str | None
    model_id: str
    model_version: int
    contributions: list[RuleContribution]
    observed: dict[str, Any]
    """Rule name -> {reference: value} the rule read; {} once the lead's key is destroyed."""
    cause_event_id: str | None
    cause_type: str | None
    event_id: str
    recorded_at: datetime


def _observed(recorded: RecordedEvent, event: LeadScored) -> Any:
    if recorded.redacted:
        return {}
    try:
        value = _decode_json(event.observed)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


class ScoreHistoryProjection:
    name = NAME
    handles = (LeadScored, LeadErased)

    def __init__(self, table: str = TABLE, *, shadow: bool = False) -> None:
        """`shadow`: a rebuild's fresh table, which has no index (so no key to conflict on)
        until the rebuild's end, and gets each event exactly once."""
        self.table = table
        self.tables: tuple[str, ...] = (table,)
        t = sql.Identifier(table)
        conflict = "" if shadow else " ON CONFLICT (workspace, lead_id, version) DO NOTHING"
        self._insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})" + conflict).format(
            t, sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)),
        )
        self._erase = sql.SQL("DELETE FROM {} WHERE workspace = %s AND lead_id = %s").format(t)

    def shadow(self, suffix: str) -> ScoreHistoryProjection:
        return ScoreHistoryProjection(self.table + suffix, shadow=True)

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        return None

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """In the runner's transaction; rows go in batches, in ledger order around erasures."""
        rows: list[tuple[Any, ...]] = []
        async with conn.cursor() as cur:
            for recorded in events:
                event = recorded.event
                if isinstance(event, LeadScored):
                    rows.append((
                        recorded.workspace, recorded.stream_id, recorded.version, event.score,
                        event.band, event.model_id, event.model_version,
                        Jsonb(msgspec.to_builtins(event.contributions)),
                        Jsonb(_observed(recorded, event)), event.cause_event_id,
                        event.cause_type, recorded.event_id, recorded.recorded_at,
                    ))
                elif isinstance(event, LeadErased):
                    if rows:
                        await cur.executemany(self._insert, rows)
                        rows = []
                    await cur.execute(self._erase, (recorded.workspace, recorded.stream_id))
            if rows:
                await cur.executemany(self._insert, rows)


# -- queries ----------------------------------------------------------------------------------

_SELECT = """
SELECT lead_id, version, score, band, model_id, model_version, contributions::text,
       observed::text, cause_event_id, cause_type, event_id, recorded_at
FROM score_history
"""
_LATEST = _SELECT + "WHERE workspace = %s AND lead_id = %s ORDER BY version DESC LIMIT 1"
_PAGE = _SELECT + """WHERE workspace = %s AND lead_id = %s AND version < %s
ORDER BY version DESC LIMIT %s"""

_decode_contributions = msgspec.json.Decoder(list[RuleContribution]).decode


def _row(values: tuple) -> ScoreRow:
    (lead_id, version, score, band, model_id, model_version, contributions, observed,
     cause_event_id, cause_type, event_id, recorded_at) = values
    return ScoreRow(
        lead_id=lead_id, version=version, score=score, band=band, model_id=model_id,
        model_version=model_version, contributions=_decode_contributions(contributions),
        observed=_decode_json(observed), cause_event_id=cause_event_id, cause_type=cause_type,
        event_id=event_id, recorded_at=recorded_at,
    )


async def latest_score(
    conn: psycopg.AsyncConnection, workspace: str, lead_id: str
) -> ScoreRow | None:
    cur = await conn.execute(_LATEST, (workspace, lead_id))
    values = await cur.fetchone()
    return _row(values) if values else None


async def score_history(
    conn: psycopg.AsyncConnection, workspace: str, lead_id: str, before_version: int | None,
    limit: int,
) -> list[ScoreRow]:
    """Newest first, the rows below `before_version` (a page's cursor), at most `limit`."""
    before = 2**31 - 1 if before_version is None else before_version
    cur = await conn.execute(_PAGE, (workspace, lead_id, before, limit))
    return [_row(v) for v in await cur.fetchall()]


# -- rebuild and comparison (replay score-history [--check]) ----------------------------------


async def rebuild_score_history(
    store: EventStore, pool: AsyncConnectionPool, *, check: bool = False,
    progress: Progress | None = None, batch_size: int = 10_000,
) -> RebuildReport:
    """Replays the ledger into a shadow of `score_history` and swaps it in (or, `check`,
    compares it with the live table)."""
    return await rebuild(
        ScoreHistoryProjection(), store, pool, check=check, progress=progress,
        compare=diff_score_history, batch_size=batch_size,
    )


_WORKSPACES = "SELECT DISTINCT workspace FROM {} UNION SELECT DISTINCT workspace FROM {}"
# Row-wise IS DISTINCT FROM: the shadow was created LIKE the live table (same columns, order).
_DIFF = """
SELECT {live_cols}, {shadow_cols}
FROM (SELECT * FROM {live} WHERE workspace = %s) l
FULL JOIN (SELECT * FROM {shadow} WHERE workspace = %s) s
  ON s.lead_id = l.lead_id AND s.version = l.version
WHERE l IS DISTINCT FROM s
ORDER BY coalesce(l.lead_id, s.lead_id), coalesce(l.version, s.version)
"""


async def diff_score_history(
    conn: psycopg.AsyncConnection, live: str, rebuilt: str
) -> list[LeadDifference]:
    """Every history row that differs between `live` and `rebuilt`, as a lead difference whose
    fields name the row's version and the columns that differ."""
    tables = (sql.Identifier(live), sql.Identifier(rebuilt))
    cur = await conn.execute(sql.SQL(_WORKSPACES).format(*tables))
    workspaces = sorted(row[0] for row in await cur.fetchall())
    query = sql.SQL(_DIFF).format(
        live_cols=sql.SQL(", ").join(sql.Identifier("l", c) for c in COLUMNS),
        shadow_cols=sql.SQL(", ").join(sql.Identifier("s", c) for c in COLUMNS),
        live=tables[0], shadow=tables[1],
    )
    differences = []
    for workspace in workspaces:
        cur = await conn.execute(query, (workspace, workspace))
        for values in await cur.fetchall():
            live_row, rebuilt_row = values[: len(COLUMNS)], values[len(COLUMNS):]
            differences.append(_difference(live_row, rebuilt_row))
    return differences


def _difference(live: tuple, rebuilt: tuple) -> LeadDifference:
    if live[0] is None:
        return LeadDifference(rebuilt[0], rebuilt[1], "missing",
                              [FieldDifference("version", "null", str(rebuilt[2]))])
    if rebuilt[0] is None:
        return LeadDifference(live[0], live[1], "extra",
                              [FieldDifference("version", str(live[2]), "null")])
    fields = [
        FieldDifference(name, _json(a), _json(b))
        for name, a, b in zip(COLUMNS, live, rebuilt, strict=True) if a != b
    ]
    return LeadDifference(live[0], live[1], "different",
                          [FieldDifference("version", str(live[2]), str(rebuilt[2])), *fields])


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()
