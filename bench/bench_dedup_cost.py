"""What dedup costs a create: POST /v1/leads creates/s and p50/p99 with dedup on versus off, in
one run, the same realistic lead (bench_http's: name, email, phone, external id, company, ...)
against two servers on the same database:

  * `on`: the default policies (exact: reject, fuzzy: flag at 88): three identity keys are
    reserved in the append's transaction and the fuzzy candidate query runs;
  * `off`: the same server with LEADLEDGER_DEDUP=off (api/settings.py): no identity keys, no
    fuzzy lookup; normalization, validation, email checks and encryption all still run.

As in bench_http, the relay and projections do not run and the leads read model stays empty:
the candidate query finds nothing to score, so the fuzzy scoring itself (rapidfuzz over up to 50
candidates, microseconds) is not in the figure.

Rounds alternate on and off (granian when installed, else uvicorn), so both see the same
machine; the figure is the median of the rounds.

    python -m bench.bench_dedup_cost [--duration 6] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import msgspec

from bench.bench_http import LUA, Load, Served, _prepare, run_wrk
from bench.common import (
    BenchServer,
    Comparison,
    Figure,
    Results,
    compare,
    describe_machine,
    fmt_rate,
    load_average,
    machine_markdown,
    now_iso,
    quiet_logs,
    rerender,
    update_results_md,
    write_results,
)

CONNECTIONS = 16
TARGET_RATIO = 0.75  # dedup may cost at most 25%: on / off >= 0.75

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--from-json", action="store_true",
                        help="only rewrite the RESULTS.md section from the JSON")
    args = parser.parse_args()
    if args.from_json:
        rerender("dedup_cost", markdown)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    server = "granian" if shutil.which("granian") else "uvicorn"
    quiet_logs()
    from ledger.crypto import generate_master_key

    started = load_average()
    loads: dict[str, list[Load]] = {"on": [], "off": []}
    with BenchServer() as pg, tempfile.TemporaryDirectory() as tmp:
        database_url = pg.create_database("bench_dedup_cost")
        token = asyncio.run(_prepare(database_url))
        script = Path(tmp) / "create.lua"
        script.write_text(LUA)
        env = {**os.environ, "LEADLEDGER_DATABASE_URL": database_url,
               "LEADLEDGER_MASTER_KEY": generate_master_key(), "LEADLEDGER_LOG_FORMAT": "json",
               "LEADLEDGER_LOG_LEVEL": "info", "PYTHONPATH": str(Path.cwd())}
        env.pop("LEADLEDGER_NATS_URL", None)
        target = "api.http.standalone:app_from_env"
        served = {
            "on": Served(server, target, args.workers, {**env, "LEADLEDGER_DEDUP": "on"},
                         "/health"),
            "off": Served(server, target, args.workers, {**env, "LEADLEDGER_DEDUP": "off"},
                          "/health"),
        }
        postgres = next(iter(pg.own_pids()[1:]), None)

        def measure(mode: str) -> dict[str, object]:
            pid = served[mode].process.pid
            return {"token": token, "roots": [*pg.own_pids(), pid], "server_pid": pid,
                    "postgres_pid": postgres}

        try:
            run = uuid.uuid4().hex[:6]
            for mode in ("on", "off"):
                run_wrk(served[mode].url, "/v1/leads", CONNECTIONS, args.warmup, script=script,
                        run=f"{run}w{mode}", **measure(mode))
            for r in range(args.rounds):
                order = ("on", "off") if r % 2 == 0 else ("off", "on")
                for mode in order:
                    load = run_wrk(served[mode].url, "/v1/leads", CONNECTIONS, args.duration,
                                   script=script, run=f"{run}{r}{mode}", **measure(mode))
                    loads[mode].append(load)
                    print(r, mode, load, flush=True)
        finally:
            for one in served.values():
                one.stop()
        machine = describe_machine(pg, packages=("litestar", "granian", "uvicorn", "rapidfuzz"))
    figures = {}
    for mode in ("off", "on"):
        samples = [x.rate for x in loads[mode]]
        figures[mode] = Figure(
            name=f"create_dedup_{mode}", writers=CONNECTIONS, unit="creates/s",
            value=statistics.median(samples), samples=samples,
            foreign_cores=[x.foreign_cores for x in loads[mode]])
    on = compare(figures["on"], figures["off"], TARGET_RATIO)
    results = Results(
        benchmark="dedup_cost", date=now_iso(),
        command="python -m bench.bench_dedup_cost " + " ".join(sys.argv[1:]),
        settings={"server": server, "workers": args.workers, "connections": CONNECTIONS,
                  "duration_s": args.duration, "rounds": args.rounds, "warmup_s": args.warmup,
                  "wrk_threads": 2, "policies": "workspace defaults (exact reject, fuzzy flag "
                  "at 88)"},
        machine=machine, figures=[figures["off"], on],
        comparisons=[Comparison(name="creates/s dedup on / off", writers=CONNECTIONS,
                                numerator="create_dedup_on", denominator="create_dedup_off",
                                ratio=round(on.ratio or 0, 3), target=TARGET_RATIO,
                                met=on.met)],
        load_average={"start": started, "end": load_average()},
        details={"loads": {m: [msgspec.to_builtins(x) for x in v] for m, v in loads.items()}},
    )
    write_results(results)
    update_results_md("dedup_cost", markdown(results))


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def markdown(results: Results) -> str:
    raw = results.details["loads"]
    assert isinstance(raw, dict)
    loads = {m: [msgspec.convert(x, Load) for x in v] for m, v in raw.items()}
    s = results.settings
    rows = []
    stats = {}
    for mode in ("on", "off"):
        ls = loads[mode]
        st = {k: _median([getattr(x, k) for x in ls]) for k in
              ("rate", "p50_ms", "p99_ms", "server_cpu_ms", "postgres_cpu_ms", "foreign_cores")}
        st["errors"] = sum(x.errors for x in ls)
        st["samples"] = ", ".join(fmt_rate(x.rate) for x in ls)
        stats[mode] = st
        rows.append(
            f"| {mode} | {fmt_rate(st['rate'])} | {st['samples']} | {st['p50_ms']:.1f} | "
            f"{st['p99_ms']:.1f} | {st['errors']} | {_f(st['server_cpu_ms'])} | "
            f"{_f(st['postgres_cpu_ms'])} | {_f(st['foreign_cores'])} |")
    ratio = stats["on"]["rate"] / stats["off"]["rate"] if stats["off"]["rate"] else 0.0
    cpu = {m: (stats[m]["server_cpu_ms"] or 0) + (stats[m]["postgres_cpu_ms"] or 0)
           for m in stats}
    cpu_ratio = cpu["off"] / cpu["on"] if cpu["on"] else 0.0
    return "\n".join([
        "## What dedup costs a create (`bench/bench_dedup_cost.py`)", "",
        f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        (f"- **Load average** (1/5/15 min) at start {results.load_average['start']}, at end "
        f"{results.load_average['end']}."),
        f"- **Reproduce:** `{results.command}` (needs `wrk`; granian when installed)",
        (f"- **Method:** POST /v1/leads at {s['connections']} connections, {s['server']} with "
        f"{s['workers']} workers, wrk 2 threads, {s['rounds']} rounds of "
        f"{s['duration_s']} s alternating on/off; medians. The same 16-field lead both ways. "
        "**on** = a server with the default policies (exact reject, fuzzy flag at 88): identity "
        "keys reserved in the append's transaction, fuzzy candidate query run. **off** = a "
        "second server on the same database with `LEADLEDGER_DEDUP=off`: no identity keys, no "
        "fuzzy lookup; normalization, validation, the email check and encryption still run. "
        "The read model is empty (projections not running): the candidate query returns "
        "nothing, so fuzzy scoring is not in the figure."),
        "",
        ("| dedup | creates/s (median) | rounds | p50 ms | p99 ms | errors | server CPU ms/req | "
        "PostgreSQL CPU ms/req | other work (cores) |"),
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
        *rows, "",
        (f"- creates/s on ÷ off: **{ratio:.2f}** (dedup costs {1 - ratio:.0%}; target: at most "
        f"25%, on/off ≥ {TARGET_RATIO}): {'met' if ratio >= TARGET_RATIO else '**missed**'}."),
        (f"- By CPU per create (server + PostgreSQL, steadier on a shared machine): on "
        f"{cpu['on']:.2f} ms, off {cpu['off']:.2f} ms: off/on {cpu_ratio:.2f} (dedup costs "
        f"{1 - cpu_ratio:.0%} of a create's CPU)."),
        ("- Throughput on this shared 2-core machine moves with other work (last column); "
        "CPU per create is the steadier comparison."),
    ])


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
