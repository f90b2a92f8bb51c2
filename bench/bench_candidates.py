"""What the fuzzy candidate query costs PostgreSQL per create, while the read model grows.

A scratch database is migrated, and a writer thread fills its `leads` read model the way the
pipeline does: a lead every 10 ms (bench_pipeline's names: one of 18 first names, one of 16
last names plus three random letters), then four later versions of the same row (the pipeline
writes each lead about five times: created, enriched, scored, assigned, task). Meanwhile
`--readers` connections each ask for the candidates of a new lead every `--readers` x 10 ms,
and the benchmark reads the CPU time of their PostgreSQL backends (/proc) over the run.

  * the query: `projections/candidates.py` (`lead_candidates`: whole-name trigram similarity
    >= ledger.fuzzy.NAME_SIMILARITY, best first, or the same phone);
  * baseline, same run, same database: the query it replaced (last name `%` at pg_trgm's 0.3,
    or the same phone, unordered, LIMIT 50), with its GIN index built again for it.

Both run on the same table at the same time, on separate connections, so both see the same
concurrent writes. PostgreSQL must run on this machine (the backends' CPU is read from /proc).

    python -m bench.bench_candidates [--leads 1500] [--readers 1,4] [--from-json]

Uses LEADLEDGER_BENCH_DATABASE_URL, else the system PostgreSQL at
postgresql://postgres@localhost:5432/postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import threading
import time

import msgspec
import psycopg

from bench.bench_pipeline import FIRST, LAST
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

WORKSPACE = "ws"
VERSIONS = 5
WRITE_EVERY_S = 0.01

BASELINE = """
SELECT lead_id, first_name, last_name, email, phone, company FROM leads
WHERE workspace = %(workspace)s AND status = 'active' AND lead_id <> %(lead_id)s
  AND ((%(last_name)s::text IS NOT NULL AND lower(last_name) %% lower(%(last_name)s::text))
       OR (%(phone)s::text IS NOT NULL AND phone = %(phone)s::text))
LIMIT 50
"""
"""projections/candidates.py before migration 0033 (with its index, leads_last_name_trgm)."""


class Run(msgspec.Struct):
    query: str
    readers: int
    queries: int
    cpu_ms_per_query: float
    wall_ms_median: float


def _name(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST), rng.choice(LAST) + "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3))


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _writer(url: str, leads: int, done: threading.Event) -> None:
    rng = random.Random(1)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(leads):
            first, last = _name(rng)
            conn.execute(
                "INSERT INTO leads (workspace, lead_id, version, status, stage, created_at,"
                " updated_at, first_name, last_name, phone) VALUES (%s, %s, 1, 'active', 'lead',"
                " now(), now(), %s, %s, %s)",
                (WORKSPACE, f"L{i}", first, last, f"+1512{rng.randint(2000000, 9999999)}"))
            for version in range(2, VERSIONS + 1):
                conn.execute("UPDATE leads SET version = %s, updated_at = now()"
                             " WHERE workspace = %s AND lead_id = %s",
                             (version, WORKSPACE, f"L{i}"))
            time.sleep(WRITE_EVERY_S)
    done.set()


def _reader(url: str, query: str, seed: int, pause_s: float, done: threading.Event,
            out: dict[str, object]) -> None:
    from ledger.fuzzy import NAME_SIMILARITY, Person, full_name
    from projections.candidates import _CANDIDATES, LIMIT

    rng = random.Random(seed)
    walls: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        pid = conn.info.backend_pid
        time.sleep(0.5)  # the table has a few leads; connection setup is not measured
        cpu0 = _cpu_s(pid)
        while not done.is_set():
            first, last = _name(rng)
            person = Person(lead_id="new", first_name=first, last_name=last,
                            phone="+15125550000")
            params = {"workspace": WORKSPACE, "lead_id": "new", "name": full_name(person),
                      "phone": person.phone, "similarity": NAME_SIMILARITY, "limit": LIMIT,
                      "last_name": last}
            began = time.perf_counter()
            conn.execute(_CANDIDATES if query == "candidates" else BASELINE, params).fetchall()
            walls.append(time.perf_counter() - began)
            time.sleep(pause_s)
        out["cpu_s"] = _cpu_s(pid) - cpu0
    out["walls"] = walls


def one_run(url: str, leads: int, readers: int) -> list[Run]:
    """Both queries, `readers` connections each, against one growing table."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE leads")
    done = threading.Event()
    threads, outs = [], []
    for query in ("candidates", "baseline"):
        for r in range(readers):
            out: dict[str, object] = {"query": query}
            outs.append(out)
            threads.append(threading.Thread(target=_reader, args=(
                url, query, r, readers * WRITE_EVERY_S, done, out)))
    writer = threading.Thread(target=_writer, args=(url, leads, done))
    for thread in [writer, *threads]:
        thread.start()
    for thread in [writer, *threads]:
        thread.join()
    runs = []
    for query in ("candidates", "baseline"):
        mine = [o for o in outs if o["query"] == query]
        walls = [w for o in mine for w in o["walls"]]  # type: ignore[attr-defined]
        cpu = sum(float(o["cpu_s"]) for o in mine)  # type: ignore[arg-type]
        runs.append(Run(query=query, readers=readers, queries=len(walls),
                        cpu_ms_per_query=round(cpu * 1000 / max(len(walls), 1), 3),
                        wall_ms_median=round(statistics.median(walls) * 1000, 3)))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=1500, help="leads the writer adds")
    parser.add_argument("--readers", default="1,4", help="connections per query, per run")
    parser.add_argument("--from-json", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        rerender("candidates", markdown)
        return
    prefer_system_postgres()
    quiet_logs()
    from ledger.migrations import migrate

    started = load_average()
    runs: list[Run] = []
    with BenchServer() as pg:
        url = pg.create_database("bench_candidates")
        asyncio.run(migrate(url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE INDEX leads_last_name_trgm ON leads"
                         " USING gin (lower(last_name) gin_trgm_ops)")
        for readers in (int(r) for r in args.readers.split(",")):
            runs += one_run(url, args.leads, readers)
            print(runs[-2:], flush=True)
        machine = describe_machine(pg)
    figures = []
    for readers in sorted({r.readers for r in runs}):
        new, old = (next(r for r in runs if r.readers == readers and r.query == q)
                    for q in ("candidates", "baseline"))
        base = Figure(name=f"last-name query (before 0033), {readers} conn.", writers=readers,
                      unit="ms of PostgreSQL CPU per query", value=old.cpu_ms_per_query,
                      samples=[old.cpu_ms_per_query])
        figures.append(compare(Figure(
            name=f"lead_candidates, {readers} conn.", writers=readers,
            unit="ms of PostgreSQL CPU per query", value=new.cpu_ms_per_query,
            samples=[new.cpu_ms_per_query]), base))
        figures.append(base)
    results = Results(
        benchmark="candidates", date=now_iso(),
        command="python -m bench.bench_candidates " + " ".join(sys.argv[1:]),
        settings={"leads": args.leads, "versions_per_lead": VERSIONS,
                  "write_every_s": WRITE_EVERY_S, "readers": args.readers},
        machine=machine, figures=figures,
        load_average={"start": started, "end": load_average()},
        details={"runs": [msgspec.to_builtins(r) for r in runs]},
    )
    write_results(results)
    update_results_md("candidates", markdown(results))
    print(markdown(results))


def markdown(results: Results) -> str:
    runs = {(r["query"], r["readers"]): r for r in results.details["runs"]}  # type: ignore[index,union-attr]
    s = results.settings
    lines = [
        "## What the fuzzy candidate query costs (`bench/bench_candidates.py`)", "",
        f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        f"- **Reproduce:** `{results.command.strip()}`",
        (f"- **Method:** a writer adds {s['leads']:,} leads to the read model, one every "
         f"{float(s['write_every_s']) * 1000:.0f} ms (bench_pipeline's names), each written "
         f"{s['versions_per_lead']} times; meanwhile N connections per query ask for a new "
         "lead's candidates, and the CPU of their PostgreSQL backends is read from /proc. "
         "Baseline, same run and table: the last-name query that migration 0033 replaced, "
         "with its index."), "",
        ("| connections per query | lead_candidates (ms CPU / query) | last-name query (ms) "
         "| ratio | queries | median wall (ms) new / old |"),
        "|---:|---:|---:|---:|---:|---|",
    ]
    for figure in results.figures:
        if figure.baseline is None:
            continue
        new = runs[("candidates", figure.writers)]
        old = runs[("baseline", figure.writers)]
        lines.append(
            f"| {figure.writers} | {figure.value:.3f} | {figure.baseline_value or 0:.3f} | "
            f"{figure.ratio or 0:.2f} | {new['queries']} / {old['queries']} | "
            f"{new['wall_ms_median']:.2f} / {old['wall_ms_median']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
