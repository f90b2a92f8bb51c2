"""From a create to its effects: how long after `POST /v1/leads` returns a lead is enriched,
scored, assigned (each event published on the JetStream stream, as downstream consumers see it)
and its `lead.created` webhook received, at a steady load.

One run starts the whole service (`leadledger up` on a scratch database and a NATS stream of its
own: HTTP, relay, projections, the scoring processor, the enrich/route/webhooks reactors and the
webhook sender, in one process), configures a workspace (an active 5-rule scoring model, a
round-robin team with a routing rule, a webhook endpoint on a local receiver, loopback
allow-listed), then creates leads open-loop at each of `--rates` per second for `--duration`
seconds (a fresh database and service for each rate).

  * (a) enriched, (b) scored, (c) assigned: every lead's LeadEnriched, LeadScored and
    LeadAssigned, timed on arrival at a plain NATS subscription to the stream's subjects (what a
    downstream consumer sees: the event committed in the ledger and relayed).
  * (d) webhook: every lead's `lead.created` webhook, timed on arrival at the receiver.
  * baseline (same run): the lead's own LeadCreated arriving the same way (the relay's lag),
    the floor every effect sits on; each figure's ratio is over it.
  * `--sample N` also polls every Nth lead's `GET /v1/leads/{id}` every 20 ms until the read
    model shows all three (off by default: at saturation, polling is load of its own).
  * CPU per lead of the service's processes and of the embedded PostgreSQL, over the load.

Times are wall-clock on one machine (the client, the service and the receiver share its clock).

    python -m bench.bench_pipeline [--rates 10,100] [--duration 30] [--sample 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Self

import aiohttp
import httpx
import msgspec
import psycopg

from bench.common import (
    BenchServer,
    Comparison,
    Figure,
    Results,
    describe_machine,
    load_average,
    machine_markdown,
    now_iso,
    rerender,
    update_results_md,
    write_results,
)
from bench.measure import _HZ, _tree_jiffies
from schema.envelope import subject_token

TARGETS_MS = {"enriched": 250.0, "scored": 250.0, "assigned": 250.0, "webhook": 500.0}
"""Issue #6: p99 ≤ 250 ms for (a)-(c), ≤ 500 ms for (d); issue #5: score visible p99 ≤ 1 s."""
POLL_S = 0.02
GIVE_UP_S = 30.0
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}

MODEL = {
    "model_id": "bench", "rules": [
        {"name": "business email", "expression": 'lead.email_status == "valid"', "points": 10},
        {"name": "has company", "expression": 'lead.company != null', "points": 10},
        {"name": "us", "expression": 'lead.country == "US"', "points": 15},
        {"name": "senior", "expression": 'lead.seniority in ["director", "vp", "c_level"]',
         "points": 20},
        {"name": "tagged enterprise", "expression": '"enterprise" in lead.tags', "points": 25},
    ],
    "bands": [{"name": "A", "min_score": 60}, {"name": "B", "min_score": 30},
              {"name": "C", "min_score": 0}],
}
TEAMS = {"teams": [{"id": "inbound", "name": "Inbound", "strategy": "round-robin", "members": [
    {"owner": "ana@seller.example"}, {"owner": "ben@seller.example"},
    {"owner": "cy@seller.example"}]}]}
RULES = {"rules": [{"id": "us", "name": "US inbound", "condition": 'lead.country == "US"',
                    "target_kind": "team", "target": "inbound"}],
         "fallback_queue": "unrouted"}


FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia",
         "Ken", "Margaret", "Tim", "Hedy", "Claude", "Katherine", "Dennis", "Sophie", "Linus")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus",
        "Perlman", "Thompson", "Hamilton", "Berners", "Lamarr", "Shannon", "Johnson", "Ritchie")


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n))


def lead_body(n: int, run: str) -> dict[str, object]:
    """A realistic, distinct lead: people rarely share a name and company, so the fuzzy
    matcher has candidates to look at but (almost) nothing to flag."""
    rng = random.Random(f"{run}-{n}")
    first, last = rng.choice(FIRST), rng.choice(LAST) + _word(rng, 3)
    company = _word(rng, 8).capitalize()
    domain = f"{company.lower()}{run}.example"
    return {
        "first_name": first, "last_name": last, "email": f"{first.lower()}@{domain}",
        "phone": f"+1 512 {rng.randint(200, 999)} {rng.randint(0, 9999):04d}",
        "company": f"{company} Analytics Inc.", "title": "Head of Data",
        "website": f"https://{domain}", "country": "US", "city": "Austin",
        "source": "web_form", "external_id": f"crm-{run}-{n}", "industry": "software",
        "seniority": "director", "department": "engineering", "stage": "lead",
        "tags": ["webinar-2025", "enterprise"],
    }


# -- the webhook receiver ----------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that records when each lead's `lead.created` webhook arrived."""

    def __init__(self) -> None:
        import uvicorn

        self.arrived: dict[str, float] = {}
        self.port = _free_port()
        config = uvicorn.Config(self._app, host="127.0.0.1", port=self.port, log_level="error", interface="asgi3",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _app(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        at = time.time()
        try:
            payload = msgspec.json.decode(body)
            if payload.get("type") == "lead.created":
                self.arrived.setdefault(payload["data"]["lead_id"], at)
        except (msgspec.DecodeError, KeyError, TypeError):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the service -------------------------------------------------------------------------------


class Service:
    def __init__(self, database_url: str, nats_url: str) -> None:
        from ledger.crypto import generate_master_key

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        run = uuid.uuid4().hex[:8]
        self.env = {
            **os.environ, "LEADLEDGER_DATABASE_URL": database_url,
            "LEADLEDGER_NATS_URL": nats_url, "LEADLEDGER_MASTER_KEY": generate_master_key(),
            "LEADLEDGER_STREAM": f"LLBENCH_{run}", "LEADLEDGER_SUBJECT_PREFIX": f"llbench{run}",
            "LEADLEDGER_PORT": str(self.port), "LEADLEDGER_LOG_FORMAT": "json",
            "LEADLEDGER_LOG_LEVEL": "warning", "PYTHONPATH": str(Path.cwd()),
        }
        self.log_path = Path(tempfile.gettempdir()) / f"bench_pipeline_{run}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "up"], env=self.env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("leadledger up exited")
            time.sleep(0.3)
        raise RuntimeError("leadledger up did not become healthy")

    def stop(self) -> None:
        print(f"service log: {self.log_path}", file=sys.stderr)
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._delete_stream()

    def _delete_stream(self) -> None:
        import nats
        import nats.js.errors

        async def delete() -> None:
            nc = await nats.connect(self.env["LEADLEDGER_NATS_URL"])
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(self.env["LEADLEDGER_STREAM"])
            await nc.close()

        asyncio.run(delete())


async def admin_token(database_url: str) -> str:
    from api.keys import KeyStore

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        issued = await KeyStore(conn).create("bench", "admin", "bench", rate_limit=100_000_000)
    return issued.token


async def configure(client: aiohttp.ClientSession, receiver_url: str) -> None:
    steps = [
        ("PUT", "/v1/outbound/allowlist", {"networks": ["127.0.0.0/8"]}),
        ("POST", "/v1/scoring/models", MODEL),
        ("POST", "/v1/scoring/models/bench/versions/1/activate", None),
        ("PUT", "/v1/routing/teams", TEAMS),
        ("PUT", "/v1/routing/rules", RULES),
        ("POST", "/v1/webhooks", {"url": receiver_url, "event_types": ["lead.created"]}),
    ]
    for method, path, body in steps:
        sent = {} if body is None else {"data": _encode(body), "headers": _JSON}
        async with client.request(method, path, **sent) as response:
            if response.status >= 300:
                raise RuntimeError(f"{method} {path}: {response.status} {await response.text()}")


# -- the load ----------------------------------------------------------------------------------


class Timeline(msgspec.Struct):
    """When the POST returned, and when the read model first showed each effect (polled)."""

    returned: float
    visible: float | None = None
    enriched: float | None = None
    scored: float | None = None
    assigned: float | None = None


OBSERVED = {"LeadCreated": "published", "LeadEnriched": "enriched", "LeadScored": "scored",
            "LeadAssigned": "assigned"}
"""Event types timed on NATS, by the series they time."""


class Observer:
    """A plain NATS subscription to the service's subjects (`<prefix>.<workspace>.lead.<lead>.
    <EventType>`): when each lead's first event of each observed type arrived."""

    def __init__(self, nats_url: str, prefix: str) -> None:
        self.nats_url, self.prefix = nats_url, prefix
        self.arrived: dict[tuple[str, str], float] = {}
        self._nc = None

    async def __aenter__(self) -> Self:
        import nats

        async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
            now = time.time()
            parts = msg.subject.split(".")
            series = OBSERVED.get(parts[-1])
            if series is not None:
                self.arrived.setdefault((parts[-2], series), now)

        self._nc = await nats.connect(self.nats_url)
        await self._nc.subscribe(f"{self.prefix}.>", cb=on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._nc is not None:
            await self._nc.close()


async def watch(client: aiohttp.ClientSession, lead_id: str, line: Timeline) -> None:
    deadline = time.time() + GIVE_UP_S
    while time.time() < deadline:
        try:
            async with client.get(f"/v1/leads/{lead_id}") as response:
                status, body = response.status, await response.read()
        except aiohttp.ClientConnectionError:  # a keep-alive connection the server just closed
            continue
        now = time.time()
        if status == 200:
            lead = msgspec.json.decode(body)
            line.visible = line.visible or now
            if lead["enrichment"] and line.enriched is None:
                line.enriched = now
            if lead["score"] is not None and line.scored is None:
                line.scored = now
            if lead["assigned_by"] and line.assigned is None:
                line.assigned = now
            if line.enriched and line.scored and line.assigned:
                return
        await asyncio.sleep(POLL_S)


async def drive(client: aiohttp.ClientSession, rate: float, duration: float, sample: int
                ) -> tuple[dict[str, Timeline], list[asyncio.Task], int]:
    run = uuid.uuid4().hex[:6]
    lines: dict[str, Timeline] = {}
    watchers: list[asyncio.Task] = []
    errors = 0
    creates: list[asyncio.Task] = []
    start = time.monotonic()

    async def create(n: int) -> None:
        nonlocal errors
        try:
            async with client.post("/v1/leads", data=_encode(lead_body(n, run)),
                                   headers=_JSON) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
            return
        if status != 201:
            errors += 1
            return
        lead_id = msgspec.json.decode(body)["id"]
        lines[lead_id] = line = Timeline(returned=time.time())
        if sample and n % sample == 0:
            watchers.append(asyncio.create_task(watch(client, lead_id, line)))

    total = int(rate * duration)
    for n in range(total):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        creates.append(asyncio.create_task(create(n)))
    await asyncio.gather(*creates)
    return lines, watchers, errors


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latencies_ms(lines: dict[str, Timeline], field: str) -> list[float]:
    return [
        (getattr(line, field) - line.returned) * 1000 for line in lines.values()
        if getattr(line, field) is not None
    ]


class RateRun(msgspec.Struct):
    """One load level: what was offered and achieved, and each latency series (ms)."""

    rate: float
    achieved: float
    created: int
    errors: int
    series: dict[str, list[float]]
    service_cpu_ms: float = 0.0
    """CPU of the service's processes per lead created (ms), over the load and its drain."""
    postgres_cpu_ms: float | None = None
    """The same for the embedded PostgreSQL (None on an external server)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="10,100",
                        help="creates per second, one run each (comma separated)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of load at the same rate before, not timed")
    parser.add_argument("--sample", type=int, default=0,
                        help="also poll every Nth lead's read model (0: none)")
    parser.add_argument("--from-json", action="store_true")
    args = parser.parse_args()
    if args.from_json:
        rerender("pipeline", markdown)
        return
    nats_url = os.environ.get("LEADLEDGER_BENCH_NATS_URL", "nats://127.0.0.1:4222")
    started = load_average()
    runs = []
    with BenchServer() as pg:
        for rate in (float(r) for r in args.rates.split(",")):
            runs.append(one_rate(pg, nats_url, rate, args.duration, args.sample, args.warmup))
            print(runs[-1].rate, runs[-1].achieved, {k: len(v) for k, v in runs[-1].series.items()},
                  flush=True)
        machine = describe_machine(pg, packages=("litestar", "nats-py", "psycopg"))
    results = build_results(args, runs, machine, started)
    write_results(results)
    update_results_md("pipeline", markdown(results))
    print(markdown(results))


def one_rate(pg: BenchServer, nats_url: str, rate: float, duration: float, sample: int,
             warmup: float) -> RateRun:
    """A fresh database and service for each load level."""
    with Receiver() as receiver:
        database_url = pg.create_database(f"bench_pipeline_{int(rate)}")
        service = Service(database_url, nats_url)
        try:
            service.wait_ready()
            token = asyncio.run(admin_token(database_url))
            load = asyncio.run(_run(service, token, receiver, pg, rate, duration, sample,
                                    warmup))
        finally:
            service.stop()
    lines = load.lines
    series = {name: [(load.observed[(subject_token(lead_id), name)] - line.returned) * 1000
                     for lead_id, line in lines.items()
                     if (subject_token(lead_id), name) in load.observed]
              for name in OBSERVED.values()}
    if sample:
        series |= {f"api_{name}": latencies_ms(lines, name)
                   for name in ("visible", "enriched", "scored", "assigned")}
    series["webhook"] = [
        (receiver.arrived[lead_id] - line.returned) * 1000
        for lead_id, line in lines.items() if lead_id in receiver.arrived
    ]
    created = max(len(lines), 1)
    return RateRun(rate=rate, achieved=round(len(lines) / load.seconds, 1), created=len(lines),
                   errors=load.errors, series=series,
                   service_cpu_ms=round(load.service_cpu_s * 1000 / created, 2),
                   postgres_cpu_ms=None if load.postgres_cpu_s is None
                   else round(load.postgres_cpu_s * 1000 / created, 2))


class Load(msgspec.Struct):
    lines: dict[str, Timeline]
    observed: dict[tuple[str, str], float]
    errors: int
    seconds: float
    service_cpu_s: float
    postgres_cpu_s: float | None


async def _run(service: Service, token: str, receiver: Receiver, pg: BenchServer, rate: float,
               duration: float, sample: int, warmup: float) -> Load:
    postgres = pg.own_pids()[1:]
    # aiohttp rather than httpx: the load generator shares the machine's two cores with the
    # service, and an httpx request costs several times the client CPU of an aiohttp one.
    async with aiohttp.ClientSession(
        base_url=service.url, connector=aiohttp.TCPConnector(limit=256),
        timeout=aiohttp.ClientTimeout(total=30),
        headers={"authorization": f"Bearer {token}"},
    ) as client, \
            Observer(service.env["LEADLEDGER_NATS_URL"],
                     service.env["LEADLEDGER_SUBJECT_PREFIX"]) as observer:
        await configure(client, receiver.url)
        if warmup:  # a cold service (new connections, consumers, compiled rules) is not timed
            await drive(client, rate, warmup, 0)
            await asyncio.sleep(2.0)
        cpu0 = _tree_jiffies([service.process.pid]), _tree_jiffies(postgres)
        began = time.monotonic()
        lines, watchers, errors = await drive(client, rate, duration, sample)
        seconds = time.monotonic() - began
        await asyncio.gather(*watchers)
        wanted = [(subject_token(lead), name) for lead in lines for name in OBSERVED.values()]
        deadline = time.monotonic() + GIVE_UP_S
        while time.monotonic() < deadline and not (
            all(key in observer.arrived for key in wanted)
            and all(lead in receiver.arrived for lead in lines)
        ):
            await asyncio.sleep(0.1)
        cpu1 = _tree_jiffies([service.process.pid]), _tree_jiffies(postgres)
    return Load(lines, dict(observer.arrived), errors, seconds,
                (cpu1[0] - cpu0[0]) / _HZ, (cpu1[1] - cpu0[1]) / _HZ if postgres else None)


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    return {"count": len(values), "p50": round(statistics.median(values), 1),
            "p99": round(percentile(values, 0.99), 1), "max": round(max(values), 1)}


BASELINE = "published"


def build_results(args: argparse.Namespace, runs: list[RateRun], machine,  # type: ignore[no-untyped-def]
                  started: list[float]) -> Results:
    figures, comparisons = [], []
    for run in runs:
        stats = {name: _stats(values) for name, values in run.series.items()}
        base = stats[BASELINE]["p50"]
        for name, st in stats.items():
            if not st["count"]:
                continue
            target = TARGETS_MS.get(name)
            own_base = name == BASELINE or name.startswith("api_")
            figures.append(Figure(
                name=f"{name}_ms@{int(run.rate)}/s", writers=int(run.rate),
                unit="ms after POST returned", value=float(st["p50"] or 0),
                samples=[float(st["p50"] or 0), float(st["p99"] or 0)],
                baseline=None if own_base else f"{BASELINE}_ms@{int(run.rate)}/s",
                baseline_value=None if own_base else base,
                ratio=None if own_base or not base else round(
                    float(st["p50"] or 0) / float(base), 2),
                target=target, met=None if target is None else float(st["p99"] or 0) <= target,
            ))
            if target:
                p99 = float(st["p99"] or 0)
                comparisons.append(Comparison(
                    name=f"{name} p99 ms at {run.rate:g}/s", writers=int(run.rate),
                    numerator=f"{name}_ms@{int(run.rate)}/s", denominator="target",
                    ratio=round(p99 / target, 2), target=1.0, met=p99 <= target))
    return Results(
        benchmark="pipeline", date=now_iso(),
        command="python -m bench.bench_pipeline " + " ".join(sys.argv[1:]),
        settings={"rates": args.rates, "duration_s": args.duration, "warmup_s": args.warmup,
                  "sample_every": args.sample,
                  "poll_ms": POLL_S * 1000, "service": _service_shape()},
        machine=machine, figures=figures, comparisons=comparisons,
        load_average={"start": started, "end": load_average()},
        details={"runs": [{"rate": r.rate, "achieved": r.achieved, "created": r.created,
                           "errors": r.errors, "service_cpu_ms": r.service_cpu_ms,
                           "postgres_cpu_ms": r.postgres_cpu_ms,
                           "stats": {n: _stats(v) for n, v in r.series.items()}}
                          for r in runs]},
    )


def _service_shape() -> str:
    from api.settings import Settings

    workers = os.environ.get("LEADLEDGER_WORKER_PROCESSES", str(Settings().worker_processes))
    return f"leadledger up, LEADLEDGER_WORKER_PROCESSES={workers}"


LABELS = (("published", "baseline: its LeadCreated on NATS"),
          ("enriched", "(a) enriched: LeadEnriched on NATS"),
          ("scored", "(b) scored: LeadScored on NATS"),
          ("assigned", "(c) assigned: LeadAssigned on NATS"),
          ("webhook", "(d) webhook received"),
          ("api_visible", "read model: the lead (polled sample)"),
          ("api_enriched", "read model: enriched (polled sample)"),
          ("api_scored", "read model: scored (polled sample)"),
          ("api_assigned", "read model: assigned (polled sample)"))


def markdown(results: Results) -> str:
    s = results.settings
    polled = (f" Every {s['sample_every']}th lead is also polled every {s['poll_ms']:.0f} ms "
              "(`GET /v1/leads/{id}`) until the read model shows all three."
              if s["sample_every"] else "")
    lines = [
        "## From a create to its effects (`bench/bench_pipeline.py`)", "",
        f"- **Date:** {results.date}",
        f"- **Machine:** {machine_markdown(results.machine)}",
        (f"- **Load average** (1/5/15 min) at start {results.load_average['start']}, at end "
         f"{results.load_average['end']}."),
        f"- **Reproduce:** `{results.command}`",
        (f"- **Method:** creates open-loop at each rate for {s['duration_s']} s (after "
         f"{s.get('warmup_s', 0):g} s at the same rate, not timed) against "
         f"`{s.get('service', 'leadledger up')}` (HTTP, relay, projections, the scoring "
         "processor, the enrich, route and webhooks reactors, the webhook sender) on the "
         "system NATS and the benchmark's PostgreSQL, a fresh database per rate; the workspace "
         "has an active 5-rule scoring model, a round-robin team and rule, and a webhook "
         "endpoint for `lead.created` on a loopback receiver. Every lead's LeadCreated, "
         "LeadEnriched, LeadScored and LeadAssigned are timed on arrival at a plain NATS "
         "subscription to the stream's subjects (what a downstream consumer sees), every "
         f"webhook on arrival at the receiver.{polled} Times are from the moment the POST "
         "returned (an effect can arrive before that: negative). Baseline: the lead's own "
         "LeadCreated on NATS. CPU per lead: the service's processes and the embedded "
         "PostgreSQL, over the load and its drain; the load generator, the receiver and NATS "
         "share the same 2 cores."),
    ]
    runs = results.details["runs"]
    assert isinstance(runs, list)
    for run in runs:
        stats = run["stats"]
        base = stats.get(BASELINE, {}).get("p50")
        pg_cpu = run.get("postgres_cpu_ms")
        cpu = (f"; CPU per lead: service {run.get('service_cpu_ms', 0):.1f} ms"
               + ("" if pg_cpu is None else f", PostgreSQL {pg_cpu:.1f} ms"))
        lines += ["", (f"**{run['rate']:g} creates/s offered** (achieved {run['achieved']}/s, "
                       f"{run['created']} created, {run['errors']} errors{cpu}):"), "",
                  ("| from POST returning to | leads | p50 ms | p99 ms | max ms | "
                  "p50 ÷ baseline p50 | target (p99) |"),
                  "|---|---:|---:|---:|---:|---:|---|"]
        for name, label in LABELS:
            st = stats.get(name)
            if st is None:
                continue
            if not st["count"]:
                lines.append(f"| {label} | 0 | - | - | - | - | - |")
                continue
            target = TARGETS_MS.get(name)
            verdict = "-" if target is None else (
                f"{target:g} ms: " + ("met" if st["p99"] <= target else "**missed**"))
            own_base = name == BASELINE or name.startswith("api_")
            ratio = "-" if own_base or not base else f"{st['p50'] / base:.2f}"
            lines.append(f"| {label} | {st['count']} | {st['p50']} | {st['p99']} | {st['max']} "
                         f"| {ratio} | {verdict} |")
    lines += ["", ("Issue #6's targets are p99 ≤ 250 ms for (a)–(c) and ≤ 500 ms for (d) at 100 "
                   "creates/s or more.")]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
