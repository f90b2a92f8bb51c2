"""The lead read model (table `leads`): one row per live lead, its current fields in plaintext.

Owns every SQL statement against `leads` (and its rebuild shadow): the batch apply the runner
calls, the comparison `replay --check` makes, and the queries the API serves. Rows are folded
with the lead's own pure `evolve` (projections/lead_rows.py).

Idempotence is per lead version: an event at or below a row's version is a duplicate and
skipped; an event beyond version + 1 means the lead's earlier events have not arrived (they
commit in another order, or NATS lost them), so the lead's tail is read from the ledger first.
Upserts never move a row to a lower version, whatever order batches land in.

A rebuild's shadow folds in bulk: leads stay in memory across batches and each is written once,
by one COPY into the empty shadow, instead of being loaded and rewritten by every batch that
touches it (a ledger interleaves its leads' events, so most batches touch most leads).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from ledger.lead import ERASED, INITIAL
from ledger.store import EventStore, RecordedEvent
from projections.lead_rows import (
    COLUMNS,
    COPY_TYPES,
    LEAD_EVENTS,
    Folded,
    Key,
    LeadRow,
    fold_event,
    folded_values,
    row_from_state,
    state_from_row,
)

__all__ = [
    "COLUMNS", "NAME", "TABLE", "FieldDifference", "LeadDifference", "LeadRow", "LeadsProjection",
    "diff_leads", "get_lead", "row_from_state",
]

NAME = "lead"
TABLE = "leads"
BULK_LEADS = 200_000
"""Leads a rebuild holds in memory (about 1 KB each) before writing them out."""


class LeadsProjection:
    """Folds batches of ledger events into `table` (the live `leads` or a rebuild shadow)."""

    name = NAME
    handles = None  # every lead event

    def __init__(self, store: EventStore, table: str = TABLE, *, bulk: int = 0) -> None:
        """`bulk` > 0: fold in memory for up to that many leads (for an empty shadow only)."""
        self.store = store
        self.table = table
        self.tables: tuple[str, ...] = (table,)
        self.bulk = bulk
        self._held: dict[Key, Folded] | None = {} if bulk else None
        self._written = False  # whether the bulk mode has written rows into the table yet

    def shadow(self, suffix: str) -> LeadsProjection:
        """The same projection building `<table><suffix>` (a fresh table) in bulk."""
        return LeadsProjection(self.store, self.table + suffix, bulk=BULK_LEADS)

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """Must run inside the caller's transaction, with the caller's checkpoint write."""
        if self._held is not None:
            await self._apply_bulk(conn, events, self._held)
            return
        by_lead: dict[Key, list[RecordedEvent]] = defaultdict(list)
        for recorded in events:
            if isinstance(recorded.event, LEAD_EVENTS):
                by_lead[(recorded.workspace, recorded.stream_id)].append(recorded)
        for batch in by_lead.values():
            batch.sort(key=lambda r: r.version)
        # A lead whose batch starts at version 1 is folded from scratch: no row to load, and
        # the upsert's version guard keeps any row already further along.
        known = await self._load(conn, [k for k, b in by_lead.items() if b[0].version > 1])
        changed = []
        for key, batch in by_lead.items():
            folded = known.get(key) or Folded(INITIAL)
            if await self._fold(key, folded, batch):
                changed.append((key, folded))
        await self._write(conn, changed, fresh=False)

    async def flush(self, conn: psycopg.AsyncConnection) -> None:
        """Ends the bulk mode: writes the leads held in memory; later batches go to rows."""
        if self._held is not None:
            await self._write(conn, list(self._held.items()), fresh=not self._written)
            self._held = None

    async def _apply_bulk(
        self, conn: psycopg.AsyncConnection, events: list[RecordedEvent],
        held: dict[Key, Folded],
    ) -> None:
        """Event by event, without grouping: a replay reads the ledger in order, so a lead's
        next event is almost always the next version (this is the hot loop of a rebuild)."""
        if self._written:
            missing = {(r.workspace, r.stream_id) for r in events} - held.keys()
            held.update(await self._load(conn, list(missing)))
        for recorded in events:
            if not isinstance(recorded.event, LEAD_EVENTS):
                continue
            key = (recorded.workspace, recorded.stream_id)
            folded = held.get(key)
            if folded is None:
                folded = held[key] = Folded(INITIAL)
            version = folded.state.version
            if recorded.version == version + 1:
                fold_event(folded, recorded)
            elif recorded.version > version + 1:
                await self._fold_tail(key, folded)  # the tail includes this event
        if len(held) > self.bulk:
            await self._write(conn, list(held.items()), fresh=not self._written)
            self._written = True
            held.clear()

    async def _fold(self, key: Key, folded: Folded, batch: list[RecordedEvent]) -> bool:
        """Folds the batch into `folded`; False if every event was a duplicate."""
        changed, gap = _fold_in_order(folded, batch)
        if gap is not None:
            await self._fold_tail(key, folded)
            _fold_in_order(folded, batch[gap:])
        return changed or gap is not None

    async def _fold_tail(self, key: Key, folded: Folded) -> None:
        """The lead's earlier events have not reached us yet: read its whole tail, so the row
        never skips a version (the rest of the batch then dedupes against it)."""
        stream = await self.store.read_stream(key[0], key[1], after_version=folded.state.version)
        for missing in stream.events:
            fold_event(folded, missing)

    async def _write(
        self, conn: psycopg.AsyncConnection, leads: list[tuple[Key, Folded]], *, fresh: bool
    ) -> None:
        """Upserts live leads and deletes erased ones; `fresh` (an empty table) COPYs rows
        straight in and has nothing to delete."""
        rows = [
            folded_values(key[0], f) for key, f in leads
            if f.state.version and f.state.status != ERASED
        ]
        if fresh:
            await self._copy(conn, self.table, rows)
            return
        await self._upsert(conn, rows)
        await self._delete(conn, [key for key, f in leads if f.state.status == ERASED])

    # -- SQL ----------------------------------------------------------------------------

    async def _load(self, conn: psycopg.AsyncConnection, keys: list[Key]) -> dict[Key, Folded]:
        found: dict[Key, Folded] = {}
        query = sql.SQL("SELECT {} FROM {} WHERE workspace = %s AND lead_id = ANY(%s)").format(
            _column_list(), sql.Identifier(self.table)
        )
        for workspace, ids in _by_workspace(keys).items():
            cur = await conn.execute(query, (workspace, ids))
            for values in await cur.fetchall():
                row = LeadRow(*values)
                found[(workspace, row.lead_id)] = Folded(
                    state_from_row(row), row.created_at, row.updated_at
                )
        return found

    async def _upsert(self, conn: psycopg.AsyncConnection, rows: list[tuple[Any, ...]]) -> None:
        """COPY into a per-session staging table, then one INSERT ... ON CONFLICT: one round
        trip of rows instead of one statement per row."""
        if not rows:
            return
        await conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS leads_stage (LIKE {} INCLUDING DEFAULTS) "
                "ON COMMIT DELETE ROWS"
            ).format(sql.Identifier(self.table))
        )
        await self._copy(conn, "leads_stage", rows)
        await conn.execute(_upsert_sql(self.table))
        # Several batches can share one transaction (a rebuild's tail): empty it now.
        await conn.execute("DELETE FROM leads_stage")

    async def _copy(
        self, conn: psycopg.AsyncConnection, table: str, rows: list[tuple[Any, ...]]
    ) -> None:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            sql.Identifier(table), _column_list()
        )
        async with conn.cursor().copy(statement) as copy:
            copy.set_types(COPY_TYPES)  # binary: no text formatting on either side
            for row in rows:
                await copy.write_row(row)

    async def _delete(self, conn: psycopg.AsyncConnection, keys: list[Key]) -> None:
        query = sql.SQL("DELETE FROM {} WHERE workspace = %s AND lead_id = ANY(%s)").format(
            sql.Identifier(self.table)
        )
        for workspace, ids in _by_workspace(keys).items():
            await conn.execute(query, (workspace, ids))


def _fold_in_order(folded: Folded, batch: list[RecordedEvent]) -> tuple[bool, int | None]:
    """Folds events while each is the next version, skipping duplicates. Returns whether any
    applied, and the index of the first event past a gap (None if there was none)."""
    changed = False
    for index, recorded in enumerate(batch):
        version = folded.state.version
        if recorded.version <= version:
            continue  # a duplicate: already in the row
        if recorded.version > version + 1:
            return changed, index
        fold_event(folded, recorded)
        changed = True
    return changed, None


def _by_workspace(keys: list[Key]) -> dict[str, list[str]]:
    """Lead ids grouped by workspace: no statement ever spans two workspaces."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for workspace, lead_id in keys:
        grouped[workspace].append(lead_id)
    return grouped


def _column_list() -> sql.Composed:
    return sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


def _upsert_sql(table: str) -> sql.Composed:
    # The version guard makes the write idempotent whatever order rows arrive in: a row is
    # only ever replaced by a later version of the same lead.
    updates = sql.SQL(", ").join(
        sql.SQL("{} = excluded.{}").format(sql.Identifier(c), sql.Identifier(c))
        for c in COLUMNS[2:]
    )
    return sql.SQL(
        "INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM leads_stage "
        "ON CONFLICT (workspace, lead_id) DO UPDATE SET {updates} "
        "WHERE t.version < excluded.version"
    ).format(table=sql.Identifier(table), cols=_column_list(), updates=updates)


# -- queries ----------------------------------------------------------------------------------


async def get_lead(conn: psycopg.AsyncConnection, workspace: str, lead_id: str) -> LeadRow | None:
    query = sql.SQL("SELECT {} FROM leads WHERE workspace = %s AND lead_id = %s").format(
        _column_list()
    )
    cur = await conn.execute(query, (workspace, lead_id))
    values = await cur.fetchone()
    return LeadRow(*values) if values else None


# -- comparison (replay --check) --------------------------------------------------------------


class FieldDifference(msgspec.Struct, frozen=True):
    field: str
    live: str
    """The live value, as JSON."""
    rebuilt: str
    """The value a fresh fold of the ledger gives, as JSON."""


class LeadDifference(msgspec.Struct, frozen=True):
    workspace: str
    lead_id: str
    kind: str
    """`missing` (the live model lacks the lead), `extra` (it has a lead the ledger does not
    give), or `different` (see `fields`)."""
    fields: list[FieldDifference] = []


_WORKSPACES = "SELECT DISTINCT workspace FROM {} UNION SELECT DISTINCT workspace FROM {}"

# Row-wise IS DISTINCT FROM compares every column null-safely: the rebuilt table was created
# LIKE the live one, so both have the same columns in the same order.
_DIFF = """
SELECT {live_cols}, {shadow_cols}
FROM (SELECT * FROM {live} WHERE workspace = %s) l
FULL JOIN (SELECT * FROM {shadow} WHERE workspace = %s) s ON s.lead_id = l.lead_id
WHERE l IS DISTINCT FROM s
ORDER BY coalesce(l.lead_id, s.lead_id)
"""


async def diff_leads(
    conn: psycopg.AsyncConnection, live: str, rebuilt: str
) -> list[LeadDifference]:
    """Every lead whose row in `live` differs from its row in `rebuilt`, workspace by
    workspace."""
    tables = (sql.Identifier(live), sql.Identifier(rebuilt))
    cur = await conn.execute(sql.SQL(_WORKSPACES).format(*tables))
    workspaces = sorted(row[0] for row in await cur.fetchall())
    query = sql.SQL(_DIFF).format(
        live_cols=sql.SQL(", ").join(sql.Identifier("l", c) for c in COLUMNS),
        shadow_cols=sql.SQL(", ").join(sql.Identifier("s", c) for c in COLUMNS),
        live=tables[0],
        shadow=tables[1],
    )
    differences = []
    for workspace in workspaces:
        cur = await conn.execute(query, (workspace, workspace))
        for values in await cur.fetchall():
            differences.append(_difference(values[: len(COLUMNS)], values[len(COLUMNS):]))
    return differences


def _difference(live: tuple, rebuilt: tuple) -> LeadDifference:
    if live[0] is None:
        return LeadDifference(rebuilt[0], rebuilt[1], "missing")
    if rebuilt[0] is None:
        return LeadDifference(live[0], live[1], "extra")
    fields = [
        FieldDifference(name, _json(a), _json(b))
        for name, a, b in zip(COLUMNS, live, rebuilt, strict=True)
        if a != b
    ]
    return LeadDifference(live[0], live[1], "different", fields)


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()
