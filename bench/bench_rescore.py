"""Rescoring a workspace after a model is activated (issue #5: "rescoring a 100,000-lead
workspace"), against reading and scoring without writing, and against bare appends.

One run, against LEADLEDGER_BENCH_DATABASE_URL (e.g. the machine's PostgreSQL on 5432) or an
embedded PostgreSQL (bench/common.py), in a scratch database:

1. A workspace of `--leads` leads (LeadCreated with 15 fields, six of them personal, an email
   check, field changes, tags, stage changes, notes, owners, an attribute change for half of
   them and about a third of the events activities over the 120 days before the ledger was
   written), `--events-per-lead` events each, interleaved across leads and written through the
   ledger's own append path by bench/replay_ledger.py's writer (PII encrypted under each lead's
   key); then the lead read model is built by `rebuild_leads` (projections/rebuild.py), as
   `leadledger replay lead` does. The Rescorer walks that read model.
2. What-if (the baseline for reading and scoring): `run_what_if` (processors/what_if.py) with
   the same 30-rule model (bench/bench_rules.py's) as the only model, as `leadledger rescore
   --dry-run` runs in a workspace with no active model: it reads, decrypts and folds the whole
   workspace, scores every lead (and a converted lead before it converted) and writes nothing.
3. The rescore: the model is saved and activated through ScoringModels, the job created in the
   activation's transaction (`create_job`, as `POST .../activate` does), and `Rescorer.run`
   (processors/rescore.py) runs it to its end, with no throttle (`max_per_s` 1e9), in this
   process: for each lead of the read model, read its stream, fold, score, and append its
   LeadScored through LeadCommands in a transaction of its own that holds the active model
   (every lead's score changes: the workspace had no active model, so each lead gets one event).
   Leads/s and events appended/s, wall clock; the job's progress every few seconds.
4. Bare appends (the baseline for writing): the LeadScored events the rescore wrote, each
   appended once more to its lead with `EventStore.append`, one event per transaction, one after
   the other as the rescore does: what writing those events costs with nothing else around it.

For each phase: wall time, this process's CPU, the PostgreSQL server's CPU (all its processes,
from /proc, when it runs on this machine: other databases' work on the same server included),
the WAL it wrote, the CPU other processes on the machine took meanwhile, and load averages.

`--keep` keeps the generated ledger (database `bench_rescore_ledger`, read model built) and its
key; `--reuse` starts from it instead of writing a new one (each run copies it into the scratch
database, so every run starts from the same ledger).

    python -m bench.bench_rescore [--leads 100000] [--events-per-lead 10] [--keep] [--reuse]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bench.bench_rules import ATTRIBUTES, KINDS, RULES, model_spec
from bench.common import (
    BenchServer,
    Comparison,
    Figure,
    Machine,
    Results,
    compare,
    describe_machine,
    fmt_rate,
    load_average,
    machine_markdown,
    now_iso,
    quiet_logs,
    update_results_md,
    write_results,
)
from bench.measure import _HZ, ForeignCpu, _tree_jiffies
from bench.replay_ledger import Lead, _write, lead_history
from ledger.crypto import Keyring, generate_master_key, parse_master_key
from ledger.database import open_pool
from ledger.identity import IdentityHasher
from ledger.lead_commands import LeadCommands
from ledger.migrations import migrate
from ledger.scoring_models import ScoringModels
from ledger.store import EventStore, NewEvent
from processors.rescore import Rescorer, create_job, get_job
from processors.rules import compile_model
from processors.scoring import ACTOR, SOURCE
from processors.what_if import ModelUnderTest, run_what_if
from projections.rebuild import rebuild_leads
from schema.events import Event, LeadActivityRecorded, LeadAttributesChanged, LeadScored
from schema.metadata import EventMetadata
from schema.positions import LogPosition

WORKSPACE = "ws-0"
LEDGER_DB = "bench_rescore_ledger"
"""The generated ledger, read model built, kept by --keep for --reuse."""
WORK_DB = "bench_rescore"
"""The database each run rescores (a copy of LEDGER_DB, or written directly)."""
META_FILE = Path(tempfile.gettempdir()) / "leadledger-bench-rescore.json"
"""The kept ledger's master key and how it was made."""
MAX_PER_S = 1e9
PROGRESS_S = 10.0


# -- the ledger ----------------------------------------------------------------------------


def lead_events(lead_id: str, n: int, events: int, rng: random.Random,
                now: datetime) -> list[Event]:
    """bench/replay_ledger.py's lead life (fields, tags, stages, notes, owners) with about a
    third of its events activities over the 120 days before `now`, and an attribute change for
    half the leads (as bench/bench_rules.py's ledger, but relative to when it is written, so
    that the activity windows of the rules see recent activity)."""
    history = lead_history(lead_id, n, max(2, events - events // 3), rng)
    if rng.random() < 0.5:
        values: dict[str, Any] = {"seats": rng.randint(1, 500)}
        if rng.random() < 0.5:
            values["plan"] = rng.choice(("free", "team", "enterprise"))
        history.insert(2, LeadAttributesChanged(values=values))
    for j in range(events // 3):
        kind = rng.choice(KINDS)
        history.insert(rng.randint(2, len(history)), LeadActivityRecorded(
            activity_id=f"{lead_id}-a{j}", kind=kind,
            name="webinar" if kind == "custom" else None,
            occurred_at=now - timedelta(days=rng.uniform(0, 120)),
        ))
    return history


async def generate(url: str, master_key: str, leads: int, events_per_lead: int) -> dict:
    """Writes the ledger and builds the lead read model; returns how (for the results)."""
    await migrate(url)
    keyring = Keyring(parse_master_key(master_key))
    pool = await open_pool(url, min_size=2, max_size=6, name="bench-rescore-gen")
    store = EventStore(pool, keyring)
    try:
        rng = random.Random(11)
        now = datetime.now(UTC)
        everyone = [Lead(WORKSPACE, f"lead-{i:07d}",
                         lead_events(f"lead-{i:07d}", i, events_per_lead, rng, now))
                    for i in range(leads)]
        t0 = time.perf_counter()
        # The replay bench's writer: two connections, interleaved leads, 200 events a commit.
        written = sum(await asyncio.gather(*(
            _write(store, keyring, everyone[w::2], 200, 100 + w) for w in range(2))))
        write_seconds = time.perf_counter() - t0
        del everyone
        print(f"wrote {written:,} events in {write_seconds:.0f} s", file=sys.stderr)
        async with pool.connection() as conn:
            await conn.execute("VACUUM (ANALYZE) events, subject_keys")
        t0 = time.perf_counter()
        report = await rebuild_leads(store, pool)
        rebuild_seconds = time.perf_counter() - t0
        async with pool.connection() as conn:
            await conn.execute("VACUUM (ANALYZE) leads")
            row = await (await conn.execute(
                "SELECT count(*) FROM leads WHERE workspace = %s", (WORKSPACE,))).fetchone()
        if not report.swapped or not row or row[0] != leads:
            raise RuntimeError(f"the lead read model has {row and row[0]} leads, not {leads}")
        print(f"lead read model built in {rebuild_seconds:.0f} s", file=sys.stderr)
        return {"leads": leads, "events_per_lead": events_per_lead, "events": written,
                "generated_at": now.replace(microsecond=0).isoformat(),
                "write_seconds": round(write_seconds, 1),
                "rebuild_seconds": round(rebuild_seconds, 1)}
    finally:
        await pool.close()


# -- measuring a phase ---------------------------------------------------------------------


def postmaster_pid(url: str) -> int | None:
    """The PostgreSQL server's main process, if it runs on this machine (the parent of this
    connection's backend)."""
    try:
        with psycopg.connect(url) as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        text = Path(f"/proc/{backend}/stat").read_text()
        return int(text[text.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, psycopg.Error):
        return None


def _client_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Meter:
    """Wall time, this process's CPU, the server's CPU, other work's CPU, load averages."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.roots = [os.getpid(), *([server_pid] if server_pid else [])]

    def __enter__(self) -> Self:
        self.load_start = load_average()
        self.foreign = ForeignCpu(self.roots).__enter__()
        self.server0 = _tree_jiffies([self.server_pid]) if self.server_pid else None
        self.cpu0, self.t0 = _client_cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.client_cpu_s = _client_cpu() - self.cpu0
        self.server_cpu_s = (None if self.server0 is None or self.server_pid is None else
                             (_tree_jiffies([self.server_pid]) - self.server0) / _HZ)
        self.foreign.__exit__(None, None, None)
        self.load_end = load_average()

    def phase(self, units: int, unit: str, wal_bytes: int | None, **extra: Any) -> dict:
        per = 1e6 / max(units, 1)
        return {
            "units": units, "unit": unit, "seconds": round(self.seconds, 2),
            "rate": round(units / self.seconds, 1),
            "client_cpu_s": round(self.client_cpu_s, 2),
            "client_cpu_us": round(self.client_cpu_s * per, 1),
            "server_cpu_s": None if self.server_cpu_s is None else round(self.server_cpu_s, 2),
            "server_cpu_us": (None if self.server_cpu_s is None
                              else round(self.server_cpu_s * per, 1)),
            "wal_bytes": wal_bytes,
            "wal_bytes_per_unit": None if wal_bytes is None else round(wal_bytes / max(units, 1)),
            "foreign_cores": None if self.foreign.cores is None else round(self.foreign.cores, 2),
            "load_start": self.load_start, "load_end": self.load_end, **extra,
        }


async def wal_lsn(pool: AsyncConnectionPool) -> str:
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_current_wal_lsn()::text")).fetchone()
    assert row is not None
    return row[0]


async def wal_since(pool: AsyncConnectionPool, lsn: str) -> int:
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (lsn,))).fetchone()
    assert row is not None
    return int(row[0])


# -- the phases ----------------------------------------------------------------------------


async def phases(url: str, master_key: str, server_pid: int | None, leads: int,
                 append: bool, what_if: bool) -> dict[str, dict]:
    quiet_logs()
    master = parse_master_key(master_key)
    pool = await open_pool(url, min_size=2, max_size=6, name="bench-rescore")
    out: dict[str, dict] = {}
    try:
        async with pool.connection() as conn:
            await conn.execute("CHECKPOINT")
        if what_if:
            out["what_if"] = await _what_if(pool, master, server_pid)
        out["rescore"], scored = await _rescore(pool, master, server_pid, leads)
        async with pool.connection() as conn:
            await conn.execute("CHECKPOINT")
        if append:
            out["append"] = await _append(pool, master, server_pid, scored)
    finally:
        await pool.close()
    return out


async def _what_if(pool: AsyncConnectionPool, master: bytes, server_pid: int | None) -> dict:
    store = EventStore(pool, Keyring(master))  # cold: no data key unwrapped yet
    candidate = ModelUnderTest("candidate", compile_model(model_spec(), ATTRIBUTES))
    marks: dict[str, float] = {}

    def progress(phase: str, done: int, total: int) -> None:
        marks.setdefault(phase, time.perf_counter())

    lsn = await wal_lsn(pool)
    with Meter(server_pid) as meter:
        report = await run_what_if(store, WORKSPACE, candidate, progress=progress)
    wal = await wal_since(pool, lsn)
    read_seconds = marks.get("scoring", meter.t0) - meter.t0
    print(f"what-if: {report.leads:,} leads, {report.events:,} events in {meter.seconds:.1f} s "
          f"(reading and folding {read_seconds:.1f} s)", file=sys.stderr)
    return meter.phase(report.leads, "leads", wal, events=report.events,
                       read_and_fold_seconds=round(read_seconds, 2))


async def _rescore(pool: AsyncConnectionPool, master: bytes, server_pid: int | None,
                   leads: int) -> tuple[dict, LogPosition]:
    store = EventStore(pool, Keyring(master))  # cold, as in a process serving the activation
    commands = LeadCommands(store, IdentityHasher(master))  # LEADLEDGER_DEDUP=on, the default
    models = ScoringModels(pool)
    await models.save(WORKSPACE, "inbound", model_spec(), "bench", attributes=ATTRIBUTES)
    before = await store.horizon()
    # As POST /v1/scoring/models/{id}/versions/{v}/activate: the job in the activation's
    # transaction, then the Rescorer runs it (here in the foreground, unthrottled).
    async with pool.connection() as conn, conn.transaction():
        model, changed = await models.activate(WORKSPACE, "inbound", 1, "bench", conn=conn)
        job = await create_job(conn, model)
    assert changed
    rescorer = Rescorer(store, commands, models, pool, max_per_s=MAX_PER_S)
    timeline: list[tuple[float, int]] = [(0.0, 0)]

    async def watch(t0: float) -> None:
        while True:
            await asyncio.sleep(PROGRESS_S)
            async with pool.connection() as conn:
                found = await get_job(conn, job.job_id)
            if found is not None:
                timeline.append((round(time.perf_counter() - t0, 1), found.done))
                print(f"  rescore: {found.done:,}/{found.total:,} leads after "
                      f"{timeline[-1][0]:.0f} s", file=sys.stderr)

    lsn = await wal_lsn(pool)
    with Meter(server_pid) as meter:
        watcher = asyncio.create_task(watch(meter.t0))
        try:
            await rescorer.run(job.job_id)
        finally:
            watcher.cancel()
    wal = await wal_since(pool, lsn)
    async with pool.connection() as conn:
        done = await get_job(conn, job.job_id)
    if done is not None and meter.seconds - timeline[-1][0] >= 2:
        timeline.append((round(meter.seconds, 1), done.done))
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT count(*) FROM events WHERE workspace = %s AND event_type = 'LeadScored'",
            (WORKSPACE,))).fetchone()
    appended = row[0] if row else 0
    if done is None or done.status != "done" or done.done != leads or appended != done.changed:
        raise RuntimeError(f"the rescore job ended as {done} with {appended} LeadScored events")
    print(f"rescore: {done.done:,} leads, {done.changed:,} scores appended in "
          f"{meter.seconds:.1f} s", file=sys.stderr)
    return meter.phase(done.done, "leads", wal, events=done.changed, total=done.total,
                       timeline=timeline), before


async def _append(pool: AsyncConnectionPool, master: bytes, server_pid: int | None,
                  after: LogPosition) -> dict:
    """The rescore's LeadScored events, each appended once more to its lead, one a transaction:
    the write alone (with the encryption of `observed` under the lead's key, which the store
    fetches and unwraps as for any personal event)."""
    reader = EventStore(pool, Keyring(master))
    scored: list[tuple[str, LeadScored]] = []
    position = after
    while batch := await reader.read_all(position, 10_000, workspace=WORKSPACE):
        scored += [(r.stream_id, r.event) for r in batch if isinstance(r.event, LeadScored)]
        position = batch[-1].log_position
    store = EventStore(pool, Keyring(master))  # cold
    metadata = EventMetadata(actor=ACTOR, source=SOURCE, reason="bench: bare appends")
    lsn = await wal_lsn(pool)
    with Meter(server_pid) as meter:
        for lead_id, event in scored:
            await store.append(WORKSPACE, lead_id, None, [NewEvent(event)], metadata)
    wal = await wal_since(pool, lsn)
    print(f"append: {len(scored):,} single-event appends in {meter.seconds:.1f} s",
          file=sys.stderr)
    return meter.phase(len(scored), "events", wal)


# -- the run -------------------------------------------------------------------------------


def _drop(conn: psycopg.Connection, name: str) -> None:
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        (name,)).fetchone() is not None


def prepare(server: BenchServer, args: argparse.Namespace) -> tuple[str, dict, bool]:
    """The scratch database with the ledger in it; returns its master key, how the ledger was
    made and whether this run made it."""
    meta = json.loads(META_FILE.read_text()) if META_FILE.exists() else None
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        _drop(conn, WORK_DB)
        kept = _exists(conn, LEDGER_DB)
        if args.reuse and not (kept and meta and meta["leads"] == args.leads
                               and meta["events_per_lead"] == args.events_per_lead):
            print("no kept ledger of that size: writing one", file=sys.stderr)
        elif args.reuse:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(WORK_DB), sql.Identifier(LEDGER_DB)))
            server._created.append(WORK_DB)
            return meta["master_key"], meta, False
        if args.keep:  # replaced by the one this run writes
            _drop(conn, LEDGER_DB)
            META_FILE.unlink(missing_ok=True)
    master_key = generate_master_key()
    target = LEDGER_DB if args.keep else WORK_DB
    url = server.create_database(target)
    if args.keep:
        server._created.remove(target)  # kept for --reuse
    loop = asyncio.new_event_loop()
    try:
        made = loop.run_until_complete(generate(url, master_key, args.leads,
                                                args.events_per_lead))
    finally:
        loop.close()
    if args.keep:
        META_FILE.write_text(json.dumps({"master_key": master_key, **made}))
        with psycopg.connect(server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(WORK_DB), sql.Identifier(LEDGER_DB)))
        server._created.append(WORK_DB)
    return master_key, made, True


def results(args: argparse.Namespace, command: str, machine: Machine, made: dict,
            fresh: bool, measured: dict[str, dict], load: dict[str, list[float]]) -> Results:
    rescore = measured["rescore"]
    figures = [
        Figure(name="rescore_leads", writers=1, unit="leads/s", value=rescore["rate"],
               samples=[rescore["rate"]], client_cpu_us=rescore["client_cpu_us"],
               foreign_cores=[rescore["foreign_cores"]]),
        Figure(name="rescore_events_appended", writers=1, unit="events/s",
               value=round(rescore["events"] / rescore["seconds"], 1),
               samples=[round(rescore["events"] / rescore["seconds"], 1)],
               client_cpu_us=round(rescore["client_cpu_s"] * 1e6 / max(rescore["events"], 1), 1),
               foreign_cores=[rescore["foreign_cores"]]),
    ]
    comparisons = []
    if (w := measured.get("what_if")) is not None:
        figures.append(Figure(name="what_if_leads", writers=1, unit="leads/s", value=w["rate"],
                              samples=[w["rate"]], client_cpu_us=w["client_cpu_us"],
                              foreign_cores=[w["foreign_cores"]]))
        figures[0] = compare(figures[0], figures[-1])
        comparisons.append(Comparison(name="rescore / what-if (leads/s)", writers=1,
                                      numerator="rescore_leads", denominator="what_if_leads",
                                      ratio=round(figures[0].ratio or 0, 4)))
    if (a := measured.get("append")) is not None:
        figures.append(Figure(name="bare_append_events", writers=1, unit="events/s",
                              value=a["rate"], samples=[a["rate"]],
                              client_cpu_us=a["client_cpu_us"],
                              foreign_cores=[a["foreign_cores"]]))
        figures[1] = compare(figures[1], figures[-1])
        comparisons.append(Comparison(name="rescore / bare appends (events/s)", writers=1,
                                      numerator="rescore_events_appended",
                                      denominator="bare_append_events",
                                      ratio=round(figures[1].ratio or 0, 4)))
    return Results(
        benchmark="rescore", date=now_iso(), command=command,
        settings={"leads": args.leads, "events_per_lead": args.events_per_lead,
                  "events": made["events"], "rules": len(RULES), "workspaces": 1,
                  "max_per_s": MAX_PER_S, "ledger_generated_at": made["generated_at"],
                  "ledger_written_by_this_run": fresh,
                  "write_seconds": made["write_seconds"],
                  "rebuild_seconds": made["rebuild_seconds"]},
        machine=machine, figures=figures, comparisons=comparisons, load_average=load,
        details={"phases": measured},
    )


def _cpu(phase: dict) -> str:
    server = ("-" if phase["server_cpu_us"] is None
              else f"{phase['server_cpu_us']:,.0f}")
    return f"{phase['client_cpu_us']:,.0f} | {server}"


def markdown(r: Results) -> str:
    s, p = r.settings, r.details["phases"]
    assert isinstance(p, dict)
    rescore, w, a = p["rescore"], p.get("what_if"), p.get("append")
    f = {x.name: x for x in r.figures}
    made = ("written by this run" if s["ledger_written_by_this_run"] else
            "written by an earlier run with `--keep`")
    lines = [
        "## Rescoring a workspace on activation (`bench/bench_rescore.py`)", "",
        f"- **Date:** {r.date}",
        f"- **Machine:** {machine_markdown(r.machine)}",
        (f"- **Load average** (1/5/15 min) at start {r.load_average['start']}, at end "
         f"{r.load_average['end']}."),
        f"- **Reproduce:** `{r.command}`",
        (f"- **Ledger:** one workspace of {s['leads']:,} leads, {s['events']:,} events "
         f"(15 fields with six personal ones encrypted, email checks, field changes, tags, "
         f"stages, notes, owners, attributes, and a third of the events activities over the "
         f"120 days before {s['ledger_generated_at'][:10]}), {made} in {s['write_seconds']:.0f} s; "
         f"lead read model built by `rebuild_leads` in {s['rebuild_seconds']:.0f} s."),
        (f"- **Model:** bench/bench_rules.py's {s['rules']} rules (CEL, fields, tags, "
         "attributes, activity windows, decay), saved and activated through ScoringModels; "
         "the job created in the activation's transaction as `POST .../activate` does, and "
         "`Rescorer.run` run to its end in this process with no throttle (`max_per_s` 1e9). "
         "The workspace had no active model, so every lead's score changes and gets one "
         "LeadScored."),
        "",
        ("| phase | leads or events | wall s | rate | client CPU µs/unit | PostgreSQL CPU "
         "µs/unit | WAL bytes/unit | other work (cores) | load 1 min start → end |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    def row(name: str, phase: dict, rate: str) -> str:
        wal = "-" if phase["wal_bytes_per_unit"] is None else f"{phase['wal_bytes_per_unit']:,}"
        foreign = "-" if phase["foreign_cores"] is None else f"{phase['foreign_cores']:.2f}"
        return (f"| {name} | {phase['units']:,} {phase['unit']} | {phase['seconds']:.1f} | "
                f"{rate} | {_cpu(phase)} | {wal} | {foreign} | "
                f"{phase['load_start'][0]} → {phase['load_end'][0]} |")

    lines.append(row("**rescore** (`Rescorer.run`)", rescore,
                     f"**{fmt_rate(rescore['rate'])} leads/s**, "
                     f"{fmt_rate(f['rescore_events_appended'].value)} events appended/s"))
    if w is not None:
        lines.append(row("what-if, same model (`run_what_if`: read, fold, score; no writes)", w,
                         f"{fmt_rate(w['rate'])} leads/s ({w['events']:,} events read)"))
    if a is not None:
        lines.append(row("bare appends (`EventStore.append`, the rescore's LeadScored events, "
                         "one a transaction)", a, f"{fmt_rate(a['rate'])} events/s"))
    lines.append("")
    for c in r.comparisons:
        lines.append(f"- **{c.name}:** {c.ratio:.2f}")
    if w is not None and a is not None and None not in (
            rescore["server_cpu_us"], w["server_cpu_us"], a["server_cpu_us"]):
        ours = rescore["client_cpu_us"] + rescore["server_cpu_us"]
        both = (w["client_cpu_us"] + w["server_cpu_us"] + a["client_cpu_us"]
                + a["server_cpu_us"])
        lines.append(
            f"- **CPU per lead** (client + PostgreSQL): rescore {ours:,.0f} µs; a lead's share "
            f"of the what-if plus one bare append {both:,.0f} µs (ratio {ours / both:.2f}).")
    timeline = rescore.get("timeline") or []
    if len(timeline) >= 2:
        rates = [(d1 - d0) / (t1 - t0) for (t0, d0), (t1, d1) in itertools.pairwise(timeline)]
        lines.append(f"- **Rescore progress** (leads/s between the job's progress readings, "
                     f"every {PROGRESS_S:.0f} s): min {min(rates):,.0f}, max {max(rates):,.0f}, "
                     f"first {rates[0]:,.0f}, last {rates[-1]:,.0f}.")
    lines += [
        "",
        ("One run of each phase, in this order, in one scratch database: what-if, rescore, "
         "bare appends (a CHECKPOINT before the first and before the appends). Client CPU is "
         "this process's; PostgreSQL CPU is the whole server's (all its processes, from /proc: "
         "on the machine's shared server, other databases' work lands there too); other work "
         "is the CPU the rest of the machine took meanwhile, steal included; WAL is "
         "`pg_current_wal_lsn()` before and after (the whole server's too)."),
        "",
        ("A rescore does per lead what the two baselines do, and more, one lead at a time: it "
         "reads and decrypts the lead's stream, folds it and scores it (what the what-if does "
         "for the whole workspace, reading pages of 10,000 events), then, in a transaction of "
         "its own, locks the active model (`FOR SHARE`, decoding its spec), reads the stream "
         "again through LeadCommands, decides, hashes the lead's identity keys (unchanged) and "
         "appends the event in a savepoint: eight statements a lead (read; BEGIN, model, read, "
         "SAVEPOINT, append, RELEASE, COMMIT) and a progress UPDATE every 10 leads, where the "
         "bare append makes two (the lead's key, the append, autocommit)."),
        *r.notes,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events-per-lead", type=int, default=10)
    parser.add_argument("--keep", action="store_true",
                        help=f"keep the generated ledger (database {LEDGER_DB}) for --reuse")
    parser.add_argument("--reuse", action="store_true",
                        help="start from the ledger a run with --keep left instead of writing")
    parser.add_argument("--no-what-if", action="store_true", help="skip the what-if baseline")
    parser.add_argument("--no-append", action="store_true", help="skip the append baseline")
    parser.add_argument("--no-write", action="store_true",
                        help="print the section; write neither results JSON nor RESULTS.md")
    args = parser.parse_args(argv)
    quiet_logs()
    command = " ".join(["python -m bench.bench_rescore", *(argv or sys.argv[1:])])
    load_start = load_average()
    with BenchServer() as server:
        machine = describe_machine(server, packages=("common-expression-language",))
        master_key, made, fresh = prepare(server, args)
        url = server.database_url(WORK_DB)
        loop = asyncio.new_event_loop()
        try:
            measured = loop.run_until_complete(phases(
                url, master_key, postmaster_pid(url), args.leads,
                append=not args.no_append, what_if=not args.no_what_if))
        finally:
            loop.close()
            if not args.keep and args.reuse:  # the kept ledger was used up: drop it
                with psycopg.connect(server.admin_url, autocommit=True) as conn:
                    _drop(conn, LEDGER_DB)
                META_FILE.unlink(missing_ok=True)
    out = results(args, command, machine, made, fresh, measured,
                  {"start": load_start, "end": load_average()})
    text = markdown(out)
    print(text)
    if not args.no_write:
        write_results(out)
        update_results_md("rescore", text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
