"""Scoring models: the store (versions, immutability, one active per workspace) and
/v1/scoring over HTTP (save with compile errors and their positions, versions, activation, the
role gate, workspace isolation)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from api.http.settings import HttpSettings
from ledger.scoring_models import ACTIVE, DRAFT, RETIRED, ModelNotFound, ScoringModels
from schema.attributes import AttributeDefinition
from schema.scoring import ScoreBand, ScoringModelSpec, ScoringRule
from tests.http_support import *
from tests.http_support import Keys, auth, make_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SPEC = ScoringModelSpec(
    rules=(ScoringRule(name="german", expression='lead.country == "DE"', points=10),
           ScoringRule(name="demo", expression="activity.demo_request.count > 0", points=40)),
    bands=(ScoreBand(name="A", min_score=40), ScoreBand(name="B", min_score=0)),
)


def model_body(model_id: str = "inbound", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_id": model_id,
        "rules": [
            {"name": "german", "expression": 'lead.country == "DE"', "points": 10,
             "description": "Our market"},
            {"name": "demo", "expression": "activity.demo_request.count > 0", "points": 40},
            {"name": "freemail", "expression": 'lead.email_domain == "gmail.com"',
             "points": -15},
        ],
        "bands": [{"name": "A", "min_score": 40}, {"name": "B", "min_score": 0}],
        "min_score": 0, "max_score": 100, "mql_threshold": 40,
    }
    body.update(overrides)
    return body


# -- the store ----------------------------------------------------------------------------------


async def test_saving_makes_versions_and_reads_them_back(pool: AsyncConnectionPool) -> None:
    models = ScoringModels(pool)
    first = await models.save("acme", "inbound", SPEC, "key-1", "first try")
    changed = ScoringModelSpec(rules=SPEC.rules[:1], description="fit only")
    second = await models.save("acme", "inbound", changed, "key-2")
    other = await models.save("acme", "outbound", SPEC, "key-1")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.status == second.status == DRAFT and first.reason == "first try"
    assert (await models.get("acme", "inbound")).spec == changed  # latest
    assert (await models.get("acme", "inbound", 1)).spec == SPEC
    assert await models.get("acme", "inbound", 3) is None
    assert await models.get("globex", "inbound") is None  # another workspace
    assert [(m.model_id, m.version) for m in await models.list("acme")] == [
        ("inbound", 2), ("outbound", 1)]
    assert [m.version for m in await models.versions("acme", "inbound")] == [1, 2]


async def test_concurrent_saves_of_one_model_get_distinct_versions(
    pool: AsyncConnectionPool,
) -> None:
    import asyncio

    models = ScoringModels(pool)
    saved = await asyncio.gather(*(models.save("acme", "m", SPEC, "k") for _ in range(8)))
    assert sorted(m.version for m in saved) == list(range(1, 9))


async def test_a_saved_version_is_immutable(pool: AsyncConnectionPool) -> None:
    models = ScoringModels(pool)
    await models.save("acme", "inbound", SPEC, "key-1")
    async with pool.connection() as conn:
        for statement in (
            "UPDATE scoring_models SET spec = '{\"rules\": []}'",
            "UPDATE scoring_models SET version = 7",
            "DELETE FROM scoring_models",
        ):
            with pytest.raises(psycopg.Error, match="immutable|never deleted"):
                async with conn.transaction():
                    await conn.execute(statement)
    assert (await models.get("acme", "inbound")).spec == SPEC


async def test_activation_keeps_one_active_model_per_workspace(pool: AsyncConnectionPool) -> None:
    models = ScoringModels(pool)
    await models.save("acme", "inbound", SPEC, "k")
    await models.save("acme", "inbound", SPEC, "k")
    await models.save("globex", "inbound", SPEC, "k")
    assert await models.active("acme") is None
    first, changed = await models.activate("acme", "inbound", 1, "admin-key")
    assert changed and first.status == ACTIVE and first.activated_by == "admin-key"
    assert first.activated_at is not None
    again, changed = await models.activate("acme", "inbound", 1, "admin-key")
    assert not changed and again.version == 1
    second, _ = await models.activate("acme", "inbound", 2, "admin-key")
    assert (await models.active("acme")).version == 2 == second.version
    assert (await models.get("acme", "inbound", 1)).status == RETIRED
    assert await models.active("globex") is None  # untouched
    rolled_back, _ = await models.activate("acme", "inbound", 1, "admin-key")
    assert rolled_back.status == ACTIVE and (await models.active("acme")).version == 1
    with pytest.raises(ModelNotFound):
        await models.activate("acme", "inbound", 9, "admin-key")


async def test_a_scorer_holds_off_activation_without_holding_back_the_ledger(
    pool: AsyncConnectionPool,
) -> None:
    """A scorer's lock keeps its model active until the scorer's transaction ends (the next
    activation waits), and gives that transaction no id: gap-safe readers of the ledger are not
    held back while it reads and scores."""
    models = ScoringModels(pool)
    await models.save("lockco", "inbound", SPEC, "k")
    await models.save("lockco", "inbound", SPEC, "k")
    await models.activate("lockco", "inbound", 1, "k")
    async with pool.connection() as scorer, scorer.transaction():
        held = await models.active("lockco", conn=scorer, lock=True)
        assert held is not None and held.version == 1
        cur = await scorer.execute("SELECT pg_current_xact_id_if_assigned()")
        assert (await cur.fetchone())[0] is None
        activation = asyncio.create_task(models.activate("lockco", "inbound", 2, "k"))
        await asyncio.sleep(0.5)
        assert not activation.done()  # waits for the scorer
    second, changed = await asyncio.wait_for(activation, 10)
    assert changed and second.version == 2
    assert (await models.active("lockco")).version == 2


async def test_attribute_definitions_are_kept_with_the_version(pool: AsyncConnectionPool) -> None:
    models = ScoringModels(pool)
    plan = AttributeDefinition(name="plan", type="enum", values=("free", "pro"))
    saved = await models.save("acme", "m", SPEC, "k", attributes=(plan,))
    assert saved.attributes == (plan,)
    assert (await models.get("acme", "m", 1)).attributes == (plan,)


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.fixture
def sc(infra: Any, http_settings: HttpSettings) -> Iterator[TestClient]:
    """The app without the workers: models need none (activation still starts its rescore)."""
    with TestClient(make_app(infra, http_settings, workers=False),
                    raise_server_exceptions=False, timeout=30) as client:
        yield client


def test_save_read_and_version_models_over_http(sc: TestClient, keys: Keys) -> None:
    created = sc.post("/v1/scoring/models", json=model_body(reason="v1"),
                      headers=auth(keys.admin))
    assert created.status_code == 201, created.text
    model = created.json()
    assert model["model_id"] == "inbound" and model["version"] == 1
    assert model["status"] == "draft" and model["label"] == "inbound@1"
    assert [r["name"] for r in model["rules"]] == ["german", "demo", "freemail"]
    assert model["rules"][2]["points"] == -15 and model["max_score"] == 100
    assert model["reason"] == "v1" and model["created_by"] == keys.ids["admin"]
    assert created.headers["location"] == "/v1/scoring/models/inbound/versions/1"

    second = sc.post("/v1/scoring/models", json=model_body(description="tuned"),
                     headers=auth(keys.admin))
    assert second.status_code == 201 and second.json()["version"] == 2

    latest = sc.get("/v1/scoring/models/inbound", headers=auth(keys.analyst)).json()
    assert latest["version"] == 2 and latest["description"] == "tuned"
    v1 = sc.get("/v1/scoring/models/inbound/versions/1", headers=auth(keys.analyst)).json()
    assert v1 == model
    versions = sc.get("/v1/scoring/models/inbound/versions", headers=auth(keys.sales)).json()
    assert [m["version"] for m in versions["data"]] == [1, 2]
    listed = sc.get("/v1/scoring/models", headers=auth(keys.sales)).json()["data"]
    assert [(m["model_id"], m["version"]) for m in listed] == [("inbound", 2)]

    # Another workspace sees none of it.
    assert sc.get("/v1/scoring/models", headers=auth(keys.other)).json()["data"] == []
    for path in ("/v1/scoring/models/inbound", "/v1/scoring/models/inbound/versions/1",
                 "/v1/scoring/models/inbound/versions"):
        response = sc.get(path, headers=auth(keys.other))
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith("application/problem+json")


def test_an_invalid_rule_is_refused_with_its_position(sc: TestClient, keys: Keys) -> None:
    body = model_body(rules=[
        {"name": "fine", "expression": 'lead.country == "DE"', "points": 5},
        {"name": "broken", "expression": 'lead.country == "DE" &&\n  (lead.city == ', "points": 5},
        {"name": "unknown", "expression": "lead.shoe_size > 3", "points": 5},
        {"name": "mistyped", "expression": "lead.country > 3", "points": 5},
    ])
    response = sc.post("/v1/scoring/models", json=body, headers=auth(keys.admin))
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/validation-failed"
    by_rule = {p["rule"]: p for p in problem["problems"]}
    assert set(by_rule) == {"broken", "unknown", "mistyped"}
    broken = by_rule["broken"]
    assert broken["rule_index"] == 1 and broken["line"] == 2 and broken["column"] >= 1
    assert "syntax" in broken["message"]
    assert by_rule["unknown"]["rule_index"] == 2 and "shoe_size" in by_rule["unknown"]["message"]
    assert by_rule["mistyped"]["rule_index"] == 3
    fields = {e["field"] for e in problem["errors"]}
    assert {"rules[1].expression", "rules[2].expression", "rules[3].expression"} <= fields
    # Nothing was saved.
    assert sc.get("/v1/scoring/models", headers=auth(keys.admin)).json()["data"] == []

    duplicate = model_body(rules=[{"name": "same", "expression": "true", "points": 1},
                                  {"name": "same", "expression": "false", "points": 1}])
    response = sc.post("/v1/scoring/models", json=duplicate, headers=auth(keys.admin))
    assert response.status_code == 422 and response.json()["problems"][0]["rule"] == "same"


def test_rules_may_read_the_workspaces_custom_attributes(sc: TestClient, keys: Keys) -> None:
    body = model_body(rules=[{"name": "pro", "expression": 'attributes.plan == "pro"',
                              "points": 20}])
    refused = sc.post("/v1/scoring/models", json=body, headers=auth(keys.admin))
    assert refused.status_code == 422 and refused.json()["problems"][0]["rule"] == "pro"
    defined = sc.post("/v1/attributes", headers=auth(keys.admin), json={
        "name": "plan", "type": "enum", "values": ["free", "pro"]})
    assert defined.status_code == 201, defined.text
    accepted = sc.post("/v1/scoring/models", json=body, headers=auth(keys.admin))
    assert accepted.status_code == 201, accepted.text


def test_only_admins_save_and_activate(sc: TestClient, keys: Keys) -> None:
    for token in (keys.sales, keys.analyst):
        response = sc.post("/v1/scoring/models", json=model_body(), headers=auth(token))
        assert response.status_code == 403, response.text
    assert sc.post("/v1/scoring/models", json=model_body(),
                   headers=auth(keys.admin)).status_code == 201
    response = sc.post("/v1/scoring/models/inbound/versions/1/activate",
                       headers=auth(keys.sales))
    assert response.status_code == 403
    assert sc.get("/v1/scoring/active", headers=auth(keys.sales)).status_code == 404


def test_activation_over_http(sc: TestClient, keys: Keys) -> None:
    for _ in range(2):
        assert sc.post("/v1/scoring/models", json=model_body(),
                       headers=auth(keys.admin)).status_code == 201
    missing = sc.post("/v1/scoring/models/inbound/versions/5/activate", headers=auth(keys.admin))
    assert missing.status_code == 404
    response = sc.post("/v1/scoring/models/inbound/versions/1/activate",
                       headers=auth(keys.admin))
    assert response.status_code == 202, response.text
    activation = response.json()
    assert activation["model"]["status"] == "active" and activation["job"]["status"] in (
        "running", "done")
    job_id = activation["job"]["id"]
    assert sc.get("/v1/scoring/active", headers=auth(keys.analyst)).json()["label"] == "inbound@1"
    job = sc.get(f"/v1/scoring/rescore-jobs/{job_id}", headers=auth(keys.analyst))
    assert job.status_code == 200 and job.json()["model_version"] == 1
    assert sc.get(f"/v1/scoring/rescore-jobs/{job_id}",
                  headers=auth(keys.other)).status_code == 404

    again = sc.post("/v1/scoring/models/inbound/versions/1/activate", headers=auth(keys.admin))
    assert again.status_code == 200 and again.json()["job"] is None

    second = sc.post("/v1/scoring/models/inbound/versions/2/activate", headers=auth(keys.admin))
    assert second.status_code == 202
    assert sc.get("/v1/scoring/active", headers=auth(keys.admin)).json()["version"] == 2
    v1 = sc.get("/v1/scoring/models/inbound/versions/1", headers=auth(keys.admin)).json()
    assert v1["status"] == "retired"
    assert sc.get("/v1/scoring/active", headers=auth(keys.other)).status_code == 404
