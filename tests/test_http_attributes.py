"""Custom attributes over HTTP, on the real stack: definitions (versions, role gate, retiring,
workspaces apart), values on create, batch and PATCH with field-level errors, personal values
encrypted in the ledger, a changed definition reporting (never rewriting) stored values, and
filters and sorts on queryable attributes through GET /v1/leads, paged by cursor; and the
attribute's index serving the list query."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from api.http.lead_queries import LeadFilter, attribute_conditions, first_page_query, sort_key
from ledger.attribute_definitions import AttributeDefinitions, index_name
from schema.attributes import AttributeDefinition
from tests.http_support import *
from tests.http_support import Keys, auth, lead_body

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"
SEATS = {"name": "seats", "type": "integer", "minimum": 1, "queryable": True}
PLAN = {"name": "plan", "type": "enum", "values": ["free", "pro", "enterprise"],
        "queryable": True}
REGION = {"name": "region", "type": "string", "queryable": True}
BIRTHDAY = {"name": "birthday", "type": "date", "personal": True}


def problem(response: Any, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def define(tc: TestClient, keys: Keys, body: dict) -> dict:
    response = tc.post("/v1/attributes", json=body, headers=auth(keys.admin))
    assert response.status_code == 201, response.text
    return response.json()


def create(tc: TestClient, token: str, n: int, **attributes: Any) -> dict:
    response = tc.post("/v1/leads", json=lead_body(n, attributes=attributes),
                       headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json() | {"token": response.headers["x-consistency-token"]}


def listing(tc: TestClient, token: str, query: str, consistency: str) -> list[dict]:
    """Every page of a list query, following next_cursor."""
    leads, cursor = [], None
    while True:
        url = f"/v1/leads?{query}" + (f"&cursor={cursor}" if cursor else "")
        response = tc.get(url, headers=auth(token, **{"x-consistency-token": consistency}))
        assert response.status_code == 200, response.text
        page = response.json()
        leads += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return leads


def test_definitions_are_versioned_gated_and_per_workspace(tc: TestClient, keys: Keys) -> None:
    problem(tc.post("/v1/attributes", json=SEATS, headers=auth(keys.sales)), 403)
    created = define(tc, keys, SEATS)
    assert created["attribute"]["version"] == 1 and created["violations"] == 0
    problem(tc.post("/v1/attributes", json=SEATS, headers=auth(keys.admin)), 409)
    bad = problem(tc.put("/v1/attributes/seats", json={"type": "integer", "pattern": "x"},
                         headers=auth(keys.admin)), 422)
    assert bad["errors"][0]["field"] == "pattern"

    changed = tc.put("/v1/attributes/seats", json={**SEATS, "maximum": 500,
                                                   "reason": "cap"}, headers=auth(keys.admin))
    assert changed.status_code == 200, changed.text
    assert changed.json()["attribute"]["version"] == 2 and changed.json()["changed"]
    same = tc.put("/v1/attributes/seats", json={**SEATS, "maximum": 500},
                  headers=auth(keys.admin)).json()
    assert same["attribute"]["version"] == 2 and not same["changed"]
    versions = tc.get("/v1/attributes/seats/versions", headers=auth(keys.analyst)).json()["data"]
    assert [(v["version"], v["maximum"], v["reason"]) for v in versions] == [
        (1, None, None), (2, 500, "cap")]
    assert tc.get("/v1/attributes", headers=auth(keys.analyst)).json()["data"][0]["name"] == "seats"

    # another workspace sees none of it and may define its own of the same name
    assert tc.get("/v1/attributes", headers=auth(keys.other)).json()["data"] == []
    problem(tc.get("/v1/attributes/seats", headers=auth(keys.other)), 404)

    problem(tc.delete("/v1/attributes/seats", headers=auth(keys.sales)), 403)
    retired = tc.delete("/v1/attributes/seats", headers=auth(keys.admin))
    assert retired.status_code == 200 and retired.json()["retired"]
    assert tc.get("/v1/attributes", headers=auth(keys.admin)).json()["data"] == []
    refused = problem(tc.post("/v1/leads", json=lead_body(1, attributes={"seats": 3}),
                              headers=auth(keys.sales)), 422)
    assert refused["errors"][0]["field"] == "attributes.seats"
    back = define(tc, keys, SEATS)
    assert back["attribute"]["version"] == 4 and not back["attribute"]["retired"]


def test_values_on_create_batch_and_patch(tc: TestClient, keys: Keys, infra: Any) -> None:
    for body in (SEATS, PLAN, BIRTHDAY, {**REGION, "required": True}):
        define(tc, keys, body)
    missing = problem(tc.post("/v1/leads", json=lead_body(1, attributes={"seats": 3}),
                              headers=auth(keys.sales)), 422)
    assert missing["errors"][0]["field"] == "attributes.region"
    wrong = problem(tc.post("/v1/leads", json=lead_body(
        1, attributes={"region": "emea", "seats": "three"}), headers=auth(keys.sales)), 422)
    assert wrong["errors"][0]["field"] == "attributes.seats"

    lead = create(tc, keys.sales, 1, region="emea", seats=3.0, plan="pro",
                  birthday="1815-12-10")
    assert lead["attributes"] == {"region": "emea", "seats": 3, "plan": "pro",
                                  "birthday": "1815-12-10"}
    read = tc.get(f"/v1/leads/{lead['id']}",
                  headers=auth(keys.analyst, **{"x-consistency-token": lead["token"]})).json()
    assert read["attributes"] == lead["attributes"]

    batch = tc.post("/v1/leads/batch", json={"leads": [
        lead_body(2, attributes={"region": "apac", "plan": "free"}),
        lead_body(3, attributes={"region": "apac", "plan": "gold"}),
    ]}, headers=auth(keys.sales)).json()
    assert batch["results"][0]["lead"]["attributes"] == {"region": "apac", "plan": "free"}
    assert batch["results"][1]["error"]["errors"][0]["field"] == "attributes.plan"
    atomic = problem(tc.post("/v1/leads/batch?atomic=true", json={"leads": [
        lead_body(4, attributes={"region": "apac"}), lead_body(5, attributes={"seats": 2})]},
        headers=auth(keys.sales)), 422)
    assert atomic["errors"][0]["field"] == "leads[1].attributes.region"

    patched = tc.patch(f"/v1/leads/{lead['id']}", json={"attributes": {"seats": 7, "plan": None}},
                       headers=auth(keys.sales))
    assert patched.status_code == 200, patched.text
    assert patched.json()["attributes"] == {"region": "emea", "seats": 7,
                                            "birthday": "1815-12-10"}
    problem(tc.patch(f"/v1/leads/{lead['id']}", json={"attributes": {"region": None}},
                     headers=auth(keys.sales)), 422)
    problem(tc.patch(f"/v1/leads/{lead['id']}", json={"attributes": {"nope": 1}},
                     headers=auth(keys.sales)), 422)
    history = tc.get(f"/v1/leads/{lead['id']}/history", headers=auth(keys.sales)).json()["data"]
    attribute_changes = [c for e in history if e["type"] == "LeadAttributesChanged"
                         for c in e["changes"] if c["field"] == "attributes"]
    assert attribute_changes[0]["after"]["birthday"] == "1815-12-10"
    assert attribute_changes[-1]["after"]["seats"] == 7

    # The personal value is encrypted in the ledger; the others are there in the clear.
    with psycopg.connect(infra.database_url) as conn:
        rows = conn.execute("SELECT data, coalesce(personal, '') FROM events "
                            "WHERE event_type = 'LeadAttributesChanged'").fetchall()
    raw = b"".join(bytes(data) + bytes(personal) for data, personal in rows)
    assert b"emea" in raw and b"1815-12-10" not in raw


def test_a_changed_definition_reports_values_and_keeps_them(tc: TestClient, keys: Keys) -> None:
    define(tc, keys, SEATS)
    leads = [create(tc, keys.sales, n, seats=seats) for n, seats in enumerate((5, 50, 500))]
    tc.get(f"/v1/leads/{leads[-1]['id']}",
           headers=auth(keys.sales, **{"x-consistency-token": leads[-1]["token"]}))
    saved = tc.put("/v1/attributes/seats", json={**SEATS, "maximum": 40},
                   headers=auth(keys.admin)).json()
    assert saved["violations"] == 2 and saved["attribute"]["version"] == 2
    first = tc.get("/v1/attributes/seats/violations?limit=1", headers=auth(keys.sales)).json()
    second = tc.get(f"/v1/attributes/seats/violations?limit=1&cursor={first['next_cursor']}",
                    headers=auth(keys.sales)).json()
    found = first["data"] + second["data"]
    assert sorted(v["value"] for v in found) == [50, 500]
    assert all("at most 40" in v["why"] for v in found)
    assert {v["lead_id"] for v in found} == {leads[1]["id"], leads[2]["id"]}
    after = tc.get(f"/v1/attributes/seats/violations?cursor={second['next_cursor']}",
                   headers=auth(keys.sales)).json() if second["next_cursor"] else {"data": []}
    assert after["data"] == []
    # nothing rewritten: the stored values stay, and a write of such a value is refused
    assert tc.get(f"/v1/leads/{leads[2]['id']}", headers=auth(keys.sales)).json()[
        "attributes"] == {"seats": 500}
    problem(tc.patch(f"/v1/leads/{leads[0]['id']}", json={"attributes": {"seats": 41}},
                     headers=auth(keys.sales)), 422)
    as_text = tc.put("/v1/attributes/seats", json={"type": "string"},
                     headers=auth(keys.admin)).json()
    assert as_text["violations"] == 3


def test_filters_and_sorts_on_attributes(tc: TestClient, keys: Keys) -> None:
    for body in (SEATS, PLAN, REGION, {"name": "notes", "type": "string"},
                 {"name": "interests", "type": "list", "queryable": True}):
        define(tc, keys, body)
    regions = ("emea", "apac", "amer")
    made = []
    for n in range(12):
        values: dict[str, Any] = {"region": regions[n % 3], "plan": ("free", "pro")[n % 2],
                                  "interests": ["ai"] if n % 4 == 0 else ["data"]}
        if n % 5:
            values["seats"] = (n * 7) % 20 + 1
        made.append(create(tc, keys.sales, n, **values))
    token = made[-1]["token"]
    seats = {lead["id"]: lead["attributes"].get("seats") for lead in made}

    ascending = listing(tc, keys.sales, "sort=attr.seats&limit=3", token)
    with_seats = sorted((v, k) for k, v in seats.items() if v is not None)
    without = sorted(k for k, v in seats.items() if v is None)
    assert [lead["id"] for lead in ascending] == [k for _, k in with_seats] + without
    descending = listing(tc, keys.sales, "sort=-attr.seats&limit=4", token)
    assert [lead["id"] for lead in descending] == (
        [k for _, k in reversed(with_seats)] + list(reversed(without)))

    ranged = listing(tc, keys.sales, "attr.seats.gte=5&attr.seats.lte=12&sort=attr.seats"
                     "&limit=2", token)
    assert [lead["attributes"]["seats"] for lead in ranged] == sorted(
        v for v in seats.values() if v is not None and 5 <= v <= 12)
    # typed: 9 < 10 as numbers (as text "9" > "10")
    assert all(lead["attributes"]["seats"] >= 9
               for lead in listing(tc, keys.sales, "attr.seats.gte=9", token))
    some = listing(tc, keys.sales, "attr.region.in=emea,apac&attr.plan=pro&limit=2", token)
    assert {lead["attributes"]["region"] for lead in some} <= {"emea", "apac"}
    assert len(some) == sum(1 for n in range(12) if n % 3 != 2 and n % 2 == 1)
    assert len(listing(tc, keys.sales, "attr.interests=ai", token)) == 3
    assert len(listing(tc, keys.sales, "attr.plan=free&attr.plan=pro", token)) == 12

    for query, field in (("attr.notes=x", "query:attr.notes"),
                         ("attr.nope=1", "query:attr.nope"),
                         ("attr.seats=many", "query:attr.seats"),
                         ("attr.plan.gte=free", "query:attr.plan.gte"),
                         ("sort=attr.notes", "query:sort")):
        body = problem(tc.get(f"/v1/leads?{query}", headers=auth(keys.sales)), 422)
        assert body["errors"][0]["field"] == field, query
    # a cursor is bound to its query
    page = tc.get("/v1/leads?sort=attr.seats&limit=2", headers=auth(keys.sales)).json()
    problem(tc.get(f"/v1/leads?sort=-attr.seats&cursor={page['next_cursor']}",
                   headers=auth(keys.sales)), 400)
    # unscored leads: score filters match none, sort by score lists them all
    assert listing(tc, keys.sales, "score_min=0", token) == []
    assert len(listing(tc, keys.sales, "sort=-score&limit=5", token)) == 12
    # another workspace: its own attributes only
    problem(tc.get("/v1/leads?attr.seats.gte=1", headers=auth(keys.other)), 422)


async def test_the_list_query_uses_the_attribute_index(pool: Any) -> None:
    definitions = {d.name: d for d in (
        AttributeDefinition(name="seats", type="integer", queryable=True),
        AttributeDefinition(name="region", type="string", queryable=True),
    )}
    store = AttributeDefinitions(pool)
    for definition in definitions.values():
        await store.ensure_index(definition)
    async with pool.connection() as conn:
        await conn.execute("""
            INSERT INTO leads (workspace, lead_id, version, status, stage, created_at,
                               updated_at, attributes)
            SELECT CASE WHEN i % 10 = 0 THEN 'acme' ELSE 'ws' || (i % 7) END, 'l' || i, 1,
                   'active', 'lead', now(), now(),
                   jsonb_build_object('seats', i % 500, 'region',
                                      (ARRAY['emea','apac','amer'])[i % 3 + 1])
            FROM generate_series(1, 20000) AS i""")
        await conn.execute("ANALYZE leads")
        for query, sort, index in (
            ("attr.seats.gte=100", "attr.seats", "seats"),
            ("attr.region=emea", "-attr.region", "region"),
            ("attr.region.in=emea,apac", "attr.region", "region"),
        ):
            params = [(k, v) for k, _, v in (p.partition("=") for p in query.split("&"))]
            f = LeadFilter(attributes=attribute_conditions(params, definitions))
            statement, values = first_page_query(
                "acme", f, sort_key(sort, definitions), 51)
            cur = await conn.execute(b"EXPLAIN " + statement.as_bytes(conn), values)
            plan = "\n".join(r[0] for r in await cur.fetchall())
            assert index_name(definitions[index]) in plan, plan
            assert "Seq Scan" not in plan, plan
    await asyncio.sleep(0)


async def test_replay_keeps_the_attribute_indexes(store: Any, pool: Any) -> None:
    """`leadledger replay lead` swaps in a shadow table built from the live table's own index
    definitions (projections/shadow_tables.py): the attribute indexes come along."""
    from projections.rebuild import rebuild_leads

    store_ = AttributeDefinitions(pool)
    wanted = [AttributeDefinition(name="seats", type="integer", queryable=True),
              AttributeDefinition(name="interests", type="list", queryable=True)]
    for definition in wanted:
        await store_.ensure_index(definition)
    report = await rebuild_leads(store, pool, partitions=1)
    assert report.swapped
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT indexname, indexdef FROM pg_indexes "
                                 "WHERE tablename = 'leads'")
        indexes = dict(await cur.fetchall())
    for definition in wanted:
        assert "attributes ?" in indexes[index_name(definition)]
