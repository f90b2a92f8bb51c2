"""Append throughput: leadledger's EventStore.append against raw inserts, pgbench and a peer.

    python -m bench.bench_append            # from the repository root; 5 to 6 minutes

One run starts an embedded PostgreSQL in a temp dir (or uses LEADLEDGER_BENCH_DATABASE_URL),
then, at each number of concurrent writers, measures every contender `--repeat` times,
interleaved (repetition 1 of every contender, then repetition 2, ...) so that drift in the
machine hits them all alike; each figure is the median of its repetitions. It prints a table,
writes bench/results/append.json and rewrites the append section of bench/RESULTS.md.

Contenders (see bench/append_contenders.py): raw single-row INSERTs and 100-row INSERTs of the
ledger's own rows (the floor of what any Python writer can do), pgbench (the server's limit
with no Python), EventStore.append of one LeadCreated and of 100 events to new streams, and
the `eventsourcing` library recording one event per new aggregate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Protocol

import msgspec
import psycopg
from rich.console import Console
from rich.table import Table

from bench.append_contenders import (
    LedgerAppend,
    RawInsert,
    pgbench_insert,
    row_template,
)
from bench.common import (
    BenchServer,
    Comparison,
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
from ledger.migrations import migrate

RAW_TARGET = 0.6    # ledger appends/s over raw inserts/s, at every concurrency
PEER_TARGET = 3.0   # ledger events/s over the peer's events/s, at 16 writers
BATCH = 100

# name -> (what it is, the figure it is compared with)
DESCRIPTIONS = {
    "pgbench_insert": "pgbench, one INSERT per transaction (no Python)",
    "raw_insert": "psycopg async, one INSERT per append, autocommit",
    "raw_insert_threads": "psycopg sync in threads, one INSERT per append",
    "ledger_append": "EventStore.append, new stream, 1 LeadCreated (PII encrypted)",
    "raw_batch100": "psycopg async, one 100-row INSERT per append",
    "ledger_append_batch100": "EventStore.append, new stream, 100 events",
    "peer_eventsourcing": "eventsourcing 9 (postgres, AES), 1 event per new aggregate",
}
BASELINES = {
    "raw_insert": "pgbench_insert",
    "raw_insert_threads": "raw_insert",
    "ledger_append": "raw_insert",
    "raw_batch100": "raw_insert",
    "ledger_append_batch100": "raw_batch100",
    "peer_eventsourcing": "raw_insert_threads",
}
TARGETS = {"ledger_append": RAW_TARGET}


class Contender(Protocol):
    name: str
    unit: str

    def measure(self, writers: int, warmup: float, duration: float) -> Sample: ...


def build_contenders(server: BenchServer, only: set[str] | None) -> list[Contender]:
    wanted = (lambda name: only is None or name in only)
    raw_url = server.create_database("bench_append_raw")
    asyncio.run(migrate(raw_url))
    single, batch = row_template(1), row_template(BATCH)
    contenders: list[Contender] = []
    if wanted("pgbench_insert"):
        contenders.append(pgbench_insert("pgbench_insert", raw_url, "pgbench_events", single))
    if wanted("raw_insert"):
        contenders.append(RawInsert("raw_insert", raw_url, "raw_events", single))
    if wanted("raw_insert_threads"):
        contenders.append(RawInsert("raw_insert_threads", raw_url, "raw_events_threads", single,
                                    threads=True))
    if wanted("ledger_append"):
        url = server.create_database("bench_append_ledger")
        asyncio.run(migrate(url))
        contenders.append(LedgerAppend("ledger_append", url, 1))
    if wanted("raw_batch100"):
        contenders.append(RawInsert("raw_batch100", raw_url, "raw_events_batch", batch))
    if wanted("ledger_append_batch100"):
        url = server.create_database("bench_append_ledger_batch")
        asyncio.run(migrate(url))
        contenders.append(LedgerAppend("ledger_append_batch100", url, BATCH))
    if wanted("peer_eventsourcing"):
        from bench.append_peer import PeerEventsourcing  # optional: pip install '.[bench]'

        contenders.append(PeerEventsourcing("peer_eventsourcing",
                                            server.create_database("bench_append_peer")))
    return contenders


def run(contenders: list[Contender], args: argparse.Namespace, roots: list[int],
        console: Console) -> dict[tuple[str, int], list[Sample]]:
    """Every contender at every writer count, `repeat` times, interleaved. A sample during
    which other work on the machine took more than `max_foreign` cores is taken again once
    the machine is quiet (a bounded number of times, within `retry_budget` seconds in all)."""
    samples: dict[tuple[str, int], list[Sample]] = {}
    budget = RetryBudget(args.retry_budget)
    for writers in args.writer_counts:
        for rep in range(1, args.repeat + 1):
            for contender in contenders:
                sample, attempts = measure_guarded(
                    lambda c=contender, w=writers: c.measure(w, args.warmup, args.duration),
                    roots, max_foreign=args.max_foreign, retries=args.retries, budget=budget)
                samples.setdefault((contender.name, writers), []).append(sample)
                cpu = f"{sample.cpu_us:6.0f} µs CPU/unit" if sample.cpu_us else ""
                foreign = ("" if sample.foreign_cores is None else
                           f"  other load {sample.foreign_cores:.2f} cores"
                           + (f" (best of {attempts})" if attempts > 1 else ""))
                console.log(f"{writers:>2} writers  rep {rep}  {contender.name:<24}"
                            f" {sample.rate:>10,.0f} {contender.unit:<10} {cpu}{foreign}")
    return samples


def figures_from(samples: dict[tuple[str, int], list[Sample]],
                 units: dict[str, str]) -> list[Figure]:
    raw = {}
    for (name, writers), values in samples.items():
        cpus = [v.cpu_us for v in values if v.cpu_us is not None]
        raw[(name, writers)] = Figure(
            name=name, writers=writers, unit=units[name], value=median([v.rate for v in values]),
            samples=[round(v.rate, 1) for v in values],
            client_cpu_us=round(median(cpus), 1) if cpus else None,
            foreign_cores=[v.foreign_cores for v in values])
    out = []
    for (name, writers), figure in raw.items():
        baseline = raw.get((BASELINES.get(name, ""), writers))
        out.append(compare(figure, baseline, TARGETS.get(name)))
    return out


def comparisons_from(figures: list[Figure]) -> list[Comparison]:
    """ledger/raw at every writer count; ledger/peer at every writer count, with its target
    applying at the largest one only (the brief's "at 16 writers")."""
    by = {(f.name, f.writers): f for f in figures}
    counts = sorted({f.writers for f in figures})
    out = []
    for writers in counts:
        ledger, raw = by.get(("ledger_append", writers)), by.get(("raw_insert", writers))
        if ledger and raw and raw.value:
            ratio = ledger.value / raw.value
            out.append(Comparison(name="ledger/raw", writers=writers, numerator=ledger.name,
                                  denominator=raw.name, ratio=ratio, target=RAW_TARGET,
                                  met=ratio >= RAW_TARGET))
    for writers in counts:
        ledger, peer = by.get(("ledger_append", writers)), by.get(("peer_eventsourcing", writers))
        if ledger and peer and peer.value:
            ratio = ledger.value / peer.value
            target = PEER_TARGET if writers == counts[-1] else None
            out.append(Comparison(name="ledger/peer", writers=writers, numerator=ledger.name,
                                  denominator=peer.name, ratio=ratio, target=target,
                                  met=None if target is None else ratio >= target))
    return out


def _rows(figures: list[Figure]) -> list[tuple[str, str, list[Figure | None]]]:
    writer_counts = sorted({f.writers for f in figures})
    by = {(f.name, f.writers): f for f in figures}
    rows = []
    for name, what in DESCRIPTIONS.items():
        row = [by.get((name, w)) for w in writer_counts]
        if any(row):
            rows.append((name, what, row))
    return rows


def _cell(f: Figure | None) -> str:
    if f is None:
        return "-"
    return fmt_rate(f.value) + (f" ({fmt_ratio(f.ratio)})" if f.ratio is not None else "")


def _cpu(f: Figure | None) -> str:
    return "-" if f is None or f.client_cpu_us is None else f"{f.client_cpu_us:,.0f}"


def _unit(row: list[Figure | None]) -> str:
    return next(f.unit for f in row if f)


def _met(c: Comparison) -> str:
    return "-" if c.met is None else ("yes" if c.met else "no")


def print_tables(figures: list[Figure], comparisons: list[Comparison], console: Console) -> None:
    writer_counts = sorted({f.writers for f in figures})
    table = Table(title="append throughput: median (ratio to its baseline)")
    for column in ("contender", "unit", *(writers_label(w) for w in writer_counts),
                   *(f"CPU µs/unit @{w}" for w in writer_counts), "baseline"):
        table.add_column(column, justify="right" if "writer" in column or "@" in column
                         else "left")
    for name, _, row in _rows(figures):
        table.add_row(name, _unit(row), *map(_cell, row), *map(_cpu, row),
                      BASELINES.get(name, "-"))
    console.print(table)
    targets = Table(title="ratios and targets")
    for column in ("ratio", "writers", "measured", "target", "met"):
        targets.add_column(column)
    for c in comparisons:
        met = _met(c)
        targets.add_row(c.name, str(c.writers), fmt_ratio(c.ratio),
                        "-" if c.target is None else f">= {c.target}",
                        {"yes": "[green]yes[/]", "no": "[red]no[/]"}.get(met, met))
    console.print(targets)


def markdown(results: Results, reading: str) -> str:
    writer_counts = sorted({f.writers for f in results.figures})
    s = results.settings
    load = results.load_average
    others = sorted(c for f in results.figures for c in f.foreign_cores if c is not None)
    foreign = (f"a median {median(others):.2f} and at most {others[-1]:.2f} cores" if others
               else "an unmeasured share of the CPU")
    lines = [
        "## Append throughput (`bench/bench_append.py`)", "",
        f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        (f"- **Other work on the machine:** load average (1/5/15 min) {load.get('start')} at"
         f" start, {load.get('end')} at end; other processes took {foreign} during the kept"
         f" samples (a sample during which they took more than {s['max_foreign_cores']} cores"
         f" was retaken, at most {s['retries']} times, keeping the least disturbed). Throughput"
         " on a shared 2-core machine moves with that; client CPU per unit is steadier."),
        (f"- **Reproduce:** `{results.command}` (from the repository root, after"
        " `pip install -e '.[bench]'`; set LEADLEDGER_BENCH_DATABASE_URL to use another server)"),
        (f"- **Method:** {s['repeat']} interleaved repetitions per contender and writer count;"
        f" each {s['warmup']} s warm-up then {s['duration']} s measured; figures are medians,"
        " ratios are to the baseline named in the last column. Every writer has its own"
        " connection; async contenders are tasks on one event loop, the peer (synchronous) and"
        " `raw_insert_threads` are one thread per writer. Client CPU is this process's CPU"
        " time (all threads) per unit, or pgbench's."
        + (f" The run had niceness {s['niceness']} (so did its PostgreSQL server and pgbench),"
           " so that other sessions' work on the shared machine disturbed it less."
           if s.get("niceness") else "")), "",
        "| contender | what | unit | " + " | ".join(writers_label(w) for w in writer_counts)
        + " | client CPU µs/unit (" + "/".join(str(w) for w in writer_counts)
        + " writers) | baseline |",
        "|---|---|---|" + "---:|" * len(writer_counts) + "---:|---|",
    ]
    for name, what, row in _rows(results.figures):
        lines.append(f"| `{name}` | {what} | {_unit(row)} | " + " | ".join(map(_cell, row))
                     + " | " + " / ".join(map(_cpu, row))
                     + f" | {BASELINES.get(name, '-')} |")
    lines += ["", "| ratio | writers | measured | target | met |", "|---|---:|---:|---:|---|"]
    for c in results.comparisons:
        met = {"no": "**no**"}.get(_met(c), _met(c))
        target = "-" if c.target is None else f"≥ {c.target}"
        lines.append(f"| {c.name} | {c.writers} | {fmt_ratio(c.ratio)} | {target} | {met} |")
    lines += ["", "Targets, as measured by this run:", "", reading.strip(), "",
              quiet_markdown(results)]
    return "\n".join(lines)


QUIET_PAIRS = (("ledger/raw", "ledger_append", "raw_insert"),
               ("ledger/peer", "ledger_append", "peer_eventsourcing"),
               ("ledger batch/raw batch", "ledger_append_batch100", "raw_batch100"),
               ("raw/pgbench", "raw_insert", "pgbench_insert"))


def quiet_markdown(results: Results) -> str:
    """The same ratios from quiet samples only (other work took at most `max_foreign_cores`
    while they ran): a mechanical reading of the same run, for when the machine was busy."""
    limit = float(results.settings.get("max_foreign_cores", 0.25))
    by = {(f.name, f.writers): f for f in results.figures}

    def quiet(name: str, writers: int) -> list[float]:
        f = by.get((name, writers))
        if f is None:
            return []
        return [v for v, c in zip(f.samples, f.foreign_cores or [None] * len(f.samples),
                                  strict=True) if c is not None and c <= limit]

    lines = [(f"Quiet samples only (other work ≤ {limit} cores while they ran; n = how many of"
             " the numerator's / baseline's samples qualify):"), "",
             "| ratio | writers | numerator | baseline | ratio |", "|---|---:|---:|---:|---:|"]
    for label, num, den in QUIET_PAIRS:
        for writers in sorted({f.writers for f in results.figures}):
            a, b = quiet(num, writers), quiet(den, writers)
            if not by.get((num, writers)) or not by.get((den, writers)):
                continue
            cell_a = f"{fmt_rate(median(a))} (n={len(a)})" if a else "none quiet"
            cell_b = f"{fmt_rate(median(b))} (n={len(b)})" if b else "none quiet"
            ratio = fmt_ratio(median(a) / median(b)) if a and b else "-"
            lines.append(f"| {label} | {writers} | {cell_a} | {cell_b} | {ratio} |")
    return "\n".join(lines)


def verdict(results: Results) -> str:
    """The mechanical part of the reading: each target, met or not. The analysis of why lives
    below the generated block in RESULTS.md, written by a person."""
    lines = []
    for c in results.comparisons:
        if c.target is None:
            continue
        state = "met" if c.met else "**missed**"
        lines.append(f"- {c.name} at {writers_label(c.writers)}:"
                     f" {fmt_ratio(c.ratio)} against a target of {c.target}: {state}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,4,16", help="writer counts, comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured")
    parser.add_argument("--only", help="contender names, comma-separated (default: all)")
    parser.add_argument("--max-foreign", type=float, default=0.25,
                        help="retake a sample if other work took more cores than this")
    parser.add_argument("--retries", type=int, default=2, help="retakes per sample at most")
    parser.add_argument("--retry-budget", type=float, default=60,
                        help="seconds that waiting for quiet and retaking may add to the run")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave results/append.json and RESULTS.md alone")
    parser.add_argument("--from-json", metavar="PATH",
                        help="measure nothing: rewrite the RESULTS.md section from a results file")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = msgspec.json.decode(Path(args.from_json).read_bytes(), type=Results)
        update_results_md("append", markdown(saved, verdict(saved)))
        return 0
    writer_counts = args.writer_counts = [int(w) for w in args.writers.split(",")]
    only = set(args.only.split(",")) if args.only else None
    console = Console(width=160)
    quiet_logs()
    started = time.monotonic()
    load_start = load_average()
    with BenchServer() as server:
        machine = describe_machine(server, packages=("eventsourcing", "psycopg-pool"))
        contenders = build_contenders(server, only)
        try:
            samples = run(contenders, args, server.own_pids(), console)
        finally:
            for contender in contenders:
                close = getattr(contender, "close", None)
                if close:
                    close()
    figures = figures_from(samples, {c.name: c.unit for c in contenders})
    comparisons = comparisons_from(figures)
    print_tables(figures, comparisons, console)
    console.log(f"total {time.monotonic() - started:.0f} s")
    if args.no_write:
        return 0
    results = Results(
        benchmark="append", date=now_iso(),
        command=" ".join([*(["nice", "-n", str(os.nice(0))] if os.nice(0) else []),
                          "python -m bench.bench_append", *(argv or sys.argv[1:])]),
        settings={"writers": writer_counts, "repeat": args.repeat, "warmup": args.warmup,
                  "duration": args.duration, "batch": BATCH, "max_foreign_cores":
                  args.max_foreign, "retries": args.retries, "niceness": os.nice(0),
                  "stored_bytes_per_append": {"single": row_template(1).payload_bytes,
                                              f"batch{BATCH}": row_template(BATCH).payload_bytes},
                  "targets":
                  {"ledger/raw": RAW_TARGET, "ledger/peer@max_writers": PEER_TARGET}},
        machine=machine, figures=figures, comparisons=comparisons,
        load_average={"start": load_start, "end": load_average()},
    )
    path = write_results(results)
    update_results_md("append", markdown(results, verdict(results)))
    console.log(f"wrote {path} and bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except psycopg.Error as exc:
        print(f"database error: {exc}", file=sys.stderr)
        sys.exit(1)
