"""Filtering and sorting a million leads by custom attributes: with the attribute indexes
(ledger/attribute_definitions.py) against the same queries without them.

A scratch database is migrated (ledger/migrations.py) and its `leads` read model filled in SQL
(INSERT ... SELECT generate_series) with 1,000,000 rows: 90% in the workspace queried, the rest
in nine others, each with a jsonb `attributes` of an integer (seats; 10% of leads lack it), an
enum (plan), a string (region), a datetime and a near-unique string (account_id). The queryable
attributes' indexes are built with the statements the API runs (`index_statement`). Each query
is `list_leads` itself, the function behind GET /v1/leads (limit 50); its first part's plan is
recorded with EXPLAIN (ANALYZE, BUFFERS) from `first_page_query`, the statement it runs. The
baseline is the same queries on the same table after the attribute indexes are dropped (the
table's other indexes stay), in the same run.

    python -m bench.bench_attribute_query [--rows 1000000] [--runs 20] [--from-json]

Uses LEADLEDGER_BENCH_DATABASE_URL, else the system PostgreSQL at
postgresql://postgres@localhost:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    BenchServer,
    Figure,
    Results,
    compare,
    describe_machine,
    load_average,
    machine_markdown,
    now_iso,
    prefer_system_postgres,
    quiet_logs,
    rerender,
    update_results_md,
    write_results,
)

WORKSPACE = "acme"
LIMIT = 50
DEFINITIONS: dict[str, Any] = {}  # filled in main (imports wait for quiet_logs)

FILL = """
INSERT INTO leads (workspace, lead_id, version, status, stage, first_name, last_name, email,
                   company, created_at, updated_at, attributes)
SELECT CASE WHEN i %% 10 = 0 THEN 'ws' || (i %% 9) ELSE %(workspace)s END,
       'lead-' || lpad(i::text, 8, '0'), 1, 'active', 'lead', 'Ada', 'Lovelace' || i,
       'ada' || i || '@example.com', 'Company ' || (i %% 5000),
       now() - make_interval(secs => i), now() - make_interval(secs => i),
       jsonb_strip_nulls(jsonb_build_object(
           'seats', CASE WHEN i %% 10 = 3 THEN NULL ELSE (i::bigint * 7919) %% 5000 + 1 END,
           'plan', (ARRAY['free', 'free', 'free', 'pro', 'pro', 'enterprise'])[i %% 6 + 1],
           'region', (ARRAY['emea', 'apac', 'amer', 'latam', 'mena', 'anz'])[(i / 7) %% 6 + 1],
           'signed_at', to_char(timestamp '2024-01-01' + make_interval(mins => i),
                                'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'account_id', 'acc-' || (i %% 100000)))
FROM generate_series(1, %(rows)s) AS i
"""

QUERIES: list[tuple[str, str, str]] = [
    # (name, query string as a client sends it, sort)
    ("equality, selective (account_id), sort -created_at", "attr.account_id=acc-4242",
     "-created_at"),
    ("equality (plan, 1 in 6), sort attr.plan", "attr.plan=enterprise", "attr.plan"),
    ("range (seats 1000..1200), sort attr.seats", "attr.seats.gte=1000&attr.seats.lte=1200",
     "attr.seats"),
    ("range, one-sided (seats >= 4900), sort -attr.seats", "attr.seats.gte=4900",
     "-attr.seats"),
    ("set membership (region in emea, apac), sort attr.seats",
     "attr.region.in=emea,apac", "attr.seats"),
    ("set membership (region in emea, apac), sort attr.region",
     "attr.region.in=emea,apac", "attr.region"),
    ("no filter, sort -attr.seats", "", "-attr.seats"),
]


def _definitions() -> dict[str, Any]:
    from schema.attributes import AttributeDefinition as D

    return {d.name: d for d in (
        D(name="seats", type="integer", queryable=True),
        D(name="plan", type="enum", values=("free", "pro", "enterprise"), queryable=True),
        D(name="region", type="string", queryable=True),
        D(name="account_id", type="string", queryable=True),
    )}


def _filter(query: str) -> Any:
    from api.http.lead_queries import LeadFilter, attribute_conditions

    params = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]
    return LeadFilter(attributes=attribute_conditions(params, DEFINITIONS))


async def _measure(url: str, runs: int) -> list[dict[str, Any]]:
    """Each query: its plan (EXPLAIN ANALYZE, BUFFERS) and `runs` timings of list_leads."""
    from api.http.lead_queries import first_page_query, list_leads, sort_key

    measured = []
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for name, query, sort in QUERIES:
            f = _filter(query)
            statement, values = first_page_query(
                WORKSPACE, f, sort_key(sort, DEFINITIONS), LIMIT + 1)
            cur = await conn.execute(
                b"EXPLAIN (ANALYZE, BUFFERS) " + statement.as_bytes(conn), values)
            plan = [r[0] for r in await cur.fetchall()]
            await list_leads(conn, WORKSPACE, f, sort=sort, limit=LIMIT, cursor=None,
                             definitions=DEFINITIONS)  # warm
            samples, rows = [], 0
            for _ in range(runs):
                started = time.perf_counter()
                found, _ = await list_leads(conn, WORKSPACE, f, sort=sort, limit=LIMIT,
                                            cursor=None, definitions=DEFINITIONS)
                samples.append((time.perf_counter() - started) * 1000)
                rows = len(found)
            measured.append({"name": name, "query": query, "sort": sort, "plan": plan,
                             "samples": [round(s, 3) for s in samples], "rows": rows})
            print(f"{name}: {statistics.median(samples):.2f} ms ({rows} rows)", flush=True)
    return measured


def _fill(url: str, rows: int) -> dict[str, float]:
    from ledger.attribute_definitions import index_statement

    timings = {}
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute(FILL, {"workspace": WORKSPACE, "rows": rows})
        timings["fill_s"] = time.perf_counter() - started
        conn.execute("VACUUM ANALYZE leads")
        for definition in DEFINITIONS.values():
            started = time.perf_counter()
            conn.execute(index_statement(definition, concurrently=True))
            timings[f"index_{definition.name}_s"] = time.perf_counter() - started
        conn.execute("ANALYZE leads")
    return {k: round(v, 2) for k, v in timings.items()}


def _drop_indexes(url: str) -> None:
    from ledger.attribute_definitions import index_name

    with psycopg.connect(url, autocommit=True) as conn:
        for definition in DEFINITIONS.values():
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index_name(definition))))
        conn.execute("ANALYZE leads")


def _scan_kind(plan: list[str]) -> str:
    text = "\n".join(plan)
    for kind in ("Index Only Scan", "Index Scan Backward", "Index Scan", "Bitmap Index Scan",
                 "Seq Scan"):
        if kind in text:
            return kind
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--from-json", action="store_true",
                        help="only rewrite the RESULTS.md section from the JSON")
    args = parser.parse_args()
    if args.from_json:
        rerender("attribute_query", markdown)
        return
    prefer_system_postgres()
    quiet_logs()
    from ledger.migrations import migrate

    DEFINITIONS.update(_definitions())
    started = load_average()
    with BenchServer() as pg:
        url = pg.create_database("bench_attribute_query")
        asyncio.run(migrate(url))
        timings = _fill(url, args.rows)
        print("filled", timings, flush=True)
        indexed = asyncio.run(_measure(url, args.runs))
        _drop_indexes(url)
        baseline = asyncio.run(_measure(url, args.runs))
        machine = describe_machine(pg)
    figures, plans = [], {}
    for with_index, without in zip(indexed, baseline, strict=True):
        base = Figure(name=f"{without['name']} [no index]", writers=1, unit="ms",
                      value=statistics.median(without["samples"]), samples=without["samples"])
        figure = Figure(name=with_index["name"], writers=1, unit="ms",
                        value=statistics.median(with_index["samples"]),
                        samples=with_index["samples"])
        figures.append(compare(figure, base))
        figures.append(base)
        plans[with_index["name"]] = {
            "query": f"{with_index['query']}&sort={with_index['sort']}".lstrip("&"),
            "rows": with_index["rows"], "indexed_plan": with_index["plan"],
            "baseline_plan": without["plan"], "indexed_scan": _scan_kind(with_index["plan"]),
            "baseline_scan": _scan_kind(without["plan"]),
        }
    results = Results(
        benchmark="attribute_query", date=now_iso(),
        command="python -m bench.bench_attribute_query " + " ".join(sys.argv[1:]),
        settings={"rows": args.rows, "workspace_share": 0.9, "runs": args.runs,
                  "limit": LIMIT, "setup": timings},
        machine=machine, figures=figures,
        load_average={"start": started, "end": load_average()},
        details={"plans": plans},
        notes=[("ratio = indexed median / baseline median (lower is better: the share of the "
               "baseline's time the indexed query takes)")],
    )
    path = write_results(results)
    update_results_md("attribute_query", markdown(results))
    print(f"wrote {path}")


def markdown(results: Results) -> str:
    plans = results.details.get("plans", {})
    assert isinstance(plans, dict)
    lines = [
        "## Custom attribute queries (`bench/bench_attribute_query.py`)",
        "",
        f"{results.date}; {machine_markdown(results.machine)}.",
        "",
        (f"GET /v1/leads's `list_leads` on a `leads` table of {results.settings['rows']:,} rows "
        f"(90% in the queried workspace), limit {results.settings['limit']}, median of "
        f"{results.settings['runs']} runs; baseline: the same queries on the same table with "
        "the attribute indexes dropped (the table's other indexes stay). Plans (EXPLAIN "
        "ANALYZE, BUFFERS) are in `results/attribute_query.json`."),
        "",
        "| query | indexed (ms) | plan | no index (ms) | plan | indexed / no index |",
        "|---|---:|---|---:|---|---:|",
    ]
    for figure in results.figures:
        if figure.baseline is None:
            continue
        plan = plans.get(figure.name, {})
        lines.append(
            f"| `{plan.get('query', '')}` ({figure.name}) | {figure.value:.2f} | "
            f"{plan.get('indexed_scan', '')} | {figure.baseline_value or 0:.1f} | "
            f"{plan.get('baseline_scan', '')} | {figure.ratio or 0:.4f} |")
    setup = results.settings.get("setup", {})
    if isinstance(setup, dict) and setup:
        builds = ", ".join(f"{k.removeprefix('index_').removesuffix('_s')} {v:.1f} s"
                           for k, v in setup.items() if k.startswith("index_"))
        lines += ["", (f"Fill {setup.get('fill_s', 0):.0f} s; index builds (CONCURRENTLY): "
                  f"{builds}.")]
    if results.notes:
        lines += ["", "Reading:", "", *(f"- {note}" for note in results.notes)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
