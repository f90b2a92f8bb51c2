"""Scoring throughput: a realistic 30-rule CEL model against the same 30 conditions written as a
plain Python function, and what-if rescoring over a generated ledger.

1. `evaluate` (processors/rules.py) over activations of generated leads (fields, tags, custom
   attributes, 0-40 activities each over the last 120 days), in scores/s: the median of
   `--repeat` runs. The baseline is a plain Python function of the same 30 conditions over the
   same activations, in the same run; ratio = ours / baseline. `score_lead` (building the
   activation from the facts, then evaluating) is reported beside it. Every lead's total is
   checked equal between the two before anything is timed.
2. What-if: `run_what_if` (processors/what_if.py) with a candidate and a current model (both
   30 rules) over a ledger of `--leads` leads (LeadCreated with 15 fields, an email check, and
   about `--events-per-lead` events: field changes, tags, stage changes, notes, owners and
   activities), written through the ledger's own append path into one workspace of a scratch
   database: leads/s and events/s, end to end (reading and decrypting the ledger, folding,
   scoring every lead under both models, and the converted leads before converting).

Runs against LEADLEDGER_BENCH_DATABASE_URL (e.g. the machine's PostgreSQL on 5432) or an
embedded PostgreSQL (bench/common.py).

    python -m bench.bench_rules [--leads 100000] [--events-per-lead 10] [--no-ledger]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median

import msgspec
import psycopg
from psycopg import sql

from bench.common import (
    BenchServer,
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
from bench.replay_ledger import PLACES, Lead, _write, lead_history
from ledger.crypto import Keyring, generate_master_key, parse_master_key
from ledger.database import open_pool
from ledger.lead import LeadState
from ledger.migrations import migrate
from ledger.store import EventStore
from processors.lead_facts import Activity, LeadFacts, activation
from processors.rules import compile_model, evaluate, score_lead
from processors.what_if import ModelUnderTest, run_what_if
from schema.attributes import AttributeDefinition
from schema.events import Event, LeadActivityRecorded, LeadAttributesChanged, LeadFields
from schema.scoring import ScoreBand, ScoringModelSpec, ScoringRule
from schema.vocabularies import INDUSTRIES, LEAD_SOURCES, SENIORITIES

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ATTRIBUTES = (AttributeDefinition(name="seats", type="integer"),
              AttributeDefinition(name="plan", type="enum", values=("free", "team", "enterprise")))
KINDS = ("page_view", "page_view", "page_view", "email_open", "email_open", "email_click",
         "form_submit", "demo_request", "meeting", "product_signup", "custom")

RULES: tuple[tuple[str, str, float], ...] = (
    ("europe", 'lead.country in ["DE", "FR", "GB", "NL", "ES"]', 10),
    ("us", 'lead.country == "US"', 8),
    ("software", 'lead.industry == "software"', 10),
    ("regulated", 'lead.industry in ["financial_services", "healthcare"]', 6),
    ("exec", 'lead.seniority in ["c_level", "vp"]', 15),
    ("director", 'lead.seniority == "director"', 8),
    ("junior", 'lead.seniority in ["intern", "individual_contributor"]', -5),
    ("head_of", 'lead.title != null && lead.title.contains("Head")', 5),
    ("bad_email", 'lead.email_status == "invalid"', -30),
    ("risky_email", 'lead.email_status == "risky"', -5),
    ("phone", "lead.has_phone", 3),
    ("warm_source", 'lead.source in ["product_signup", "referral"]', 8),
    ("paid", 'lead.source == "paid_ads"', 2),
    ("enterprise_tag", '"enterprise" in lead.tags', 10),
    ("churn_risk", '"churn-risk" in lead.tags', -10),
    ("disqualified", 'lead.stage == "disqualified"', -50),
    ("stale", "lead.age_days > 180.0", -5),
    ("forms_30d", 'count("form_submit", 30) >= 2', 15),
    ("form_90d", "activity.form_submit.last_90d >= 1", 5),
    ("browsing", "activity.page_view.last_7d >= 5", 8),
    ("browsing_decayed", "activity.page_view.decayed > 3.0", 5),
    ("clicks", "activity.email_click.last_30d > 0", 4),
    ("opens", "activity.email_open.count >= 10", 2),
    ("demo", "activity.demo_request.count > 0", 25),
    ("demo_recent", "activity.demo_request.days_since_last < 14.0", 10),
    ("meeting", "activity.meeting.last_90d > 0", 20),
    ("signup", "activity.product_signup.count > 0", 15),
    ("seats", "has(attributes.seats) && attributes.seats >= 50", 10),
    ("enterprise_plan", 'has(attributes.plan) && attributes.plan == "enterprise"', 10),
    ("webinar", "activity.custom_webinar.last_90d > 0", 6),
)
BANDS = (ScoreBand(name="A", min_score=80), ScoreBand(name="B", min_score=50),
         ScoreBand(name="C", min_score=20), ScoreBand(name="D", min_score=0))


def model_spec(shift: float = 0.0) -> ScoringModelSpec:
    """The model; `shift` makes the "current" model of the what-if differ from the candidate."""
    return ScoringModelSpec(
        rules=tuple(ScoringRule(name=n, expression=e, points=p + (shift if p > 0 else 0))
                    for n, e, p in RULES),
        bands=BANDS, min_score=0, max_score=100,
    )


def baseline(v: dict) -> tuple[list[float], float]:
    """The same 30 conditions as plain Python over the same activation."""
    lead, act, attrs, count = v["lead"], v["activity"], v["attributes"], v["count"]
    tags = lead["tags"]
    title = lead["title"]
    checks = (
        lead["country"] in ("DE", "FR", "GB", "NL", "ES"), lead["country"] == "US",
        lead["industry"] == "software", lead["industry"] in ("financial_services", "healthcare"),
        lead["seniority"] in ("c_level", "vp"), lead["seniority"] == "director",
        lead["seniority"] in ("intern", "individual_contributor"),
        title is not None and "Head" in title, lead["email_status"] == "invalid",
        lead["email_status"] == "risky", lead["has_phone"],
        lead["source"] in ("product_signup", "referral"), lead["source"] == "paid_ads",
        "enterprise" in tags, "churn-risk" in tags, lead["stage"] == "disqualified",
        lead["age_days"] > 180.0, count("form_submit", 30) >= 2,
        act["form_submit"]["last_90d"] >= 1, act["page_view"]["last_7d"] >= 5,
        act["page_view"]["decayed"] > 3.0, act["email_click"]["last_30d"] > 0,
        act["email_open"]["count"] >= 10, act["demo_request"]["count"] > 0,
        act["demo_request"]["days_since_last"] < 14.0, act["meeting"]["last_90d"] > 0,
        act["product_signup"]["count"] > 0, attrs.get("seats", 0) >= 50,
        attrs.get("plan") == "enterprise",
        act.get("custom_webinar", {"last_90d": 0})["last_90d"] > 0,
    )
    points = [float(p) if ok else 0.0 for ok, (_, _, p) in zip(checks, RULES, strict=True)]
    return points, min(100.0, max(0.0, sum(points)))


def generated_facts(n: int, seed: int = 7) -> list[LeadFacts]:
    rng = random.Random(seed)
    leads = []
    for i in range(n):
        country = rng.choice(PLACES)[0] if rng.random() < 0.8 else "US"
        fields = LeadFields(
            email=f"p{i}@example.com", phone="+4915100000000" if rng.random() < 0.6 else None,
            company="Acme", title=rng.choice(("Head of Sales", "CTO", "Engineer", None)),
            country=country, industry=rng.choice(INDUSTRIES), seniority=rng.choice(SENIORITIES),
            source=rng.choice(LEAD_SOURCES),
        )
        attributes: dict = {}
        if rng.random() < 0.5:
            attributes["seats"] = rng.randint(1, 500)
        if rng.random() < 0.5:
            attributes["plan"] = rng.choice(ATTRIBUTES[1].values)
        state = LeadState(
            lead_id=f"L{i}", status="active", fields=fields,
            stage=rng.choice(("lead", "mql", "sql", "disqualified")),
            tags=tuple(rng.sample(("enterprise", "churn-risk", "webinar", "trial"), 2)),
            email_status=rng.choice(("valid", "valid", "risky", "invalid")), attributes=attributes,
        )
        activities = tuple(
            Activity(kind, "webinar" if kind == "custom" else None,
                     NOW - timedelta(days=rng.uniform(0, 120)))
            for kind in (rng.choice(KINDS) for _ in range(rng.randint(0, 40)))
        )
        leads.append(LeadFacts(state=state, created_at=NOW - timedelta(days=rng.uniform(0, 365)),
                               activities=activities))
    return leads


def timed(run, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        count = run()
        samples.append(count / (time.perf_counter() - t0))
    return samples


def bench_evaluate(n: int, repeat: int) -> list[Figure]:
    model = compile_model(model_spec(), ATTRIBUTES)
    facts = generated_facts(n)
    activations = [activation(f, NOW) for f in facts]
    for v in activations:  # the same answers, or the comparison means nothing
        ours = evaluate(model, v)
        points, total = baseline(v)
        assert ours.total == total and [c.points for c in ours.contributions] == points, v
        assert all(c.error is None for c in ours.contributions)

    def ours() -> int:
        for v in activations:
            evaluate(model, v)
        return len(activations)

    def plain() -> int:
        for v in activations:
            baseline(v)
        return len(activations)

    def end_to_end() -> int:
        for f in facts:
            score_lead(model, f, NOW)
        return len(facts)

    figures = []
    for name, run, unit in (("evaluate_30_rules", ours, "scores/s"),
                            ("plain_python_30_conditions", plain, "scores/s"),
                            ("score_lead_30_rules", end_to_end, "scores/s")):
        samples = timed(run, repeat)
        figures.append(Figure(name=name, writers=1, unit=unit, value=median(samples),
                              samples=[round(s, 1) for s in samples]))
    figures[0] = compare(figures[0], figures[1])
    return figures


def ledger_history(lead_id: str, n: int, events: int, rng: random.Random) -> list[Event]:
    """The replay bench's lead lives, with about a third of the events being activities and
    an attribute change for half the leads."""
    history = lead_history(lead_id, n, max(2, events - events // 3), rng)
    if rng.random() < 0.5:
        history.insert(2, LeadAttributesChanged(values={"seats": rng.randint(1, 500)}))
    for j in range(events // 3):
        kind = rng.choice(KINDS)
        history.insert(rng.randint(2, len(history)), LeadActivityRecorded(
            activity_id=f"{lead_id}-a{j}", kind=kind,
            name="webinar" if kind == "custom" else None,
            occurred_at=NOW - timedelta(days=rng.uniform(0, 120)),
        ))
    return history


async def bench_what_if(url: str, leads: int, events_per_lead: int,
                        master_key: str) -> tuple[float | None, tuple[Figure, ...]]:
    await migrate(url)
    keyring = Keyring(parse_master_key(master_key))
    pool = await open_pool(url, min_size=2, max_size=6, name="bench-rules")
    store = EventStore(pool, keyring)
    try:
        write_seconds = None
        if await store.head() == 0:
            t0 = time.perf_counter()
            await _write_ledger(store, keyring, pool, leads, events_per_lead)
            write_seconds = time.perf_counter() - t0
        return write_seconds, await _what_if(store)
    finally:
        await pool.close()


async def _write_ledger(store: EventStore, keyring: Keyring, pool, leads: int,
                        events_per_lead: int) -> None:
    rng = random.Random(11)
    everyone = [Lead("ws-0", f"lead-{i:07d}", ledger_history(f"lead-{i:07d}", i,
                                                            events_per_lead, rng))
                for i in range(leads)]
    t0 = time.perf_counter()
    # The replay bench's writer (bench/replay_ledger.py): interleaved, 200 events a commit.
    written = sum(await asyncio.gather(*(
        _write(store, keyring, everyone[w::2], 200, 100 + w) for w in range(2))))
    print(f"wrote {written:,} events in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    del everyone
    async with pool.connection() as conn:
        await conn.execute("VACUUM (ANALYZE) events, subject_keys")


async def _what_if(store: EventStore) -> tuple[Figure, ...]:
    candidate = ModelUnderTest("candidate", compile_model(model_spec(), ATTRIBUTES))
    current = ModelUnderTest("current", compile_model(model_spec(shift=3), ATTRIBUTES))
    phases: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(phase: str, done: int, total: int) -> None:
        phases.setdefault(phase, time.perf_counter())

    report = await run_what_if(store, "ws-0", candidate, current, progress=progress)
    seconds = time.perf_counter() - t0
    read_seconds = phases.get("scoring", t0) - t0
    print(f"what-if: {report.leads:,} leads, {report.events:,} events in {seconds:.1f} s "
          f"(reading and folding {read_seconds:.1f} s); {report.band_changes:,} band changes",
          file=sys.stderr)
    return (
        Figure(name="what_if_leads", writers=1, unit="leads/s",
               value=report.leads / seconds, samples=[round(report.leads / seconds, 1)]),
        Figure(name="what_if_events", writers=1, unit="events/s",
               value=report.events / seconds, samples=[round(report.events / seconds, 1)]),
        Figure(name="what_if_read_and_fold", writers=1, unit="events/s",
               value=report.events / read_seconds,
               samples=[round(report.events / read_seconds, 1)]),
        Figure(name="what_if_scoring_two_models", writers=1, unit="leads/s",
               value=report.leads / (seconds - read_seconds),
               samples=[round(report.leads / (seconds - read_seconds), 1)]),
        Figure(name="what_if_seconds", writers=1, unit="s", value=seconds,
               samples=[round(seconds, 1)]),
    )


def markdown(rules: Results, what_if: Results | None) -> str:
    f = {x.name: x for x in rules.figures}
    ours, plain, e2e = f["evaluate_30_rules"], f["plain_python_30_conditions"], \
        f["score_lead_30_rules"]
    lines = [
        "## Scoring rules (bench/bench_rules.py)", "",
        (f"{rules.date}, `{rules.command}`; {machine_markdown(rules.machine)}; load average "
        f"{rules.load_average['start'][0]} when the evaluate figures started."), "",
        "| figure | value | samples |", "|---|---:|---|",
        (f"| `evaluate`, 30-rule CEL model | **{fmt_rate(ours.value)} scores/s** | "
        f"{', '.join(fmt_rate(s) for s in ours.samples)} |"),
        (f"| the same 30 conditions as a plain Python function | {fmt_rate(plain.value)} "
        f"scores/s | {', '.join(fmt_rate(s) for s in plain.samples)} |"),
        f"| ratio ours / plain Python | {ours.ratio:.3f} | |",
        (f"| `score_lead` (activation from facts + evaluate) | {fmt_rate(e2e.value)} scores/s | "
        f"{', '.join(fmt_rate(s) for s in e2e.samples)} |"),
    ]
    if what_if is not None:
        w = {x.name: x for x in what_if.figures}
        s = what_if.settings
        written = ("written by an earlier run" if s["write_seconds"] is None
                   else f"written in {s['write_seconds']:.0f} s")
        lines += [
            "",
            (f"What-if (`run_what_if`, candidate and current model, 30 rules each) over one "
            f"workspace of {s['leads']:,} leads and {s['events']:,} events "
            f"({written}; load average {what_if.load_average['start'][0]} at the start, "
            f"{what_if.load_average['end'][0]} at the end):"), "",
            "| figure | value |", "|---|---:|",
            (f"| end to end | **{fmt_rate(w['what_if_leads'].value)} leads/s**, "
            f"{fmt_rate(w['what_if_events'].value)} events/s, "
            f"{w['what_if_seconds'].value:.0f} s in all |"),
            (f"| reading, decrypting and folding the ledger | "
            f"{fmt_rate(w['what_if_read_and_fold'].value)} events/s |"),
            (f"| scoring every lead under both models (+ converted leads before converting) | "
            f"{fmt_rate(w['what_if_scoring_two_models'].value)} leads/s |"),
        ]
    lines += ["", *rules.notes]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=5_000, help="leads for the evaluate bench")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--events-per-lead", type=int, default=10)
    parser.add_argument("--no-ledger", action="store_true", help="skip the what-if bench")
    parser.add_argument("--keep", action="store_true",
                        help="keep the generated ledger (database bench_rules) for --reuse")
    parser.add_argument("--reuse", action="store_true",
                        help="replay the ledger a run with --keep left, instead of writing one")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet_logs()
    command = " ".join(["python -m bench.bench_rules", *(argv or sys.argv[1:])])
    load_start = load_average()
    figures = bench_evaluate(args.facts, args.repeat)
    for fig in figures:
        print(f"{fig.name}: {fig.value:,.0f} {fig.unit} {fig.samples}", file=sys.stderr)
    load_evaluate = load_average()
    what_if_results = None
    with BenchServer() as server:
        machine = describe_machine(server, packages=("common-expression-language",))
        if not args.no_ledger:
            what_if_results = _run_what_if(server, args, command, machine)
    results = Results(
        benchmark="rules", date=now_iso(), command=command,
        settings={"facts": args.facts, "repeat": args.repeat, "rules": len(RULES)},
        machine=machine, figures=figures,
        load_average={"start": load_start, "end": load_evaluate},
        notes=[
            ("Rules run on flat CEL variables (`lead.country` as `lead__country`): handing a "
             "value to the CEL library inside a map costs about ten times more than as a "
             "top-level variable, and before that change `evaluate` ran at 5,300 scores/s "
             "(0.08x plain Python). What remains is the library's per-call cost (30 programs, "
             "a context per lead) and building the ScoreResult with its observed values. "
             "The machine's 2 cores were shared with other work: the load averages are in "
             "bench/results/rules.json and what_if.json."),
        ],
    )
    if args.no_write:
        print(markdown(results, what_if_results))
        return 0
    write_results(results)
    if what_if_results is not None:
        write_results(what_if_results)
    elif (saved := Path(__file__).parent / "results" / "what_if.json").exists():
        what_if_results = msgspec.json.decode(saved.read_bytes(), type=Results)
    update_results_md("rules", markdown(results, what_if_results))
    print(markdown(results, what_if_results))
    return 0


def _run_what_if(server: BenchServer, args: argparse.Namespace, command: str,
                 machine: Machine) -> Results:
    name = "bench_rules"
    key_file = Path(tempfile.gettempdir()) / "leadledger-bench-rules.key"
    with psycopg.connect(server.admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (name,)).fetchone() is not None
        reuse = args.reuse and exists and key_file.exists()
        if not reuse:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            key_file.write_text(generate_master_key())
    load_start = load_average()
    loop = asyncio.new_event_loop()
    try:
        write_seconds, what_if = loop.run_until_complete(bench_what_if(
            server.database_url(name), args.leads, args.events_per_lead, key_file.read_text()))
    finally:
        loop.close()
        if not args.keep:
            with psycopg.connect(server.admin_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)))
            key_file.unlink(missing_ok=True)
    events = round(what_if[1].value * what_if[4].value)
    return Results(
        benchmark="what_if", date=now_iso(), command=command,
        settings={"leads": args.leads, "events_per_lead": args.events_per_lead,
                  "events": events, "workspaces": 1,
                  "write_seconds": None if write_seconds is None else round(write_seconds, 1)},
        machine=machine, figures=list(what_if),
        load_average={"start": load_start, "end": load_average()},
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
