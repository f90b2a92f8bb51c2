"""Enrichment end to end, over HTTP with the workers running (relay, projections, the "enrich"
reactor): a new lead gets enriched values with their provenance on GET /v1/leads/{id} and in its
history; what a person entered is kept unless the workspace lets enrichment overwrite; a new
email enriches again; so does POST /v1/leads/{id}/enrich. HTTP providers run against a real
server on loopback (pytest-httpserver): one that fails three times then answers ends enriched;
one that always fails lands in the dead letters (its circuit breaker opens after
`failure_threshold` failed attempts, and the runner's later attempts skip it without a call)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from litestar.testing import TestClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.http_support import *
from tests.http_support import Keys, auth

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

FIRMOGRAPHICS = """domain,company_name,industry,employee_range,revenue_range,country,technologies
acme.example,Acme Corp,SaaS,51-200,$10M-$50M,DE,Salesforce;HubSpot
globex.example,Globex,Manufacturing,1001-5000,,US,
bad domain,Nope,,,,,
"""


def eventually(read: Callable[[], Any], check: Callable[[Any], bool], what: str,
               timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {value}")
        time.sleep(0.1)


def lead(tc: TestClient, keys: Keys, lead_id: str) -> dict:
    """The lead as the read model has it ({} until the projection has it)."""
    answer = tc.get(f"/v1/leads/{lead_id}", headers=auth(keys.admin))
    if answer.status_code == 404:
        return {"enrichment": {}}
    assert answer.status_code == 200, answer.text
    return answer.json()


def load_firmographics(tc: TestClient, token: str, body: str) -> Any:
    return tc.post("/v1/enrichment/firmographics", content=body.encode(),
                   headers=auth(token, **{"content-type": "text/csv"}))


def test_built_in_enrichment_provenance_overwrite_and_re_enrichment(
    tc: TestClient, keys: Keys
) -> None:
    loaded = load_firmographics(tc, keys.admin, FIRMOGRAPHICS)
    assert loaded.status_code == 200, loaded.text
    report = loaded.json()
    assert (report["inserted"], report["updated"]) == (2, 0)
    assert report["rejected"] == [{"line": 4, "reason": "domain 'bad domain' is not a domain name"}]
    assert load_firmographics(tc, keys.sales, FIRMOGRAPHICS).status_code == 403
    bad = load_firmographics(tc, keys.admin, "domain,colour\nacme.example,red\n")
    assert bad.status_code == 422 and "unknown column" in bad.json()["detail"]
    row = tc.get("/v1/enrichment/firmographics/www.acme.example", headers=auth(keys.sales))
    assert row.status_code == 200 and row.json()["company_name"] == "Acme Corp"
    assert tc.get("/v1/enrichment/firmographics/acme.example",
                  headers=auth(keys.other)).status_code == 404  # another workspace's table

    created = tc.post("/v1/leads", json={
        "email": "ada.lovelace@acme.example", "phone": "+447911123456",
        "company": "Acme (typed by a person)", "source": "web_form",
    }, headers=auth(keys.sales, **{"x-correlation-id": "corr-1"}))
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]
    enriched = eventually(lambda: lead(tc, keys, lead_id),
                          lambda b: {"company_name", "phone_region", "email_domain",
                                     "first_name_guess"} <= set(b["enrichment"]),
                          "the built-in providers' findings")
    company = enriched["enrichment"]["company_name"]
    assert (company["value"], company["provider"], company["confidence"]) == (
        "Acme Corp", "firmographics", 1.0)
    assert company["fetched_at"]
    assert enriched["enrichment"]["technologies"]["value"] == ["Salesforce", "HubSpot"]
    assert enriched["enrichment"]["phone_line_type"]["value"] == "mobile"
    assert enriched["enrichment"]["email_free_mail"]["value"] is False
    assert enriched["enrichment"]["first_name_guess"]["confidence"] == 0.6
    # Empty fields are filled (industry as the vocabulary's code); what the person typed stays.
    assert enriched["company"] == "Acme (typed by a person)"
    assert (enriched["industry"], enriched["first_name"], enriched["last_name"],
            enriched["country"]) == ("software", "Ada", "Lovelace", "GG")

    history = tc.get(f"/v1/leads/{lead_id}/history", headers=auth(keys.admin)).json()["data"]
    entries = [e for e in history if e["type"] == "LeadEnriched"]
    assert len(entries) == 3
    assert {(e["actor"]["key_id"], e["source"], e["correlation_id"]) for e in entries} == {
        ("processor:enrich", "processor", "corr-1")}
    assert all(e["reason"].startswith("enrichment by ") for e in entries)

    # A new email enriches again; the company a person typed is still kept.
    patched = tc.patch(f"/v1/leads/{lead_id}", json={"email": "grace.hopper@globex.example"},
                       headers=auth(keys.sales))
    assert patched.status_code == 200, patched.text
    again = eventually(lambda: lead(tc, keys, lead_id),
                       lambda b: b["enrichment"]["company_name"]["value"] == "Globex",
                       "enrichment of the new email")
    assert again["enrichment"]["email_domain"]["value"] == "globex.example"
    assert again["company"] == "Acme (typed by a person)" and again["first_name"] == "Ada"

    # The workspace lets enrichment overwrite; an on-demand enrichment now replaces the company
    # (a guess never replaces anything: the name stays).
    settings = tc.put("/v1/enrichment/settings", json={"overwrite": True},
                      headers=auth(keys.admin))
    assert settings.status_code == 200 and settings.json() == {"overwrite": True}
    assert tc.put("/v1/enrichment/settings", json={"overwrite": True},
                  headers=auth(keys.sales)).status_code == 403
    requested = tc.post(f"/v1/leads/{lead_id}/enrich", headers=auth(keys.sales))
    assert requested.status_code == 202, requested.text
    assert requested.headers["x-consistency-token"]
    overwritten = eventually(lambda: lead(tc, keys, lead_id),
                             lambda b: b["company"] == "Globex", "the overwrite")
    assert overwritten["first_name"] == "Ada" and overwritten["industry"] == "manufacturing"
    unknown = tc.post(f"/v1/leads/{lead_id}/enrich", json={"providers": ["nope"]},
                      headers=auth(keys.sales))
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "providers"
    assert tc.post(f"/v1/leads/{lead_id}/enrich", headers=auth(keys.analyst)).status_code == 403
    assert tc.post("/v1/leads/missing/enrich", headers=auth(keys.sales)).status_code == 404
    kinds = [e["type"] for e in tc.get(f"/v1/leads/{lead_id}/history",
                                       headers=auth(keys.admin)).json()["data"]]
    assert "LeadEnrichmentRequested" in kinds


def provider_body(url: str, **overrides: Any) -> dict:
    return {
        "url": url, "auth_header": "X-Api-Key", "auth_secret": "top-secret",
        "mapping": [{"path": "$.person.title", "field": "title"},
                    {"path": "$.person.seniority", "value": "seniority_hint",
                     "confidence": 0.7}],
        "retries": 2, "failure_threshold": 3, "cooldown_s": 60,
    } | overrides


def test_http_providers_retry_break_and_park(
    tc: TestClient, keys: Keys, httpserver: HTTPServer
) -> None:
    allowed = tc.put("/v1/outbound/allowlist", json={"networks": ["127.0.0.0/8", "::1"]},
                     headers=auth(keys.admin))
    assert allowed.status_code == 200, allowed.text
    calls: list[str] = []

    def flaky(request: Request) -> Response:
        calls.append(request.headers.get("X-Api-Key", ""))
        if len(calls) <= 3:
            return Response("busy", status=503)
        return Response('{"person": {"title": "CTO", "seniority": "c_level"}}',
                        content_type="application/json")

    httpserver.expect_request("/flaky").respond_with_handler(flaky)
    httpserver.expect_request("/broken").respond_with_data("down", status=500)
    saved = tc.put("/v1/enrichment/providers/flaky",
                   json=provider_body(httpserver.url_for("/flaky") + "?email={email}"),
                   headers=auth(keys.admin))
    assert saved.status_code == 200, saved.text
    assert saved.json()["has_secret"] is True and "top-secret" not in saved.text
    broken = provider_body(httpserver.url_for("/broken") + "?domain={domain}", retries=1)
    assert tc.put("/v1/enrichment/providers/broken", json=broken,
                  headers=auth(keys.admin)).status_code == 200
    listed = tc.get("/v1/enrichment/providers", headers=auth(keys.admin))
    assert [p["name"] for p in listed.json()["data"]] == ["broken", "flaky"]
    assert listed.json()["builtin"] == ["email-domain", "phone", "firmographics"]
    assert "top-secret" not in listed.text
    assert tc.get("/v1/enrichment/providers", headers=auth(keys.sales)).status_code == 403
    invalid = tc.put("/v1/enrichment/providers/phone", json=provider_body(
        "gopher://x/{password}", mapping=[{"path": "$.x", "field": "email"}]),
        headers=auth(keys.admin))
    assert invalid.status_code == 422
    assert {e["field"] for e in invalid.json()["errors"]} == {
        "path:name", "url", "mapping[0].field"}

    created = tc.post("/v1/leads", json={"email": "ada@acme.example", "source": "web_form"},
                      headers=auth(keys.sales))
    assert created.status_code == 201, created.text
    lead_id = created.json()["id"]
    enriched = eventually(lambda: lead(tc, keys, lead_id),
                          lambda b: b.get("title") == "CTO", "the flaky provider's finding")
    hint = enriched["enrichment"]["seniority_hint"]
    assert (hint["value"], hint["provider"], hint["confidence"]) == ("c_level", "flaky", 0.7)
    assert calls == ["top-secret"] * 4  # three failures, then the answer; the secret was sent

    letters = eventually(
        lambda: tc.get("/v1/dead-letters?reactor=enrich", headers=auth(keys.admin)).json(),
        lambda page: len(page["data"]) == 1, "the broken provider's dead letter")
    letter = letters["data"][0]
    assert letter["lead_id"] == lead_id and letter["event_type"] == "LeadCreated"
    assert "broken" in letter["error"] and "flaky" not in letter["error"]
    # The breaker opened after 3 failed attempts: the runner's last attempts sent nothing.
    assert sum(1 for request, _ in httpserver.log if request.path == "/broken") == 3
    # The built-ins and the flaky provider were recorded despite the broken one.
    assert "email_domain" in lead(tc, keys, lead_id)["enrichment"]

    assert tc.delete("/v1/enrichment/providers/broken", headers=auth(keys.admin)
                     ).status_code == 204
    assert tc.get("/v1/enrichment/providers/broken", headers=auth(keys.admin)
                  ).status_code == 404
