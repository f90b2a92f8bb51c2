"""The scoring processor, the score history and activation rescoring, end to end.

With the workers running (relay, projections, the scoring processor), over HTTP: a lead's score
and its decomposition follow its activities and field changes, each change is in the history
with its cause, the processor never scores its own output, activating a model rescores existing
leads in the background with its progress in the job endpoint and `leadledger status`, and
`leadledger replay score-history` rebuilds what the live projection holds. Without workers: the
same batch applied twice (a redelivery) appends one score and one history row.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from ledger.lead_commands import LeadCommands
from ledger.lease import lock_id
from ledger.scoring_models import ScoringModels
from ledger.store import EventStore
from processors.rescore import Rescorer, create_job, get_job
from processors.scoring import ScoringProcessor
from projections.leads import LeadsProjection
from projections.runner import apply_batch
from projections.score_history import ScoreHistoryProjection, latest_score, score_history
from schema.commands import CreateLead, RecordActivity
from schema.events import LeadFields
from schema.metadata import Actor, EventMetadata
from schema.positions import LogPosition
from schema.scoring import ScoreBand, ScoringModelSpec, ScoringRule
from tests.http_support import *
from tests.http_support import Keys, auth, lead_body, make_app, without_enrichment
from tests.test_cli import cli_env, run_cli


@pytest.fixture
def api_app(infra: Any, http_settings: Any) -> Any:
    """Without built-in enrichment: its events would rescore leads live, racing the rescore
    jobs these tests count (and adding causes the history assertions do not expect)."""
    return make_app(infra, http_settings, reactors=without_enrichment())

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

MODEL = {
    "model_id": "inbound",
    "rules": [
        {"name": "german", "expression": 'lead.country == "DE"', "points": 10},
        {"name": "demo", "expression": "activity.demo_request.count > 0", "points": 40},
        {"name": "browsing", "expression": 'count("page_view", 30) >= 2', "points": 5},
        {"name": "cold", "expression": 'lead.stage == "lost"', "points": -30},
    ],
    "bands": [{"name": "A", "min_score": 50}, {"name": "B", "min_score": 20},
              {"name": "C", "min_score": 0}],
    "min_score": 0,
}


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def activate(tc: TestClient, keys: Keys, body: dict[str, Any] = MODEL, *,
             wait: bool = True) -> dict[str, Any]:
    """Saves and activates a model; `wait`s until its rescore job is over (so that the scores
    that follow are the processor's, caused by the test's writes)."""
    saved = tc.post("/v1/scoring/models", json=body, headers=auth(keys.admin))
    assert saved.status_code == 201, saved.text
    version = saved.json()["version"]
    response = tc.post(f"/v1/scoring/models/{body['model_id']}/versions/{version}/activate",
                       headers=auth(keys.admin))
    assert response.status_code == 202, response.text
    activation = response.json()
    if wait:
        eventually(lambda: tc.get(f"/v1/scoring/rescore-jobs/{activation['job']['id']}",
                                  headers=auth(keys.admin)).json()["status"] == "done", 60,
                   "the rescore job")
    return activation


def score_after(tc: TestClient, token: str, lead_id: str, write: Any) -> dict[str, Any]:
    """The lead's score as of `write` (its consistency token)."""
    response = tc.get(f"/v1/leads/{lead_id}/score",
                      headers=auth(token, **{"x-consistency-token":
                                             write.headers["x-consistency-token"]}))
    assert response.status_code == 200, response.text
    return response.json()


def contributions(score: dict[str, Any]) -> dict[str, float]:
    return {c["rule"]: c["points"] for c in score["contributions"]}


def lead_scored_count(infra: Any, lead_id: str) -> int:
    with psycopg.connect(infra.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE stream_id = %s "
                           "AND event_type = 'LeadScored'", (lead_id,)).fetchone()
    return row[0]


def caught_up(infra: Any, name: str) -> bool:
    """Whether projection `name` has applied everything in the ledger."""
    with psycopg.connect(infra.database_url) as conn:
        row = conn.execute(
            "SELECT (SELECT (transaction_id, position) FROM checkpoints WHERE name = %s) >= "
            "(SELECT (transaction_id, position) FROM events ORDER BY transaction_id DESC, "
            "position DESC LIMIT 1)", (name,)).fetchone()
    return bool(row and row[0])


def test_scores_follow_the_lead_with_their_causes(tc: TestClient, keys: Keys, infra) -> None:
    activate(tc, keys)
    created = tc.post("/v1/leads", json=lead_body(1, country="GB"), headers=auth(keys.sales))
    assert created.status_code == 201
    lead_id = created.json()["id"]
    first = score_after(tc, keys.sales, lead_id, created)
    assert first["score"] == 0 and first["band"] == "C" and first["model"] == "inbound@1"
    assert first["cause"]["type"] in ("LeadCreated", "LeadEmailChecked")

    demo = tc.post(f"/v1/leads/{lead_id}/activities", headers=auth(keys.sales),
                   json={"kind": "demo_request", "properties": {"form": "pricing"}})
    assert demo.status_code == 201, demo.text
    assert demo.json()["kind"] == "demo_request" and demo.headers["etag"]
    second = score_after(tc, keys.sales, lead_id, demo)
    assert second["score"] == 40 and second["band"] == "B"
    assert contributions(second) == {"german": 0, "demo": 40, "browsing": 0, "cold": 0}
    by_rule = {c["rule"]: c for c in second["contributions"]}
    assert by_rule["demo"]["matched"] and by_rule["demo"]["observed"] == {
        "activity.demo_request.count": 1}
    assert by_rule["german"]["observed"] == {"lead.country": "GB"}
    assert second["cause"] == {"type": "LeadActivityRecorded", "event_id": second["cause"][
        "event_id"]} and second["cause"]["event_id"]

    moved = tc.patch(f"/v1/leads/{lead_id}", json={"country": "DE"}, headers=auth(keys.sales))
    assert moved.status_code == 200, moved.text
    third = score_after(tc, keys.sales, lead_id, moved)
    assert third["score"] == 50 and third["band"] == "A"
    assert third["cause"]["type"] == "LeadFieldsChanged"

    # One page view changes nothing (no new score); the second crosses the rule's threshold.
    views = [tc.post(f"/v1/leads/{lead_id}/activities", headers=auth(keys.sales),
                     json={"kind": "page_view", "properties": {"url": "/pricing"}})
             for _ in range(2)]
    fourth = score_after(tc, keys.sales, lead_id, views[-1])
    assert fourth["score"] == 55 and contributions(fourth)["browsing"] == 5

    history = tc.get(f"/v1/leads/{lead_id}/score/history?limit=3", headers=auth(keys.sales))
    assert history.status_code == 200
    page = history.json()
    assert [s["score"] for s in page["data"]] == [55, 50, 40]
    assert [s["cause"]["type"] for s in page["data"]] == [
        "LeadActivityRecorded", "LeadFieldsChanged", "LeadActivityRecorded"]
    rest = tc.get(f"/v1/leads/{lead_id}/score/history?limit=3&cursor={page['next_cursor']}",
                  headers=auth(keys.sales)).json()
    assert [s["score"] for s in rest["data"]] == [0] and rest["next_cursor"] is None

    # The lead read model carries the latest score too.
    lead = tc.get(f"/v1/leads/{lead_id}", headers=auth(keys.sales, **{
        "x-consistency-token": views[-1].headers["x-consistency-token"]})).json()
    eventually(lambda: tc.get(f"/v1/leads/{lead_id}", headers=auth(keys.sales)).json()[
        "score"] == 55, what="the lead read model")
    assert lead["score_model"] in (None, "inbound@1")

    # The processor never scores its own output: once it has read every LeadScored, the lead
    # still has exactly the four scores the history shows.
    eventually(lambda: caught_up(infra, "scoring"), what="the scoring processor")
    assert lead_scored_count(infra, lead_id) == 4
    time.sleep(0.5)
    assert caught_up(infra, "scoring") and lead_scored_count(infra, lead_id) == 4

    # Activities are listed from the ledger, oldest first, by page.
    listed = tc.get(f"/v1/leads/{lead_id}/activities?limit=2", headers=auth(keys.analyst))
    assert listed.status_code == 200
    assert [a["kind"] for a in listed.json()["data"]] == ["demo_request", "page_view"]
    more = tc.get(f"/v1/leads/{lead_id}/activities?limit=2&cursor="
                  f"{listed.json()['next_cursor']}", headers=auth(keys.analyst)).json()
    assert [a["kind"] for a in more["data"]] == ["page_view"] and more["next_cursor"] is None
    only = tc.get(f"/v1/leads/{lead_id}/activities?kind=demo_request",
                  headers=auth(keys.analyst)).json()
    assert [a["properties"] for a in only["data"]] == [{"form": "pricing"}]

    # Another workspace sees neither the score nor the activities.
    assert tc.get(f"/v1/leads/{lead_id}/score", headers=auth(keys.other)).status_code == 404
    assert tc.get(f"/v1/leads/{lead_id}/activities",
                  headers=auth(keys.other)).status_code == 404


def test_activities_are_validated_and_idempotent(tc: TestClient, keys: Keys) -> None:
    lead_id = tc.post("/v1/leads", json=lead_body(2), headers=auth(keys.sales)).json()["id"]
    path = f"/v1/leads/{lead_id}/activities"
    for body, field in (({"kind": "telepathy"}, "kind"), ({"kind": "custom"}, "name"),
                        ({"kind": "call", "occurred_at": "2025-01-01T10:00:00"}, "occurred_at")):
        response = tc.post(path, json=body, headers=auth(keys.sales))
        assert response.status_code == 422, response.text
        assert field in json.dumps(response.json()["errors"])
    assert tc.post(path, json={"kind": "call"}, headers=auth(keys.analyst)).status_code == 403
    assert tc.post("/v1/leads/nope/activities", json={"kind": "call"},
                   headers=auth(keys.sales)).status_code == 404

    body = {"kind": "custom", "name": "Webinar: Q3", "occurred_at": "2025-03-04T10:15:00Z"}
    headers = auth(keys.sales, **{"idempotency-key": "webinar-1"})
    first = tc.post(path, json=body, headers=headers)
    again = tc.post(path, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    listed = tc.get(path, headers=auth(keys.sales)).json()["data"]
    assert len(listed) == 1 and listed[0]["name"] == "Webinar: Q3"
    assert listed[0]["occurred_at"] == "2025-03-04T10:15:00Z"


def test_no_score_without_an_active_model(tc: TestClient, keys: Keys) -> None:
    created = tc.post("/v1/leads", json=lead_body(3), headers=auth(keys.sales))
    response = tc.get(f"/v1/leads/{created.json()['id']}/score", headers=auth(
        keys.sales, **{"x-consistency-token": created.headers["x-consistency-token"]}))
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")


def test_activation_rescores_existing_leads_in_the_background(
    tc: TestClient, keys: Keys, infra,
) -> None:
    ids = []
    for n in range(25):
        response = tc.post("/v1/leads", json=lead_body(100 + n, country="DE" if n % 2 else "GB"),
                           headers=auth(keys.sales))
        ids.append(response.json()["id"])
    # Leads the scoring processor has seen with no active model: only the job scores them (a
    # lead the processor reaches after the activation is scored by it, with its own cause).
    eventually(lambda: caught_up(infra, "scoring"), what="the scoring processor")
    job = activate(tc, keys, wait=False)["job"]
    assert job["status"] == "running" and job["total"] <= 25

    def finished() -> dict[str, Any] | None:
        found = tc.get(f"/v1/scoring/rescore-jobs/{job['id']}", headers=auth(keys.admin)).json()
        return found if found["status"] == "done" else None

    done = eventually(finished, 60, "the rescore job")
    assert done["done"] == done["total"] == done["changed"] == 25 and done["progress"] == 1.0
    eventually(lambda: caught_up(infra, "score-history"), what="the history")
    for n, lead_id in enumerate(ids):
        score = tc.get(f"/v1/leads/{lead_id}/score", headers=auth(keys.sales)).json()
        assert score["score"] == (10 if n % 2 else 0) and score["model"] == "inbound@1"
        assert score["cause"] == {"type": "ModelActivated", "event_id": None}

    # A second model: the first job is over, the new one rescores everyone again.
    second = activate(tc, keys, {**MODEL, "model_id": "fit", "rules": MODEL["rules"][:1]})

    status = run_cli("status", "--json", env=cli_env(infra))
    assert status.returncode == 0, status.stderr
    jobs = {j["job_id"]: j for j in json.loads(status.stdout)["rescore_jobs"]}
    assert jobs[job["id"]]["status"] == "done" and jobs[job["id"]]["done"] == 25
    assert jobs[second["job"]["id"]]["model"] == "fit@1"
    table = run_cli("status", env=cli_env(infra, COLUMNS="250"))
    assert "rescore jobs" in table.stdout and second["job"]["id"] in table.stdout

    # The rebuilt history equals the live one.
    eventually(lambda: caught_up(infra, "score-history"), what="the history")
    check = run_cli("replay", "score-history", "--check", env=cli_env(infra))
    assert check.returncode == 0, check.stdout + check.stderr
    before = history_rows(infra)
    assert len(before) == 50
    swapped = run_cli("replay", "score-history", env=cli_env(infra))
    assert swapped.returncode == 0, swapped.stderr
    assert history_rows(infra) == before


def history_rows(infra: Any) -> list[tuple]:
    with psycopg.connect(infra.database_url) as conn:
        return conn.execute("SELECT * FROM score_history ORDER BY workspace, lead_id, version"
                            ).fetchall()


def test_score_latency_under_a_stream_of_writes(tc: TestClient, keys: Keys) -> None:
    """From the write to its score visible in the API: measured on activities written one after
    another while other leads are written too (the numbers are printed; the bound is loose)."""
    activate(tc, keys)
    leads = [tc.post("/v1/leads", json=lead_body(200 + n), headers=auth(keys.sales)).json()["id"]
             for n in range(5)]
    latencies = []
    for n in range(30):
        lead_id = leads[n % len(leads)]
        started = time.monotonic()
        kind = "demo_request" if n < len(leads) else "page_view"
        write = tc.post(f"/v1/leads/{lead_id}/activities", json={"kind": kind},
                        headers=auth(keys.sales))
        token = write.headers["x-consistency-token"]
        response = tc.get(f"/v1/leads/{lead_id}/score",
                          headers=auth(keys.sales, **{"x-consistency-token": token}))
        assert response.status_code == 200, response.text
        latencies.append(time.monotonic() - started)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(f"write -> score visible: p50 {p50 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms")
    assert p99 < 3.0


# -- without workers: a redelivered batch ---------------------------------------------------------


async def test_a_batch_applied_twice_scores_and_records_once(
    pool: AsyncConnectionPool, store: EventStore,
) -> None:
    models = ScoringModels(pool)
    spec = ScoringModelSpec(
        rules=(ScoringRule(name="demo", expression="activity.demo_request.count > 0",
                           points=40),),
        bands=(ScoreBand(name="hot", min_score=40),),
    )
    await models.save("acme", "m", spec, "k")
    await models.activate("acme", "m", 1, "k")
    commands = LeadCommands(store)
    meta = EventMetadata(actor=Actor(key_id="test", role="admin"), source="api")
    await commands.execute("acme", "L1", CreateLead(lead_id="L1", fields=LeadFields(
        company="Initech"), stage="lead"), meta)
    await commands.execute("acme", "L1", RecordActivity(
        activity_id="a1", kind="demo_request", occurred_at=await _now(pool)), meta)
    events = await store.read_all(LogPosition(), 100)

    processor = ScoringProcessor(store, commands, models)
    for _ in range(2):  # a redelivery of the same batch, past a lost checkpoint
        async with pool.connection() as conn, conn.transaction():
            await processor.apply(conn, events)
    scored = [e for e in await store.read_all(LogPosition(), 100)
              if e.event.event_type == "LeadScored"]
    assert len(scored) == 1 and processor.scored == 1
    assert scored[0].event.score == 40 and scored[0].event.band == "hot"
    assert scored[0].metadata.causation_id == events[-1].event_id
    assert scored[0].metadata.source == "processor"

    history = ScoreHistoryProjection()
    everything = await store.read_all(LogPosition(), 100)
    async with pool.connection() as conn:
        for _ in range(2):
            async with conn.transaction():
                await history.apply(conn, everything)
        rows = await score_history(conn, "acme", "L1", None, 10)
        latest = await latest_score(conn, "acme", "L1")
    assert len(rows) == 1 and latest == rows[0]
    assert latest.observed == {"demo": {"activity.demo_request.count": 1}}
    assert latest.cause_type == "LeadActivityRecorded"


async def _now(pool: AsyncConnectionPool) -> Any:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT now()")
        row = await cur.fetchone()
    return row[0]


async def test_a_rescore_job_resumes_after_its_last_recorded_lead(
    pool: AsyncConnectionPool, store: EventStore,
) -> None:
    models = ScoringModels(pool)
    spec = ScoringModelSpec(rules=(ScoringRule(name="initech", points=10,
                                               expression='lead.company == "Initech"'),))
    commands = LeadCommands(store)
    meta = EventMetadata(actor=Actor(key_id="test", role="admin"), source="api")
    ids = [f"L{n}" for n in range(6)]
    for lead_id in ids:
        await commands.execute("acme", lead_id, CreateLead(lead_id=lead_id, fields=LeadFields(
            company="Initech"), stage="lead"), meta)
    async with pool.connection() as conn:  # the lead read model, as its projection makes it
        await apply_batch(conn, LeadsProjection(store), await store.read_all(LogPosition(), 100),
                          LogPosition())
    await models.save("acme", "m", spec, "k")
    async with pool.connection() as conn, conn.transaction():
        model, _ = await models.activate("acme", "m", 1, "k", conn=conn)
        job = await create_job(conn, model)
        # As if a process scored the first three leads, recorded it, and died.
        await conn.execute("UPDATE rescore_jobs SET done = 3, last_lead_id = 'L2' "
                           "WHERE job_id = %s", (job.job_id,))
    rescorer = Rescorer(store, commands, models, pool, max_per_s=1000)

    # Held by another process: this one leaves it alone.
    async with await psycopg.AsyncConnection.connect(pool.conninfo, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s)", (lock_id(f"rescore:{job.job_id}"),))
        await rescorer.run(job.job_id)
        async with pool.connection() as conn:
            assert (await get_job(conn, job.job_id)).status == "running"

    stop = asyncio.Event()
    resumer = asyncio.create_task(rescorer.resume(stop, every_s=0.1))
    for _ in range(200):
        async with pool.connection() as conn:
            finished = await get_job(conn, job.job_id)
        if finished.status == "done":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await resumer
    assert finished.status == "done" and finished.done == 6 and finished.changed == 3
    scored = {e.stream_id for e in await store.read_all(LogPosition(), 1000)
              if e.event.event_type == "LeadScored"}
    assert scored == {"L3", "L4", "L5"}  # after the last lead it had recorded, and only those
