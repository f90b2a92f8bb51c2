"""Data-quality queries over the lead read model: each row rescored in SQL against the
workspace's settings and the current time, then aggregated (distribution, common problems) or
filtered (the leads failing a rule, `?quality_below=`).

The projection stores each lead's score as of its last change against the defaults
(projections/lead_rows.py). `Rescoring` is the SQL twin of ledger/quality.py's `score_quality`:
completeness against the workspace's required fields, vocabulary validity against its
vocabularies, freshness at `now`; what SQL cannot judge (is the phone valid, does its country
match, does the email's domain match the website) it reads from the stored problems and
consistency. The same lead scores the same here as in its representation.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from api.http.cursors import decode_cursor, encode_cursor, query_hash
from api.http.problems import FieldError, ProblemError
from ledger.quality import DECAY_DAYS, EMAIL_VALIDITY, FRESH_DAYS, WEIGHTS
from ledger.quality_settings import WorkspaceQuality
from projections.leads import COLUMNS, LeadRow
from schema.vocabularies import VOCABULARY_FIELDS

STORED = ("phone-unparseable", "phone-country-mismatch", "email-domain-mismatch")
"""Problems only the projection can judge (phonenumbers, URL parsing): read from its row."""
TOP_PROBLEMS = 50


def _col(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def _present(column: str) -> sql.Composable:
    """What ledger/quality.py's `_value` calls present: a non-empty string."""
    return sql.SQL("(nullif({}, '') IS NOT NULL)").format(_col(column))


def _stored(problem: str) -> sql.Composable:
    return sql.SQL("coalesce({} = ANY(quality_problems), false)").format(sql.Literal(problem))


def _sum(parts: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("(0 + {})").format(sql.SQL(" + ").join(parts)) if parts else sql.SQL("0")


class Rescoring:
    """SQL expressions over a row of `leads`: its score, components and problems now."""

    def __init__(self, quality: WorkspaceQuality, now: datetime) -> None:
        required = quality.policy.required_fields
        self.required = tuple(required)
        missing = [
            sql.SQL("(CASE WHEN {} THEN 0 ELSE 1 END)").format(_present(f)) for f in required
        ]
        self.completeness: sql.Composable = (
            sql.SQL("(1 - {}::float8 / {})").format(_sum(missing), sql.Literal(len(required)))
            if required else sql.SQL("1.0::float8")
        )
        email_values = sql.SQL(" ").join(
            sql.SQL("WHEN {} THEN {}::float8").format(sql.Literal(k), sql.Literal(v))
            for k, v in EMAIL_VALIDITY.items()
        )
        email_status = sql.SQL("coalesce(email_status, 'valid')")
        checks = [
            sql.SQL("(CASE WHEN {} THEN (CASE {} {} ELSE 0.0 END) END)").format(
                _present("email"), email_status, email_values),
            sql.SQL("(CASE WHEN {} THEN (CASE WHEN {} THEN 0.0 ELSE 1.0 END) END)").format(
                _present("phone"), _stored("phone-unparseable")),
        ]
        problems = [
            *(sql.SQL("(CASE WHEN NOT {} THEN {} END)").format(
                _present(f), sql.Literal(f"missing:{f}")) for f in required),
            sql.SQL("(CASE WHEN {} AND {} <> 'valid' THEN 'email-' || {} END)").format(
                _present("email"), email_status, email_status),
            sql.SQL("(CASE WHEN {} AND {} THEN 'phone-unparseable' END)").format(
                _present("phone"), _stored("phone-unparseable")),
        ]
        for field, vocabulary_name in VOCABULARY_FIELDS.items():
            vocabulary = quality.vocabularies.get(vocabulary_name)
            if vocabulary is None:
                continue
            inside = sql.SQL("{} = ANY({}::text[])").format(
                _col(field), sql.Literal(list(vocabulary.codes)))
            checks.append(sql.SQL("(CASE WHEN {} THEN (CASE WHEN {} THEN 1.0 ELSE 0.0 END) END)")
                          .format(_present(field), inside))
            problems.append(sql.SQL("(CASE WHEN {} AND NOT {} THEN {} END)").format(
                _present(field), inside, sql.Literal(f"unmapped:{field}")))
        # sum(checks) / len(checks) as Python adds them: in order, absent checks left out.
        total = _sum([sql.SQL("coalesce({}, 0.0)").format(c) for c in checks])
        count = _sum([sql.SQL("({} IS NOT NULL)::int").format(c) for c in checks])
        self.validity: sql.Composable = sql.SQL(
            "coalesce({} / nullif({}, 0), 1.0::float8)").format(total, count)
        self.consistency: sql.Composable = sql.SQL("coalesce(quality_consistency, 1.0::float8)")
        age = sql.SQL(
            "greatest(extract(epoch FROM ({}::timestamptz - updated_at))::float8 / 86400, 0)"
        ).format(sql.Literal(now))
        self.freshness: sql.Composable = sql.SQL(
            "(CASE WHEN {age} <= {fresh} THEN 1.0::float8 "
            "ELSE greatest(0.0::float8, 1 - ({age} - {fresh}) / {decay}::float8) END)"
        ).format(age=age, fresh=sql.Literal(FRESH_DAYS), decay=sql.Literal(DECAY_DAYS))
        problems += [
            *(sql.SQL("(CASE WHEN {} THEN {} END)").format(_stored(p), sql.Literal(p))
              for p in STORED[1:]),
            sql.SQL("(CASE WHEN {} > {} THEN 'stale' END)").format(age, sql.Literal(FRESH_DAYS)),
        ]
        self.problems: sql.Composable = sql.SQL(
            "array_remove(ARRAY[{}]::text[], NULL)").format(sql.SQL(", ").join(problems))
        parts = {"completeness": self.completeness, "validity": self.validity,
                 "consistency": self.consistency, "freshness": self.freshness}
        weighted = _sum([sql.SQL("{}::float8 * {}").format(sql.Literal(WEIGHTS[k]), v)
                         for k, v in parts.items()])
        # Half up, as score_quality rounds.
        self.score: sql.Composable = sql.SQL("floor({} + 0.5)::int").format(weighted)

    def scored(self, workspace: str) -> sql.Composable:
        """The workspace's active leads, each with its score, components and problems now.

        Every value is a literal and the statement is sent without parameters, so a `%` in a
        vocabulary code can never be taken for a placeholder."""
        return sql.SQL(
            "SELECT {cols}, {score} AS score_now, {problems} AS problems_now, "
            "{c} AS completeness_now, {v} AS validity_now, {k} AS consistency_now, "
            "{f} AS freshness_now FROM leads WHERE workspace = {workspace} "
            "AND status = 'active'"
        ).format(
            cols=sql.SQL(", ").join(_col(c) for c in COLUMNS), score=self.score,
            problems=self.problems, c=self.completeness, v=self.validity, k=self.consistency,
            f=self.freshness, workspace=sql.Literal(workspace),
        )


class Summary(msgspec.Struct, frozen=True):
    leads: int
    average_score: float | None
    averages: dict[str, float | None]
    buckets: list[tuple[int, int]]
    """(bucket 0–9, count): bucket b holds scores 10b to 10b + 9 (the last, 90–100)."""
    problems: list[tuple[str, int]]


_SUMMARY = """
WITH scored AS MATERIALIZED ({scored})
SELECT
  (SELECT count(*) FROM scored),
  (SELECT avg(score_now)::float8 FROM scored),
  (SELECT avg(completeness_now) FROM scored),
  (SELECT avg(validity_now) FROM scored),
  (SELECT avg(consistency_now) FROM scored),
  (SELECT avg(freshness_now) FROM scored),
  (SELECT coalesce(json_agg(json_build_array(b, n) ORDER BY b), '[]')
     FROM (SELECT least(score_now / 10, 9) AS b, count(*) AS n FROM scored GROUP BY 1) x),
  (SELECT coalesce(json_agg(json_build_array(p, n) ORDER BY n DESC, p), '[]')
     FROM (SELECT p, count(*) AS n FROM scored, unnest(problems_now) AS p
           GROUP BY p ORDER BY 2 DESC, 1 LIMIT {top}) y)
"""


async def summarize(
    conn: psycopg.AsyncConnection, workspace: str, rescoring: Rescoring
) -> Summary:
    query = sql.SQL(_SUMMARY).format(scored=rescoring.scored(workspace),
                                     top=sql.Literal(TOP_PROBLEMS))
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    count, average, c, v, k, f, buckets, problems = row
    return Summary(
        leads=count, average_score=average,
        averages={"completeness": c, "validity": v, "consistency": k, "freshness": f},
        buckets=[(b, n) for b, n in buckets], problems=[(p, n) for p, n in problems],
    )


class ProblemCursor(msgspec.Struct, frozen=True, array_like=True):
    query: str
    score: int
    lead_id: str


_FAILING = """
WITH scored AS ({scored})
SELECT {cols}, score_now FROM scored
WHERE {problem} = ANY(problems_now) AND (score_now, lead_id) > ({score}, {lead_id})
ORDER BY score_now, lead_id
LIMIT {limit}
"""


async def failing(
    conn: psycopg.AsyncConnection, workspace: str, rescoring: Rescoring, problem: str,
    *, limit: int, cursor: str | None,
) -> tuple[list[LeadRow], str | None]:
    """The active leads failing `problem`, worst score first, a keyset page at a time."""
    fingerprint = query_hash(workspace, "quality-problem", problem)
    after: Any = (-1, "")
    if cursor:
        decoded = decode_cursor(cursor, ProblemCursor)
        if decoded.query != fingerprint:
            raise ProblemError(
                "bad-request", "the cursor belongs to a different query",
                errors=[FieldError(field="query:cursor", message="use next_cursor with the "
                                   "same problem")],
            )
        after = (decoded.score, decoded.lead_id)
    query = sql.SQL(_FAILING).format(
        scored=rescoring.scored(workspace), cols=sql.SQL(", ").join(_col(c) for c in COLUMNS),
        problem=sql.Literal(problem), score=sql.Literal(after[0]),
        lead_id=sql.Literal(after[1]), limit=sql.Literal(limit + 1),
    )
    cur = await conn.execute(query)
    fetched = await cur.fetchall()
    rows = [LeadRow(*values[:-1]) for values in fetched]
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(ProblemCursor(fingerprint, fetched[limit - 1][-1],
                                                  rows[-1].lead_id))
    return rows, next_cursor
