"""The lead read model (table `leads`): one row per live lead, its current fields in plaintext.

Owns every SQL statement against `leads` (and its rebuild shadow): the batch apply the runner
calls, and the queries the API serves. Rows are folded with the lead's own pure `evolve`, so
the read model can never disagree with the decider about what an event means.

Idempotence is per lead version: an event at or below a row's version is a duplicate and
skipped; an event beyond version + 1 means the lead's earlier events have not arrived (they
commit in another order, or NATS lost them), so the lead's tail is read from the ledger first.
Upserts never move a row to a lower version, whatever order batches land in.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from ledger.lead import ERASED, INITIAL, LeadState, evolve
from ledger.store import EventStore, RecordedEvent
from schema.events import FIELD_NAMES, LEAD_EVENT_TYPES, LeadCreated, LeadFields

NAME = "lead"
TABLE = "leads"


class LeadRow(msgspec.Struct, frozen=True):
    """A row of `leads`: the lead's folded state, flat."""

    workspace: str
    lead_id: str
    version: int
    status: str
    first_name: str | None
    last_name: str | None
    email: str | None
    phone: str | None
    company: str | None
    title: str | None
    website: str | None
    country: str | None
    city: str | None
    address: str | None
    ip_address: str | None
    source: str | None
    external_id: str | None
    industry: str | None
    seniority: str | None
    department: str | None
    stage: str
    owner: str | None
    tags: list[str]
    notes_count: int
    merged_into: str | None
    merged_from: list[str]
    email_status: str | None
    email_reasons: list[str]
    quarantined: bool
    suspected_duplicates: list[str]
    created_at: datetime
    updated_at: datetime


COLUMNS: tuple[str, ...] = LeadRow.__struct_fields__
_LISTS = ("tags", "merged_from", "email_reasons", "suspected_duplicates")
# Every part of the lead's state has a column (a new LeadState field fails here, not silently).
assert set(COLUMNS) == (
    {"workspace", "created_at", "updated_at", *FIELD_NAMES, *LeadState.__struct_fields__}
    - {"fields"}
), "the leads columns and LeadState differ"

_PG_TYPES = {
    "version": "int4", "notes_count": "int4", "quarantined": "bool",
    "created_at": "timestamptz", "updated_at": "timestamptz", **dict.fromkeys(_LISTS, "text[]"),
}
_COPY_TYPES = [_PG_TYPES.get(column, "text") for column in COLUMNS]

_LEAD_EVENTS = tuple(LEAD_EVENT_TYPES)
_Key = tuple[str, str]  # (workspace, lead id)


class Folded(msgspec.Struct):
    """A lead mid-fold: the decider's state plus the row's timestamps."""

    state: LeadState
    created_at: datetime | None = None
    updated_at: datetime | None = None


def state_from_row(row: LeadRow) -> LeadState:
    fields: dict[str, Any] = {name: getattr(row, name) for name in FIELD_NAMES}
    return LeadState(
        lead_id=row.lead_id,
        version=row.version,
        status=row.status,
        fields=LeadFields(**fields),
        stage=row.stage,
        owner=row.owner,
        tags=tuple(row.tags),
        notes_count=row.notes_count,
        merged_into=row.merged_into,
        merged_from=tuple(row.merged_from),
        email_status=row.email_status,
        email_reasons=tuple(row.email_reasons),
        quarantined=row.quarantined,
        suspected_duplicates=tuple(row.suspected_duplicates),
    )


def row_from_state(
    workspace: str, state: LeadState, created_at: datetime, updated_at: datetime
) -> LeadRow:
    fields: dict[str, Any] = {name: getattr(state.fields, name) for name in FIELD_NAMES}
    return LeadRow(
        workspace=workspace,
        lead_id=state.lead_id or "",
        version=state.version,
        status=state.status or "",
        **{name: None if value is msgspec.UNSET else value for name, value in fields.items()},
        stage=state.stage or "",
        owner=state.owner,
        tags=list(state.tags),
        notes_count=state.notes_count,
        merged_into=state.merged_into,
        merged_from=list(state.merged_from),
        email_status=state.email_status,
        email_reasons=list(state.email_reasons),
        quarantined=state.quarantined,
        suspected_duplicates=list(state.suspected_duplicates),
        created_at=created_at,
        updated_at=updated_at,
    )


def fold_event(folded: Folded, recorded: RecordedEvent) -> None:
    """Applies the lead's next event (version = current + 1), in place."""
    folded.state = evolve(folded.state, recorded.event)
    if isinstance(recorded.event, LeadCreated):
        folded.created_at = recorded.recorded_at
    folded.updated_at = recorded.recorded_at


def _row(workspace: str, folded: Folded) -> LeadRow:
    assert folded.created_at is not None and folded.updated_at is not None
    return row_from_state(workspace, folded.state, folded.created_at, folded.updated_at)


class LeadsProjection:
    """Folds batches of ledger events into `table` (the live `leads` or a rebuild shadow)."""

    name = NAME

    def __init__(self, store: EventStore, table: str = TABLE) -> None:
        self.store = store
        self.table = table
        self.tables: tuple[str, ...] = (table,)

    def shadow(self, suffix: str) -> LeadsProjection:
        """The same projection writing into `<table><suffix>` (for rebuilds)."""
        return LeadsProjection(self.store, self.table + suffix)

    async def apply(self, conn: psycopg.AsyncConnection, events: list[RecordedEvent]) -> None:
        """Must run inside the caller's transaction, with the caller's checkpoint write."""
        by_lead: dict[_Key, list[RecordedEvent]] = defaultdict(list)
        for recorded in events:
            if isinstance(recorded.event, _LEAD_EVENTS):
                by_lead[(recorded.workspace, recorded.stream_id)].append(recorded)
        if not by_lead:
            return
        for batch in by_lead.values():
            batch.sort(key=lambda r: r.version)
        # A lead whose batch starts at version 1 is folded from scratch: no row to load, and
        # the upsert's version guard keeps any row already further along.
        known = await self._load(conn, [k for k, b in by_lead.items() if b[0].version > 1])
        upserts: list[LeadRow] = []
        erased: list[_Key] = []
        for key, batch in by_lead.items():
            folded = known.get(key) or Folded(INITIAL)
            if not await self._fold(key, folded, batch):
                continue
            if folded.state.status == ERASED:
                erased.append(key)
            else:
                upserts.append(_row(key[0], folded))
        await self._upsert(conn, upserts)
        await self._delete(conn, erased)

    async def _fold(self, key: _Key, folded: Folded, batch: list[RecordedEvent]) -> bool:
        """Folds the batch into `folded`; False if every event was a duplicate."""
        changed = False
        for recorded in batch:
            version = folded.state.version
            if recorded.version <= version:
                continue  # a duplicate: already in the row
            changed = True
            if recorded.version > version + 1:
                # The lead's earlier events have not reached us yet: read its whole tail, so
                # the row never skips a version (later events in this batch then dedupe).
                stream = await self.store.read_stream(key[0], key[1], after_version=version)
                for missing in stream.events:
                    fold_event(folded, missing)
                continue
            fold_event(folded, recorded)
        return changed

    # -- SQL ----------------------------------------------------------------------------

    async def _load(self, conn: psycopg.AsyncConnection, keys: list[_Key]) -> dict[_Key, Folded]:
        by_workspace: dict[str, list[str]] = defaultdict(list)
        for workspace, lead_id in keys:
            by_workspace[workspace].append(lead_id)
        found: dict[_Key, Folded] = {}
        query = sql.SQL("SELECT {} FROM {} WHERE workspace = %s AND lead_id = ANY(%s)").format(
            _column_list(), sql.Identifier(self.table)
        )
        for workspace, ids in by_workspace.items():
            cur = await conn.execute(query, (workspace, ids))
            for values in await cur.fetchall():
                row = LeadRow(*values)
                found[(workspace, row.lead_id)] = Folded(
                    state_from_row(row), row.created_at, row.updated_at
                )
        return found

    async def _upsert(self, conn: psycopg.AsyncConnection, rows: list[LeadRow]) -> None:
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
        async with conn.cursor().copy(
            sql.SQL("COPY leads_stage ({}) FROM STDIN (FORMAT BINARY)").format(_column_list())
        ) as copy:
            copy.set_types(_COPY_TYPES)  # binary COPY: no text formatting on either side
            for row in rows:
                await copy.write_row(msgspec.structs.astuple(row))
        await conn.execute(_upsert_sql(self.table))
        # Several batches can share one transaction (a rebuild's tail): empty it now.
        await conn.execute("DELETE FROM leads_stage")

    async def _delete(self, conn: psycopg.AsyncConnection, keys: list[_Key]) -> None:
        by_workspace: dict[str, list[str]] = defaultdict(list)
        for workspace, lead_id in keys:
            by_workspace[workspace].append(lead_id)
        query = sql.SQL("DELETE FROM {} WHERE workspace = %s AND lead_id = ANY(%s)").format(
            sql.Identifier(self.table)
        )
        for workspace, ids in by_workspace.items():
            await conn.execute(query, (workspace, ids))


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
