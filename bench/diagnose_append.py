"""Where an append's time goes: the evidence behind bench/RESULTS.md's reading of bench_append.

    python -m bench.diagnose_append         # from the repository root; ~4 minutes

1. Server side, no Python in the loop (pgbench, medians of interleaved repetitions): a raw
   INSERT of the ledger's row; the same INSERT plus pg_notify in one transaction;
   `ledger_append_one()` (the PL/pgSQL function EventStore.append calls for one event at any
   version, or with identity keys to move), and the same with its `pg_notify` removed (a copy
   made in the benchmark's own database from pg_get_functiondef, an experiment only); and the
   plain statement EventStore.append sends for one event at a known version, the common case.
   Then the same through Python: raw insert and EventStore.append.
2. What the backends wait on while EventStore.append runs at the largest writer count,
   against raw inserts: pg_stat_activity and ungranted pg_locks, sampled every 5 ms.
3. Client CPU per single-event append, piece by piece (timeit, no server).

Writes bench/results/append_diagnosis.json and the append-diagnosis section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import threading
import time
import timeit
import uuid
from pathlib import Path

import msgspec
import psycopg
from psycopg.adapt import Transformer
from rich.console import Console
from rich.table import Table

from bench.append_contenders import (
    META,
    META_SQL,
    WORKSPACE,
    LedgerAppend,
    PgbenchScript,
    RawInsert,
    _bytea_literal,
    create_raw_table,
    lead_created,
    pgbench_insert_sql,
    row_template,
)
from bench.common import (
    BenchServer,
    Figure,
    Results,
    compare,
    describe_machine,
    fmt_rate,
    fmt_ratio,
    load_average,
    machine_markdown,
    now_iso,
    quiet_logs,
    update_results_md,
    write_results,
    writers_label,
)
from bench.measure import RetryBudget, Sample, measure_guarded, median
from ledger.crypto import Keyring, generate_master_key, parse_master_key
from ledger.mapper import event_aad, to_stored
from ledger.migrations import migrate
from ledger.store import _APPEND_AT_VERSION, _APPEND_ONE, NewEvent

_NOTIFY = "PERFORM pg_notify('leadledger_events', '');"


def _definition(conn: psycopg.Connection, function: str) -> str:
    return conn.execute(f"SELECT pg_get_functiondef('{function}'::regproc)").fetchone()[0]


def _copy_without_notify(conn: psycopg.Connection, prefix: str = "") -> None:
    """`ledger_after_append` without its pg_notify, as `<prefix>ledger_after_append`, and, with
    a prefix, `<prefix>ledger_append_one` calling it (the ledger's own functions untouched)."""
    after = _definition(conn, "ledger_after_append")
    if _NOTIFY not in after:
        raise RuntimeError("ledger_after_append no longer calls pg_notify as expected here")
    rename = f"FUNCTION public.{prefix}ledger_after_append("
    conn.execute(after.replace("FUNCTION public.ledger_after_append(", rename)
                 .replace(_NOTIFY, ""))
    if prefix:
        one = _definition(conn, "ledger_append_one")
        conn.execute(one.replace("FUNCTION public.ledger_append_one(",
                                 f"FUNCTION public.{prefix}ledger_append_one(")
                     .replace("PERFORM ledger_after_append(",
                              f"PERFORM {prefix}ledger_after_append("))


def server_variants(url: str) -> list[PgbenchScript]:
    single = row_template(1)
    with psycopg.connect(url, autocommit=True) as conn:
        create_raw_table(conn, "diag_raw")
        create_raw_table(conn, "diag_raw_notify")
        _copy_without_notify(conn, prefix="diag_")
    key = _bytea_literal(os.urandom(60))  # a wrapped data key is 60 bytes

    def call(function: str) -> str:
        return (f"SELECT * FROM {function}('{WORKSPACE}', 'lead_' || md5(random()::text),"
                f" 0, gen_random_uuid(), '{single.types[0]}',"
                f" {single.schema_versions[0]}::smallint, {_bytea_literal(single.data[0])},"
                f" {_bytea_literal(single.personal[0])}, {META_SQL}, {key});\n")

    # EventStore.append's own statement for one event at a known version, its parameters as
    # pgbench variables (a random stream id per run, the same in every place it appears).
    literals = {
        "event_id": "gen_random_uuid()", "workspace": f"'{WORKSPACE}'",
        "stream_id": "('lead_' || :n)", "expected": "0", "type": f"'{single.types[0]}'",
        "schema_version": str(single.schema_versions[0]),
        "data": _bytea_literal(single.data[0]), "personal": _bytea_literal(single.personal[0]),
        "metadata": f"({META_SQL})::text", "new_key": key,
        "claim_kinds": "NULL", "claim_hashes": "NULL",
    }
    statement = _APPEND_AT_VERSION
    for name, literal in literals.items():
        statement = statement.replace(f"%({name})b", literal)
    if "%(" in statement:
        raise RuntimeError("EventStore's append statement has a parameter this copy lacks")
    statement = "\\set n random(1, 9000000000000000000)\n" + " ".join(statement.split()) + ";\n"
    return [
        PgbenchScript("raw insert", url, pgbench_insert_sql("diag_raw", single)),
        PgbenchScript("raw insert + pg_notify", url,
                      "BEGIN;\n" + pgbench_insert_sql("diag_raw_notify", single)
                      + "SELECT pg_notify('leadledger_events', '');\nCOMMIT;\n"),
        PgbenchScript("ledger_append_one()", url, call("ledger_append_one")),
        PgbenchScript("ledger_append_one() without pg_notify", url,
                      call("diag_ledger_append_one")),
        PgbenchScript("EventStore.append's statement (one event at a version)", url, statement),
    ]


def python_variants(url: str) -> list[LedgerAppend | RawInsert]:
    """The same through the whole Python path. (Until the single-event append became one plain
    statement, a third variant ran EventStore.append against a database whose
    ledger_after_append lost its pg_notify; that append no longer calls the function.)"""
    return [
        RawInsert("raw insert (python)", url, "diag_raw_python", row_template(1)),
        LedgerAppend("EventStore.append (python)", url, 1),
    ]


def sample_waits(url: str, contender: LedgerAppend | RawInsert, writers: int,
                 seconds: float) -> tuple[Sample, dict[str, float], dict[str, float]]:
    """Runs the contender while sampling what its backends wait on; returns shares."""
    waits: collections.Counter[str] = collections.Counter()
    locks: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def sampler() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop.is_set():
                for kind, event, state in conn.execute(
                    "SELECT coalesce(wait_event_type, 'CPU'), coalesce(wait_event, '-'), state"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid() AND datname = current_database()"
                ):
                    waits[f"{kind}:{event} ({state})"] += 1
                for locktype, cls, objid, mode in conn.execute(
                    "SELECT locktype, coalesce(classid::regclass::text, '-'),"
                    " coalesce(objid::text, '-'), mode FROM pg_locks WHERE NOT granted"
                ):
                    locks[f"{locktype} {cls} {objid} {mode}"] += 1
                time.sleep(0.005)

    thread = threading.Thread(target=sampler)
    thread.start()
    try:
        sample = contender.measure(writers, 1.0, seconds)
    finally:
        stop.set()
        thread.join()
    total = sum(waits.values()) or 1
    return (sample, {k: round(v / total, 3) for k, v in waits.most_common(6)},
            {k: round(v / total, 3) for k, v in locks.most_common(3)})


def client_costs(url: str) -> dict[str, float]:
    """Microseconds of client CPU per single-event append, for each piece EventStore does.
    Parameters are adapted as `conn.execute` does: a new cursor, so a new Transformer, on the
    connection's adapters, each time."""
    keyring = Keyring(parse_master_key(generate_master_key()))
    lead_id, event_id = f"lead_{uuid.uuid4().hex}", str(uuid.uuid4())
    event = lead_created(lead_id, 7)
    key = keyring.new_key(WORKSPACE, lead_id)
    stored = to_stored(event, key, event_aad(WORKSPACE, lead_id, event_id))
    template = row_template(1)
    params = (WORKSPACE, lead_id, 0, event_id, stored.event_type, stored.schema_version,
              stored.data, stored.personal, '{"source":"api"}', key.wrapped, None, None, None,
              None)
    named = {"event_id": event_id, "workspace": WORKSPACE, "stream_id": lead_id, "expected": 0,
             "type": stored.event_type, "schema_version": stored.schema_version,
             "data": stored.data, "personal": stored.personal, "metadata": '{"source":"api"}',
             "new_key": key.wrapped, "claim_kinds": None, "claim_hashes": None}
    raw_params = (event_id, WORKSPACE, lead_id, template.types[0], 1, template.data[0],
                  template.personal[0], '{"source":"api"}')
    raw_query = ("INSERT INTO t (event_id, workspace, stream_id, version, event_type,"
                 " schema_version, data, personal, metadata)"
                 " VALUES (%s, %s, %s, 1, %s, %s, %s, %s, %s::jsonb)")
    text_query = _APPEND_ONE.replace("%b", "%s")

    from psycopg._queries import PostgresQuery

    conn = psycopg.connect(url, autocommit=True)

    def convert(query: str, args: tuple[object, ...] | dict[str, object]) -> None:
        PostgresQuery(Transformer(conn)).convert(query, args)

    pieces = {
        "LeadCreated + NewEvent (uuid4)": lambda: NewEvent(lead_created(lead_id, 7)),
        "Keyring.new_key (AES key + wrap)": lambda: keyring.new_key(WORKSPACE, lead_id),
        "mapper.to_stored (encode + encrypt PII)":
            lambda: to_stored(event, key, event_aad(WORKSPACE, lead_id, event_id)),
        "metadata encode": lambda: __import__("msgspec").json.encode(META).decode(),
        "psycopg params, the single-event statement (binary, as store.py)":
            lambda: convert(_APPEND_AT_VERSION, named),
        "psycopg params, ledger_append_one (binary)":
            lambda: convert(_APPEND_ONE, params),
        "psycopg params, ledger_append_one (the same as text)":
            lambda: convert(text_query, params),
        "psycopg params, raw insert (scalars)": lambda: convert(raw_query, raw_params),
    }
    out = {}
    try:
        for label, fn in pieces.items():
            out[label] = round(min(timeit.repeat(fn, number=5000, repeat=3)) / 5000 * 1e6, 1)
    finally:
        conn.close()
    return out


async def pool_checkout_us(url: str) -> float:
    from ledger.database import open_pool

    pool = await open_pool(url, min_size=1, max_size=1, name="diag")
    try:
        start = time.process_time()
        for _ in range(5000):
            async with pool.connection():
                pass
        return round((time.process_time() - start) / 5000 * 1e6, 1)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,4,16")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--from-json", metavar="PATH",
                        help="measure nothing: rewrite the RESULTS.md section from a results file")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = msgspec.json.decode(Path(args.from_json).read_bytes(), type=Results)
        details = saved.details
        update_results_md("append-diagnosis", markdown(
            saved, details["waits"], details["client_cpu_us_per_append"]))  # type: ignore[arg-type]
        return 0
    writer_counts = [int(w) for w in args.writers.split(",")]
    console = Console(width=160)
    quiet_logs()
    load_start = load_average()
    samples: dict[tuple[str, int], list[Sample]] = {}
    budget = RetryBudget(40)
    with BenchServer() as server:
        machine = describe_machine(server)
        url = server.create_database("bench_append_diagnosis")
        asyncio.run(migrate(url))
        variants = [*server_variants(url), *python_variants(url)]
        try:
            for writers in writer_counts:
                for _ in range(args.repeat):
                    for variant in variants:
                        sample, _ = measure_guarded(
                            lambda v=variant, w=writers: v.measure(w, args.warmup,
                                                                   args.duration),
                            server.own_pids(), max_foreign=0.25, retries=1, budget=budget)
                        samples.setdefault((variant.name, writers), []).append(sample)
                        console.log(f"{writers:>2} writers  {variant.name:<46}"
                                    f" {sample.rate:>9,.0f} tx/s  other load"
                                    f" {sample.foreign_cores} cores")
        finally:
            for variant in variants:
                if isinstance(variant, PgbenchScript):
                    variant.close()
        most = writer_counts[-1]
        waits = {}
        for name, contender in (("EventStore.append", LedgerAppend("ledger", url, 1)),
                                ("raw insert", RawInsert("raw", url, "diag_raw_py",
                                                         row_template(1)))):
            sample, states, locks = sample_waits(url, contender, most, 4.0)
            waits[name] = {"writers": most, "rate": round(sample.rate, 1),
                           "backend_states": states, "ungranted_locks": locks}
            console.log(f"{name} at {most} writers: {sample.rate:,.0f}/s")
        checkout = asyncio.run(pool_checkout_us(url))
        costs = client_costs(url) | {
            "AsyncConnectionPool.connection() checkout + return": checkout}
    figures = []
    for (name, writers), values in samples.items():
        figure = Figure(name=name, writers=writers, unit="tx/s",
                        value=median([v.rate for v in values]),
                        samples=[round(v.rate, 1) for v in values],
                        foreign_cores=[v.foreign_cores for v in values])
        base = "raw insert (python)" if name.endswith("(python)") else "raw insert"
        raw = samples.get((base, writers))
        baseline = None if raw is None or name == base else Figure(
            name=base, writers=writers, unit="tx/s", value=median([v.rate for v in raw]),
            samples=[])
        figures.append(compare(figure, baseline))
    print_report(figures, waits, costs, console)
    if args.no_write:
        return 0
    results = Results(
        benchmark="append_diagnosis", date=now_iso(),
        command=" ".join([*(["nice", "-n", str(os.nice(0))] if os.nice(0) else []),
                          "python -m bench.diagnose_append", *(argv or sys.argv[1:])]),
        settings={"writers": writer_counts, "repeat": args.repeat, "warmup": args.warmup,
                  "duration": args.duration, "niceness": os.nice(0)},
        machine=machine, figures=figures,
        load_average={"start": load_start, "end": load_average()},
        details={"waits": waits, "client_cpu_us_per_append": costs},
    )
    write_results(results)
    update_results_md("append-diagnosis", markdown(results, waits, costs))
    return 0


def print_report(figures: list[Figure], waits: dict[str, dict[str, object]],
                 costs: dict[str, float], console: Console) -> None:
    table = Table(title="appends/s: pgbench, or through Python (ratio to raw insert alike)")
    counts = sorted({f.writers for f in figures})
    table.add_column("variant")
    for w in counts:
        table.add_column(writers_label(w), justify="right")
    by = {(f.name, f.writers): f for f in figures}
    for name in dict.fromkeys(f.name for f in figures):
        table.add_row(name, *(_cell(by.get((name, w))) for w in counts))
    console.print(table)
    for name, info in waits.items():
        console.print(f"[bold]{name}[/] at {info['writers']} writers, {fmt_rate(info['rate'])}/s")
        for label, share in {**info["backend_states"], **info["ungranted_locks"]}.items():
            console.print(f"    {share:6.1%}  {label}")
    costs_table = Table(title="client CPU per single-event append (µs)")
    costs_table.add_column("piece")
    costs_table.add_column("µs", justify="right")
    for label, value in costs.items():
        costs_table.add_row(label, f"{value:.1f}")
    console.print(costs_table)


def _cell(f: Figure | None) -> str:
    if f is None:
        return "-"
    return fmt_rate(f.value) + (f" ({fmt_ratio(f.ratio)})" if f.ratio is not None else "")


def markdown(results: Results, waits: dict[str, dict[str, object]],
             costs: dict[str, float]) -> str:
    counts = sorted({f.writers for f in results.figures})
    by = {(f.name, f.writers): f for f in results.figures}
    others = [c for f in results.figures for c in f.foreign_cores if c is not None]
    lines = [
        "## Append diagnosis (`bench/diagnose_append.py`)", "",
        f"- **Date:** {results.date}; load average at start {results.load_average['start']};"
        f" other work took a median {median(others):.2f} cores during the samples (each"
        " figure's are in the JSON)" if others else f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        f"- **Reproduce:** `{results.command}`", "",
        ("Appends/s, median of interleaved repetitions, ratio to the raw insert measured the"
         " same way: first with no Python in the loop (pgbench), then through psycopg"
         " (`(python)`):"), "",
        "| variant | " + " | ".join(writers_label(w) for w in counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    for name in dict.fromkeys(f.name for f in results.figures):
        lines.append(f"| {name} | " + " | ".join(_cell(by.get((name, w))) for w in counts)
                     + " |")
    lines += ["", "What the backends wait on (share of samples, pg_stat_activity every 5 ms):",
              ""]
    for name, info in waits.items():
        states = ", ".join(f"{k} {v:.0%}" for k, v in info["backend_states"].items())
        locks = ", ".join(f"`{k}` {v:.0%}" for k, v in info["ungranted_locks"].items())
        lines.append(f"- {name}, {info['writers']} writers, {fmt_rate(info['rate'])}/s:"
                     f" {states}; ungranted locks: {locks or 'none'}")
    lines += ["", "Client CPU per single-event append, piece by piece (µs):", "",
              "| piece | µs |", "|---|---:|"]
    lines += [f"| {label} | {value:.1f} |" for label, value in costs.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
