"""Listing leads from the lead read model: filters, sort and keyset (cursor) pagination.

Reads the `leads` table that projections/leads.py writes (the single lead's query is that
module's `get_lead`). Pages are keyset pages over (sort key, lead_id): stable under inserts,
no offsets, and each one an index range scan on (workspace, sort key, lead_id): created_at and
updated_at (leads_by_created/updated), score (leads_by_score) and a queryable custom attribute
(its index, ledger/attribute_definitions.py). Filters on queryable attributes compare typed jsonb
values (numbers as numbers) through the same expression the attribute's index is built on.

A lead without a score or without the sort attribute comes after every lead that has one, in
either direction: a page first walks the leads that have a value (the index range), then those
without (by id); the cursor says which part it stopped in. Splitting the two keeps both parts
index scans, where one `ORDER BY ... NULLS LAST` over an ascending index could not walk
backwards.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from api.http.cursors import decode_cursor, encode_cursor, query_hash
from api.http.problems import FieldError, ProblemError
from api.http.quality_queries import Rescoring
from ledger.attribute_definitions import attribute_expression, presence
from ledger.attributes import RANGED, parse_text
from ledger.errors import InvalidValue
from projections.leads import COLUMNS, LeadRow
from schema.attributes import AttributeDefinition

SORT_PATTERN = r"^-?(created_at|updated_at|score|attr\.[a-z][a-z0-9_]{0,62})$"
OPERATORS = ("eq", "in", "gt", "gte", "lt", "lte")
_SQL_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
MAX_SET = 100
"""Values of one set-membership filter."""


class AttributeCondition(msgspec.Struct, frozen=True):
    """`attr.<name>[.<op>]=<value>`: equality, set membership or one side of a range, with
    values already of the attribute's type. On a list attribute, eq and in test membership."""

    name: str
    op: Literal["eq", "in", "gt", "gte", "lt", "lte"]
    values: tuple[Any, ...]
    list_type: bool = False
    json_type: str = "string"
    """jsonb_typeof of the values a range compares against (a range never matches a value of
    another type, which a changed definition may have left behind)."""


class LeadFilter(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "active"
    stage: tuple[str, ...] = ()
    owner: str | None = None
    tags: tuple[str, ...] = ()
    source: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_after: datetime | None = None
    updated_before: datetime | None = None
    q: str | None = None
    quarantined: bool | None = None
    quality_below: int | None = None
    """Needs `list_leads(rescoring=...)`: the score is computed against the workspace's
    settings at query time (api/http/quality_queries.py)."""
    score_min: float | None = None
    score_max: float | None = None
    score_band: tuple[str, ...] = ()
    attributes: tuple[AttributeCondition, ...] = ()


class ListCursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    at: Any
    """The last lead's sort value: a time, a score, or an attribute's JSON value."""
    lead_id: str
    absent: bool = False
    """The page ended among the leads without a value (which come last)."""


@dataclass(frozen=True)
class SortKey:
    expression: sql.Composable
    descending: bool
    kind: Literal["time", "score", "attribute"]
    present: sql.Composable | None = None
    """For a key some leads lack: the condition of having it (None: every lead has it)."""
    attribute: str | None = None
    column: str = ""


def sort_key(sort: str, definitions: Mapping[str, AttributeDefinition]) -> SortKey:
    """`created_at`, `updated_at`, `score` or `attr.<queryable attribute>`; `-` for
    descending. An attribute that is not queryable (or a list) is InvalidValue."""
    descending, name = sort.startswith("-"), sort.lstrip("-")
    if name in ("created_at", "updated_at"):
        return SortKey(sql.Identifier(name), descending, "time", column=name)
    if name == "score":
        return SortKey(sql.Identifier("score"), descending, "score",
                       present=sql.SQL("score IS NOT NULL"), column="score")
    attribute = name.removeprefix("attr.")
    definition = _queryable(definitions, attribute, "query:sort")
    if definition.type == "list":
        raise InvalidValue("query:sort", f"{attribute!r} is a list: filter by it, not sort")
    return SortKey(attribute_expression(attribute), descending, "attribute",
                   present=presence(attribute), attribute=attribute)


def attribute_conditions(
    params: Sequence[tuple[str, str]], definitions: Mapping[str, AttributeDefinition]
) -> tuple[AttributeCondition, ...]:
    """The `attr.*` query parameters as typed conditions. Unknown or non-queryable attributes,
    unknown operators and values of the wrong type are InvalidValue naming the parameter."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for key, text in params:
        if not key.startswith("attr."):
            continue
        name, _, op = key.removeprefix("attr.").partition(".")
        op = op or "eq"
        if op not in OPERATORS:
            raise InvalidValue(f"query:{key}", "operators: " + ", ".join(OPERATORS[1:]))
        texts = [t for t in text.split(",")] if op == "in" else [text]
        grouped.setdefault((name, op), []).extend(texts)
    conditions = []
    for (name, op), texts in sorted(grouped.items()):
        field = f"query:attr.{name}" + ("" if op == "eq" else f".{op}")
        definition = _queryable(definitions, name, field)
        if op in _SQL_OPS and (definition.type not in RANGED or len(texts) > 1):
            raise InvalidValue(field, "a range takes one value, on a number, integer, date, "
                               "datetime or string attribute")
        if len(texts) > MAX_SET:
            raise InvalidValue(field, f"at most {MAX_SET} values")
        values = tuple(dict.fromkeys(parse_text(definition, t, field) for t in texts))
        json_type = {"number": "number", "integer": "number", "boolean": "boolean"}.get(
            definition.type, "string")
        conditions.append(AttributeCondition(
            name, "in" if op == "eq" and len(values) > 1 else op, values,  # type: ignore[arg-type]
            list_type=definition.type == "list", json_type=json_type,
        ))
    return tuple(conditions)


def _queryable(
    definitions: Mapping[str, AttributeDefinition], name: str, field: str
) -> AttributeDefinition:
    definition = definitions.get(name)
    if definition is None:
        raise InvalidValue(field, f"no attribute {name!r} in this workspace")
    if not definition.queryable:
        raise InvalidValue(field, f"the attribute {name!r} is not queryable (PUT "
                           f"/v1/attributes/{name} with queryable: true)")
    return definition


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(
    workspace: str, f: LeadFilter, score: sql.Composable | None = None
) -> tuple[list[sql.Composable], list[Any]]:
    clauses: list[sql.Composable] = [sql.SQL("workspace = %s"), sql.SQL("status = %s")]
    params: list[Any] = [workspace, f.status]
    if f.stage:
        clauses.append(sql.SQL("stage = ANY(%s)"))
        params.append(list(f.stage))
    if f.owner is not None:
        clauses.append(sql.SQL("owner = %s"))
        params.append(f.owner)
    if f.tags:
        clauses.append(sql.SQL("tags @> %s::text[]"))
        params.append(list(f.tags))
    if f.source is not None:
        clauses.append(sql.SQL("source = %s"))
        params.append(f.source)
    for column, op, value in (
        ("created_at", ">=", f.created_after), ("created_at", "<", f.created_before),
        ("updated_at", ">=", f.updated_after), ("updated_at", "<", f.updated_before),
    ):
        if value is not None:
            clauses.append(sql.SQL("{} {} %s").format(sql.Identifier(column), sql.SQL(op)))
            params.append(_utc(value))
    if f.q:
        # Free text over name, company and email; a trigram index can back this later.
        clauses.append(sql.SQL(
            "concat_ws(' ', first_name, last_name, company, email) ILIKE %s ESCAPE '\\'"
        ))
        params.append(_like(f.q))
    if f.quarantined is not None:
        clauses.append(sql.SQL("quarantined = %s"))
        params.append(f.quarantined)
    if f.quality_below is not None and score is not None:
        clauses.append(sql.SQL("{} < %s").format(score))
        params.append(f.quality_below)
    for op, bound in ((">=", f.score_min), ("<=", f.score_max)):
        if bound is not None:
            clauses.append(sql.SQL("score {} %s").format(sql.SQL(op)))
            params.append(bound)
    if f.score_band:
        clauses.append(sql.SQL("score_band = ANY(%s)"))
        params.append(list(f.score_band))
    for condition in f.attributes:
        clause, values = _attribute_clause(condition)
        clauses.append(clause)
        params += values
    return clauses, params


def _attribute_clause(c: AttributeCondition) -> tuple[sql.Composable, list[Any]]:
    """SQL on the indexed expression, and the partial index's predicate with it."""
    value, present = attribute_expression(c.name), presence(c.name)
    if c.list_type:  # membership: the GIN index serves @>
        any_of = sql.SQL(" OR ").join(sql.SQL("{} @> %s").format(value) for _ in c.values)
        return (sql.SQL("{} AND ({})").format(present, any_of),
                [Jsonb([v]) for v in c.values])
    if c.op == "eq":
        return sql.SQL("{} AND {} = %s").format(present, value), [Jsonb(c.values[0])]
    if c.op == "in":
        return (sql.SQL("{} AND {} = ANY(%s::jsonb[])").format(present, value),
                [[Jsonb(v) for v in c.values]])
    return (sql.SQL("{} AND {} {} %s AND jsonb_typeof({}) = {}").format(
        present, value, sql.SQL(_SQL_OPS[c.op]), value, sql.Literal(c.json_type)),
        [Jsonb(c.values[0])])


def _cursor_value(key: SortKey, at: Any) -> Any:
    if key.kind == "time":
        return msgspec.convert(at, datetime)
    if key.kind == "score":
        return msgspec.convert(at, float)
    return Jsonb(at)


def _sort_value(key: SortKey, row: LeadRow) -> Any:
    if key.kind == "attribute":
        return row.attributes.get(key.attribute or "")
    return getattr(row, key.column)


def first_page_query(
    workspace: str, f: LeadFilter, key: SortKey, limit: int,
    after: ListCursor | None = None, score: sql.Composable | None = None,
) -> tuple[sql.Composed, list[Any]]:
    """The statement of a page's first part: the leads that have a sort value, in its order
    (the benchmark explains this very statement)."""
    where, values = _where(workspace, f, score)
    if key.present is not None:
        where.append(key.present)
    if after is not None:
        op = sql.SQL("<" if key.descending else ">")
        where.append(sql.SQL("({}, lead_id) {} (%s, %s)").format(key.expression, op))
        values += [_cursor_value(key, after.at), after.lead_id]
    return list_query(where, key.expression, key.descending), [*values, limit]


async def list_leads(
    conn: psycopg.AsyncConnection,
    workspace: str,
    f: LeadFilter,
    *,
    sort: str,
    limit: int,
    cursor: str | None,
    rescoring: Rescoring | None = None,
    definitions: Mapping[str, AttributeDefinition] | None = None,
) -> tuple[list[LeadRow], str | None]:
    key = sort_key(sort, definitions or {})
    fingerprint = query_hash(workspace, sort, msgspec.to_builtins(f))
    after: ListCursor | None = None
    if cursor:
        after = decode_cursor(cursor, ListCursor)
        if after.query != fingerprint:
            raise ProblemError(
                "bad-request", "the cursor belongs to a different query (sort or filters)",
                errors=[FieldError(field="query:cursor",
                                   message="use next_cursor with the same sort and filters")],
            )
    rows: list[LeadRow] = []
    score = rescoring.score if rescoring else None
    if after is None or not after.absent:
        query, values = first_page_query(workspace, f, key, limit + 1, after, score)
        rows = await _fetch(conn, query, values)
    if key.present is not None and len(rows) <= limit:
        clauses, params = _where(workspace, f, score)
        clauses.append(sql.SQL("NOT {}").format(key.present))
        if after is not None and after.absent:
            clauses.append(sql.SQL("lead_id {} %s").format(
                sql.SQL("<" if key.descending else ">")))
            params.append(after.lead_id)
        query = list_query(clauses, None, key.descending)
        rows += await _fetch(conn, query, [*params, limit + 1 - len(rows)])
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        value = _sort_value(key, last)
        absent = key.present is not None and value is None
        next_cursor = encode_cursor(ListCursor(fingerprint, value, last.lead_id, absent))
    return rows, next_cursor


def list_query(
    where: Sequence[sql.Composable], order: sql.Composable | None, descending: bool
) -> sql.Composed:
    """The SELECT of one part of a page (the benchmark explains the very same statement)."""
    direction = sql.SQL("DESC" if descending else "ASC")
    by = [sql.SQL("lead_id {}").format(direction)]
    if order is not None:
        by.insert(0, sql.SQL("{} {}").format(order, direction))
    return sql.SQL("SELECT {cols} FROM leads WHERE {where} ORDER BY {by} LIMIT %s").format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS),
        where=sql.SQL(" AND ").join(where),
        by=sql.SQL(", ").join(by),
    )


async def _fetch(
    conn: psycopg.AsyncConnection, query: sql.Composed, params: list[Any]
) -> list[LeadRow]:
    cur = await conn.execute(query, params)
    return [LeadRow(*values) for values in await cur.fetchall()]


_BY_EMAIL = """
SELECT lead_id FROM leads
WHERE workspace = %s AND lower(email) = lower(%s) AND status IN ('active', 'archived')
ORDER BY created_at, lead_id
LIMIT %s
"""


async def leads_with_email(
    conn: psycopg.AsyncConnection, workspace: str, email: str, limit: int = 100
) -> list[str]:
    """The live leads whose email is `email` (case-insensitively; the leads_by_email index)."""
    cur = await conn.execute(_BY_EMAIL, (workspace, email, limit))
    return [row[0] for row in await cur.fetchall()]


_SUMMARIES = """
SELECT lead_id, status, first_name, last_name, email, phone, company, created_at, updated_at
FROM leads WHERE workspace = %s AND lead_id = ANY(%s)
"""


async def lead_summaries(
    conn: psycopg.AsyncConnection, workspace: str, lead_ids: list[str]
) -> dict[str, tuple[Any, ...]]:
    """A few columns of each of these leads, by id (absent: not in the read model)."""
    cur = await conn.execute(_SUMMARIES, (workspace, lead_ids))
    return {row[0]: tuple(row) for row in await cur.fetchall()}
