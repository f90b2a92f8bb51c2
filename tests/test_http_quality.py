"""Data quality over HTTP, on the real stack: controlled vocabularies (built-in and the
workspace's, with synonyms), the ingestion policy, email bounces and quarantine, and quality
scores (on every lead, in the read model, and summarized by GET /v1/quality)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from api.http.quality_queries import Rescoring, summarize
from ledger.quality_settings import QualityPolicy, WorkspaceQuality
from ledger.vocabulary import BUILTIN
from tests.http_support import *
from tests.http_support import Keys, auth, lead_body, make_app, without_enrichment


@pytest.fixture
def api_app(infra: Any, http_settings: Any) -> Any:
    """Without built-in enrichment: these tests pin a lead's versions (a bounce is version + 1)."""
    return make_app(infra, http_settings, reactors=without_enrichment())

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"


def assert_problem(response: Any, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    return body


def create(tc: TestClient, token: str, body: dict) -> dict:
    response = tc.post("/v1/leads", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json() | {"token": response.headers["x-consistency-token"]}


def test_unknown_vocabulary_values_name_the_allowed_ones(tc: TestClient, keys: Keys) -> None:
    refused = tc.post("/v1/leads", json=lead_body(1, industry="Softwre"), headers=auth(keys.sales))
    error = assert_problem(refused, 422, "validation-failed")["errors"][0]
    assert error["field"] == "industry" and error["suggestion"] == "software"
    assert "software" in error["allowed"] and "healthcare" in error["allowed"]
    country = tc.post("/v1/leads", json=lead_body(1, country="Atlantis"), headers=auth(keys.sales))
    error = assert_problem(country, 422, "validation-failed")["errors"][0]
    assert error["field"] == "country" and "GB" in error["allowed"]
    # synonyms of the built-in vocabularies
    lead = create(tc, keys.sales, lead_body(1, industry="SaaS", country="United Kingdom",
                                            seniority="CTO", department="R&D"))
    assert (lead["industry"], lead["country"], lead["seniority"], lead["department"]) == (
        "software", "GB", "c_level", "engineering")
    # a batch item names its field the same way
    batch = tc.post("/v1/leads/batch", json={"leads": [lead_body(2, industry="Softwre")]},
                    headers=auth(keys.sales)).json()
    item_error = batch["results"][0]["error"]["errors"][0]
    assert item_error["field"] == "industry" and item_error["suggestion"] == "software"


def test_vocabularies(tc: TestClient, keys: Keys) -> None:
    listed = tc.get("/v1/vocabularies", headers=auth(keys.analyst))
    assert listed.status_code == 200, listed.text
    by_name = {v["name"]: v for v in listed.json()["data"]}
    assert set(by_name) >= {"country", "lifecycle_stage", "lead_source", "industry",
                            "seniority", "department"}
    software = next(t for t in by_name["industry"]["terms"] if t["code"] == "software")
    assert "saas" in software["synonyms"] and by_name["industry"]["source"] == "builtin"
    assert by_name["industry"]["field"] == "industry"
    gb = tc.get("/v1/vocabularies/country", headers=auth(keys.sales)).json()
    assert any(t["code"] == "GB" and "uk" in t["synonyms"] for t in gb["terms"])
    assert_problem(tc.get("/v1/vocabularies/nope", headers=auth(keys.sales)), 404, "not-found")

    terms = {"terms": [
        {"code": "fintech", "label": "Financial technology", "synonyms": ["payments", "PSP"]},
        {"code": "other"},
    ], "reason": "Our segments"}
    assert_problem(tc.put("/v1/vocabularies/industry", json=terms, headers=auth(keys.sales)),
                   403, "forbidden")
    assert_problem(tc.put("/v1/vocabularies/industry", json=terms, headers=auth(keys.analyst)),
                   403, "forbidden")
    ambiguous = {"terms": [{"code": "a", "synonyms": ["x"]}, {"code": "b", "synonyms": ["X"]}]}
    errors = assert_problem(tc.put("/v1/vocabularies/industry", json=ambiguous,
                                   headers=auth(keys.admin)), 422, "validation-failed")["errors"]
    assert errors[0]["field"] == "terms[1].synonyms"
    stages = {"terms": [{"code": "lead"}, {"code": "hot"}]}
    errors = assert_problem(tc.put("/v1/vocabularies/lifecycle_stage", json=stages,
                                   headers=auth(keys.admin)), 422, "validation-failed")["errors"]
    assert errors[0]["field"] == "terms[1].code" and "mql" in errors[0]["allowed"]
    for bad in ({"terms": []}, {"terms": [{"code": " padded"}]}, {"terms": [{"code": "50%"}]},
                {"terms": [{"code": "x", "colour": "red"}]}):
        assert_problem(tc.put("/v1/vocabularies/industry", json=bad, headers=auth(keys.admin)),
                       422, "validation-failed")
    assert_problem(tc.put("/v1/vocabularies/Bad-Name", json=terms, headers=auth(keys.admin)),
                   422, "validation-failed")

    saved = tc.put("/v1/vocabularies/industry", json=terms, headers=auth(keys.admin))
    assert saved.status_code == 200, saved.text
    assert saved.json()["source"] == "workspace"
    assert [t["code"] for t in saved.json()["terms"]] == ["fintech", "other"]
    # creates resolve against the workspace's list now, synonyms included
    lead = create(tc, keys.sales, lead_body(3, industry="Payments"))
    assert lead["industry"] == "fintech"
    assert lead["quality"]["problems"] == []  # valid against the workspace's vocabulary
    refused = tc.post("/v1/leads", json=lead_body(4, industry="software"),
                      headers=auth(keys.sales))
    error = assert_problem(refused, 422, "validation-failed")["errors"][0]
    assert error["allowed"] == ["fintech", "other"]
    got = tc.get("/v1/vocabularies/industry", headers=auth(keys.sales)).json()
    assert got["source"] == "workspace" and got["terms"][0]["synonyms"] == ["payments", "PSP"]
    # another workspace keeps the built-in list
    assert tc.get("/v1/vocabularies/industry", headers=auth(keys.other)).json()["source"] == (
        "builtin")
    # a list of the workspace's own controls no field
    regions = tc.put("/v1/vocabularies/sales_region", json={"terms": [{"code": "emea"}]},
                     headers=auth(keys.admin))
    assert regions.status_code == 200 and regions.json()["field"] is None

    assert_problem(tc.delete("/v1/vocabularies/industry", headers=auth(keys.sales)),
                   403, "forbidden")
    assert tc.delete("/v1/vocabularies/industry", headers=auth(keys.admin)).status_code == 204
    assert tc.delete("/v1/vocabularies/industry", headers=auth(keys.admin)).status_code == 204
    assert tc.delete("/v1/vocabularies/sales_region", headers=auth(keys.admin)).status_code == 204
    assert_problem(tc.delete("/v1/vocabularies/sales_region", headers=auth(keys.admin)),
                   404, "not-found")
    assert create(tc, keys.sales, lead_body(4, industry="software"))["industry"] == "software"


def test_quality_settings(tc: TestClient, keys: Keys) -> None:
    defaults = tc.get("/v1/quality/settings", headers=auth(keys.analyst)).json()
    assert defaults == {"exact_policy": "reject", "fuzzy_policy": "flag", "fuzzy_threshold": 88.0,
                        "on_unknown": "reject", "required_fields": [
                            "email", "first_name", "last_name", "company", "country"],
                        "email_mx_check": False}
    wanted = {"exact_policy": "merge", "on_unknown": "flag", "fuzzy_threshold": 92,
              "required_fields": ["email", "company", "title", "title"], "reason": "Imports"}
    assert_problem(tc.put("/v1/quality/settings", json=wanted, headers=auth(keys.sales)),
                   403, "forbidden")
    for bad in ({"required_fields": ["email", "shoe_size"]}, {"fuzzy_threshold": 20},
                {"exact_policy": "ignore"}, {"on_unknown": "merge"}, {"extra": 1},
                {"email_mx_check": "sometimes"}):
        errors = assert_problem(tc.put("/v1/quality/settings", json=bad,
                                       headers=auth(keys.admin)), 422, "validation-failed")
        assert errors["errors"][0]["field"].startswith(next(iter(bad)))
    saved = tc.put("/v1/quality/settings", json=wanted, headers=auth(keys.admin))
    assert saved.status_code == 200, saved.text
    assert saved.json() == {"exact_policy": "merge", "fuzzy_policy": "flag",
                            "fuzzy_threshold": 92.0, "on_unknown": "flag",
                            "required_fields": ["email", "company", "title"],
                            "email_mx_check": False}
    assert tc.get("/v1/quality/settings", headers=auth(keys.sales)).json() == saved.json()

    # the workspace's policy applies to creates: merge exact duplicates, keep unknown values
    first = create(tc, keys.sales, lead_body(10, title=None))
    assert "missing:title" in first["quality"]["problems"]
    assert first["quality"]["completeness"] == pytest.approx(2 / 3, abs=0.001)
    again = tc.post("/v1/leads", json=lead_body(10, title="CEO"), headers=auth(keys.sales))
    assert again.status_code == 200 and again.json()["merged_into"] == first["id"]
    kept = create(tc, keys.sales, lead_body(11, industry="Quantum basket weaving"))
    assert kept["industry"] == "Quantum basket weaving"
    assert "unmapped:industry" in kept["quality"]["problems"]
    unmapped = tc.get("/v1/quality/problems/unmapped:industry", headers=auth(
        keys.analyst, **{"x-consistency-token": kept["token"]})).json()["data"]
    assert [x["id"] for x in unmapped] == [kept["id"]]
    assert unmapped[0]["quality"] == kept["quality"]
    # ... unless the request says otherwise
    assert_problem(tc.post("/v1/leads?on_duplicate=reject", json=lead_body(10),
                           headers=auth(keys.sales)), 409, "duplicate-lead")


def test_bounces_quarantine(tc: TestClient, keys: Keys) -> None:
    lead = create(tc, keys.sales, lead_body(20))
    assert (lead["email_status"], lead["quarantined"]) == ("valid", False)
    path = f"/v1/leads/{lead['id']}/email-bounces"
    soft = tc.post(path, json={"kind": "soft", "detail": "mailbox full"}, headers=auth(keys.sales))
    assert soft.status_code == 200, soft.text
    assert soft.json()["quarantined"] is False and soft.json()["version"] == lead["version"] + 1
    assert_problem(tc.post(path, json={"kind": "bouncy"}, headers=auth(keys.sales)),
                   422, "validation-failed")
    assert_problem(tc.post(path, json={"kind": "hard"}, headers=auth(keys.analyst)),
                   403, "forbidden")
    assert_problem(tc.post(path, json={"kind": "hard"}, headers=auth(
        keys.sales, **{"if-match": f'"{lead["version"]}"'})), 412, "precondition-failed")
    assert_problem(tc.post("/v1/leads/nope/email-bounces", json={"kind": "hard"},
                           headers=auth(keys.sales)), 404, "not-found")
    hard = tc.post(path, json={"kind": "hard", "detail": "550 user unknown"},
                   headers=auth(keys.sales, **{"idempotency-key": "bounce-1"}))
    assert hard.status_code == 200, hard.text
    bounced = hard.json()
    assert (bounced["email_status"], bounced["quarantined"]) == ("invalid", True)
    assert bounced["email_reasons"] == ["hard-bounce"]
    assert "email-invalid" in bounced["quality"]["problems"]
    replay = tc.post(path, json={"kind": "hard", "detail": "550 user unknown"},
                     headers=auth(keys.sales, **{"idempotency-key": "bounce-1"}))
    assert replay.json() == bounced and replay.headers["idempotent-replayed"] == "true"

    # by address: every live lead with it, case-insensitively, from the read model
    other = create(tc, keys.sales, lead_body(21))
    by_email = tc.post("/v1/email-bounces", json={"email": other["email"].upper(), "kind": "hard"},
                       headers=auth(keys.sales, **{"x-consistency-token": other["token"]}))
    assert by_email.status_code == 200, by_email.text
    assert [x["id"] for x in by_email.json()["leads"]] == [other["id"]]
    assert by_email.json()["leads"][0]["quarantined"] is True
    token = by_email.headers["x-consistency-token"]
    assert_problem(tc.post("/v1/email-bounces", json={"email": "nobody@nowhere.example",
                                                      "kind": "hard"},
                           headers=auth(keys.sales)), 404, "not-found")
    assert_problem(tc.post("/v1/email-bounces", json={"email": "not an email", "kind": "hard"},
                           headers=auth(keys.sales)), 422, "validation-failed")
    assert_problem(tc.post("/v1/email-bounces", json={"email": other["email"], "kind": "hard"},
                           headers=auth(keys.other)), 404, "not-found")  # another workspace
    quarantined = tc.get("/v1/leads?quarantined=true",
                         headers=auth(keys.sales, **{"x-consistency-token": token})).json()
    assert {x["id"] for x in quarantined["data"]} == {lead["id"], other["id"]}
    assert tc.get("/v1/leads?quarantined=false", headers=auth(keys.sales)).json()["data"] == []
    # a lead without an email cannot bounce
    no_email = create(tc, keys.sales, lead_body(22, email=None))
    assert_problem(tc.post(f"/v1/leads/{no_email['id']}/email-bounces", json={"kind": "hard"},
                           headers=auth(keys.sales)), 422, "validation-failed")


def test_quality_scores_and_report(tc: TestClient, keys: Keys, infra: Any) -> None:
    good = create(tc, keys.sales, lead_body(30))
    assert good["quality"] == {"score": 100, "completeness": 1.0, "validity": 1.0,
                               "consistency": 1.0, "freshness": 1.0, "problems": []}
    leads = [good]
    leads.append(create(tc, keys.sales, lead_body(31, company=None, phone="12345")))
    leads.append(create(tc, keys.sales, lead_body(32, company=None, email="info@acme32.example",
                                                  country="US")))
    leads.append(create(tc, keys.sales, lead_body(33, email="ada@gmial.com", last_name=None)))
    assert leads[1]["quality"]["problems"] == ["missing:company", "phone-unparseable"]
    assert set(leads[2]["quality"]["problems"]) == {
        "missing:company", "email-risky", "phone-country-mismatch", "email-domain-mismatch"}
    assert leads[3]["quarantined"] and "email-invalid" in leads[3]["quality"]["problems"]
    token = leads[-1]["token"]
    for lead in leads:  # the read model shows what the write answered
        got = tc.get(f"/v1/leads/{lead['id']}",
                     headers=auth(keys.analyst, **{"x-consistency-token": token})).json()
        assert got["quality"] == lead["quality"]

    report = tc.get("/v1/quality", headers=auth(keys.analyst, **{"x-consistency-token": token}))
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["leads"] == 4 and body["weights"] == {
        "completeness": 40, "validity": 35, "consistency": 15, "freshness": 10}
    assert [b["min"] for b in body["distribution"]] == list(range(0, 100, 10))
    assert body["distribution"][-1] == {"min": 90, "max": 100, "count": 1}
    assert sum(b["count"] for b in body["distribution"]) == 4
    counts = {p["problem"]: p["count"] for p in body["problems"]}
    assert counts["missing:company"] == 2 and counts["email-invalid"] == 1
    assert [p["count"] for p in body["problems"]] == sorted(counts.values(), reverse=True)
    described = {p["problem"]: p["description"] for p in body["problems"]}
    assert described["missing:company"] == "A required field, company, is empty."
    average = sum(x["quality"]["score"] for x in leads) / 4
    assert body["average_score"] == pytest.approx(average, abs=0.05)

    # the leads failing one rule, worst first, paginated
    page = tc.get("/v1/quality/problems/missing:company?limit=1", headers=auth(keys.analyst))
    assert page.status_code == 200, page.text
    rest = tc.get(f"/v1/quality/problems/missing:company?cursor={page.json()['next_cursor']}",
                  headers=auth(keys.analyst)).json()
    failing = page.json()["data"] + rest["data"]
    assert {x["id"] for x in failing} == {leads[1]["id"], leads[2]["id"]}
    assert failing[0]["quality"]["score"] <= failing[1]["quality"]["score"]
    assert rest["next_cursor"] is None
    assert_problem(tc.get("/v1/quality/problems/not-a-rule", headers=auth(keys.analyst)),
                   404, "not-found")
    assert_problem(tc.get("/v1/quality/problems/missing:company?cursor=abc",
                          headers=auth(keys.analyst)), 400, "bad-request")

    # SQL and Python score alike: each lead is below its score + 1 and not below its score
    for lead in leads:
        score = lead["quality"]["score"]
        for below, present in ((score + 1, True), (score, False)):
            listed = tc.get(f"/v1/leads?quality_below={below}&limit=100",
                            headers=auth(keys.analyst)).json()["data"]
            assert (lead["id"] in {x["id"] for x in listed}) is present, (lead, below)

    # the workspace's required fields change every score at once, in SQL as in Python
    tc.put("/v1/quality/settings", json={"required_fields": ["title", "city"]},
           headers=auth(keys.admin))
    after = tc.get("/v1/quality", headers=auth(keys.analyst)).json()
    assert "missing:company" not in {p["problem"] for p in after["problems"]}
    assert after["required_fields"] == ["title", "city"]
    got = tc.get(f"/v1/leads/{leads[1]['id']}", headers=auth(keys.analyst)).json()
    assert got["quality"]["problems"] == ["phone-unparseable"]

    # the read model stores the projection's score (defaults, as of the change)
    with psycopg.connect(infra.database_url) as conn:
        stored = dict(conn.execute(
            "SELECT lead_id, quality_score FROM leads WHERE workspace = 'acme'").fetchall())
        problems = conn.execute("SELECT quality_problems FROM leads WHERE lead_id = %s",
                                (leads[1]["id"],)).fetchone()[0]
    assert stored == {x["id"]: x["quality"]["score"] for x in leads}
    assert problems == ["missing:company", "phone-unparseable"]

    # freshness is judged at query time: two years on, every lead is stale
    asyncio.run(_two_years_on(infra.database_url))


async def _two_years_on(database_url: str) -> None:
    quality = WorkspaceQuality(QualityPolicy(), dict(BUILTIN))
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        now = datetime.now(UTC)
        today = await summarize(conn, "acme", Rescoring(quality, now))
        later = await summarize(conn, "acme", Rescoring(quality, now + timedelta(days=730)))
    assert "stale" not in dict(today.problems)
    assert dict(later.problems)["stale"] == 4
    assert later.averages["freshness"] == pytest.approx(0.5, abs=0.01)
    assert later.average_score == pytest.approx(today.average_score - 5, abs=0.6)
