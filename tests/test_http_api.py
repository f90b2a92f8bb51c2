"""The HTTP API through Litestar's test client: every endpoint and its error paths.

Each test gets its own database and a running app (pool, relay and lead projection), and talks
to it only over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from litestar.testing import TestClient

from api.http.settings import HttpSettings
from tests.http_support import *
from tests.http_support import Keys, auth, lead_body, make_app, without_enrichment

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"


@pytest.fixture
def api_app(infra: Any, http_settings: HttpSettings) -> Any:
    """Every worker but the reactors that append to each new lead (built-in enrichment): these
    tests pin a lead's exact versions, history and change feed. What processors add is tested
    where they are (test_http_enrichment, test_routing, test_webhooks)."""
    return make_app(infra, http_settings, reactors=without_enrichment())


def create(tc: TestClient, token: str, n: int = 0, **overrides: Any) -> tuple[dict, str]:
    response = tc.post("/v1/leads", json=lead_body(n, **overrides), headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json(), response.headers["x-consistency-token"]


def read(tc: TestClient, token: str, lead_id: str, consistency: str) -> dict:
    response = tc.get(f"/v1/leads/{lead_id}",
                      headers=auth(token, **{"x-consistency-token": consistency}))
    assert response.status_code == 200, response.text
    return response.json()


def assert_problem(response: Any, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- create and read ---------------------------------------------------------------------------


def test_create_then_read_your_write(tc: TestClient, keys: Keys) -> None:
    response = tc.post("/v1/leads", json=lead_body(1), headers=auth(keys.sales))
    assert response.status_code == 201, response.text
    lead = response.json()
    assert lead["email"] == "ada1@analytical1.example" and lead["status"] == "active"
    assert lead["tags"] == ["webinar-2025", "enterprise"] and lead["stage"] == "lead"
    headers = response.headers
    assert headers["etag"] == f'"{lead["version"]}"'
    assert headers["location"] == f"/v1/leads/{lead['id']}"
    assert headers["ratelimit-policy"] == '"default";q=1000000;w=60'
    assert headers["ratelimit"].startswith('"default";r=')
    assert headers["x-request-id"]

    got = read(tc, keys.sales, lead["id"], headers["x-consistency-token"])
    assert got == lead
    again = tc.get(f"/v1/leads/{lead['id']}",
                   headers=auth(keys.sales, **{"if-none-match": headers["etag"]}))
    assert again.status_code == 304 and again.headers["etag"] == headers["etag"]


def test_request_ids_are_echoed_and_recorded(tc: TestClient, keys: Keys) -> None:
    response = tc.post("/v1/leads", json=lead_body(2), headers=auth(
        keys.sales, **{"x-request-id": "req-42", "x-correlation-id": "flow-7",
                       "x-reason": "Demo request at the webinar"}))
    assert response.headers["x-request-id"] == "req-42"
    history = tc.get(f"/v1/leads/{response.json()['id']}/history", headers=auth(keys.sales))
    first = history.json()["data"][0]
    assert first["request_id"] == "req-42" and first["correlation_id"] == "flow-7"
    assert first["reason"] == "Demo request at the webinar" and first["source"] == "api"
    assert first["actor"] == {"key_id": keys.ids["sales"], "role": "sales"}


def test_unknown_lead_and_odd_ids_are_404(tc: TestClient, keys: Keys) -> None:
    for path in ("/v1/leads/nope", "/v1/leads/%00x", "/v1/leads/nope/history",
                 "/v1/leads/nope/notes"):
        assert_problem(tc.get(path, headers=auth(keys.sales)), 404, "not-found")
    assert_problem(tc.patch("/v1/leads/nope", json={"city": "Paris"}, headers=auth(keys.sales)),
                   404, "not-found")
    assert_problem(tc.patch("/v1/leads/nope", json={"city": "Paris"},
                            headers=auth(keys.sales, **{"if-match": '"3"'})), 404, "not-found")
    assert_problem(tc.delete("/v1/leads/nope", headers=auth(keys.sales)), 404, "not-found")
    assert_problem(tc.put("/v1/leads/nope/tags/vip", headers=auth(keys.sales)), 404, "not-found")
    body = assert_problem(tc.get("/no/such/route"), 404, "not-found")
    assert body["request_id"]


# -- validation ---------------------------------------------------------------------------------


def test_validation_errors_name_each_field(tc: TestClient, keys: Keys) -> None:
    unknown = tc.post("/v1/leads", json={**lead_body(3), "favourite_colour": "teal"},
                      headers=auth(keys.sales))
    body = assert_problem(unknown, 422, "validation-failed")
    assert body["errors"][0]["field"] == "favourite_colour"
    assert "unknown field" in body["errors"][0]["message"]

    too_long = tc.post("/v1/leads", json=lead_body(3, first_name="x" * 201),
                       headers=auth(keys.sales))
    assert assert_problem(too_long, 422, "validation-failed")["errors"][0]["field"] == "first_name"

    wrong_type = tc.post("/v1/leads", json=lead_body(3, tags="vip"), headers=auth(keys.sales))
    assert assert_problem(wrong_type, 422, "validation-failed")["errors"][0]["field"] == "tags"

    bad_tag = tc.post("/v1/leads", json=lead_body(3, tags=["Not A Tag"]), headers=auth(keys.sales))
    assert_problem(bad_tag, 422, "validation-failed")

    bad_stage = tc.post("/v1/leads", json=lead_body(3, stage="hot"), headers=auth(keys.sales))
    assert assert_problem(bad_stage, 422, "validation-failed")["errors"][0]["field"] == "stage"

    bad_ip = tc.post("/v1/leads", json=lead_body(3, ip_address="1.2.3"), headers=auth(keys.sales))
    assert assert_problem(bad_ip, 422, "validation-failed")["errors"][0]["field"] == "ip_address"

    nul = tc.post("/v1/leads", json=lead_body(3, company="a\x00b"), headers=auth(keys.sales))
    assert_problem(nul, 422, "validation-failed")

    malformed = tc.post("/v1/leads", content=b'{"first_name": ', headers=auth(
        keys.sales, **{"content-type": "application/json"}))
    assert_problem(malformed, 400, "bad-request")

    big = tc.post("/v1/leads", content=b'{"city": "' + b"x" * 70_000 + b'"}',
                  headers=auth(keys.sales, **{"content-type": "application/json"}))
    assert_problem(big, 413, "payload-too-large")

    form = tc.post("/v1/leads", content=b"first_name=Ada", headers=auth(
        keys.sales, **{"content-type": "application/x-www-form-urlencoded"}))
    assert_problem(form, 415, "unsupported-media-type")

    # Some clients (aiohttp) label an empty body application/octet-stream: no body, no 415.
    empty = tc.post("/v1/leads", content=b"", headers=auth(
        keys.sales, **{"content-type": "application/octet-stream"}))
    assert_problem(empty, 422, "validation-failed")

    bad_limit = tc.get("/v1/leads?limit=5000", headers=auth(keys.sales))
    assert_problem(bad_limit, 422, "validation-failed")

    assert tc.get("/v1/leads", headers=auth(keys.sales)).json()["data"] == []


# -- keys, roles, limits ------------------------------------------------------------------------


def test_authentication(tc: TestClient, keys: Keys) -> None:
    missing = assert_problem(tc.get("/v1/leads"), 401, "unauthorized")
    assert missing["detail"]
    assert tc.get("/v1/leads").headers["www-authenticate"].startswith("Bearer")
    assert_problem(tc.get("/v1/leads", headers=auth("llk_0000000000000000_" + "A" * 43)),
                   401, "unauthorized")
    wrong_secret = keys.sales[:-4] + ("AAAA" if not keys.sales.endswith("AAAA") else "BBBB")
    assert_problem(tc.get("/v1/leads", headers=auth(wrong_secret)), 401, "unauthorized")
    assert_problem(tc.get("/v1/leads", headers={"authorization": "Basic abc"}), 401,
                   "unauthorized")
    for public in ("/health", "/ready", "/schema/openapi.json", "/problems/not-found"):
        assert tc.get(public).status_code == 200, public


def test_a_revoked_key_fails_on_its_next_request(tc: TestClient, keys: Keys) -> None:
    assert tc.get("/v1/leads", headers=auth(keys.sales)).status_code == 200
    revoked = tc.post(f"/v1/keys/{keys.ids['sales']}/revoke", headers=auth(keys.admin))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert_problem(tc.get("/v1/leads", headers=auth(keys.sales)), 401, "unauthorized")
    # an admin manages its own workspace's keys only
    assert_problem(tc.post(f"/v1/keys/{keys.ids['other']}/revoke", headers=auth(keys.admin)),
                   404, "not-found")


def test_roles(tc: TestClient, keys: Keys) -> None:
    assert tc.get("/v1/leads", headers=auth(keys.analyst)).status_code == 200
    assert_problem(tc.post("/v1/leads", json=lead_body(4), headers=auth(keys.analyst)),
                   403, "forbidden")
    assert_problem(tc.get("/v1/keys", headers=auth(keys.sales)), 403, "forbidden")
    assert_problem(tc.patch("/v1/workspace", json={"require_if_match": True},
                            headers=auth(keys.sales)), 403, "forbidden")
    made = tc.post("/v1/keys", json={"name": "zapier", "role": "agent"}, headers=auth(keys.admin))
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert tc.post("/v1/leads", json=lead_body(4), headers=auth(token)).status_code == 201
    listed = tc.get("/v1/keys", headers=auth(keys.admin)).json()
    assert {k["name"] for k in listed} >= {"zapier", "admin", "sales"}
    assert all("token" not in k and "secret" not in str(k) for k in listed)


def test_rate_limit(tc: TestClient, keys: Keys) -> None:
    for remaining in (2, 1, 0):
        response = tc.get("/v1/leads", headers=auth(keys.limited))
        assert response.status_code == 200
        assert response.headers["ratelimit"].startswith(f'"default";r={remaining};t=')
    limited = tc.get("/v1/leads", headers=auth(keys.limited))
    assert_problem(limited, 429, "rate-limited")
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.headers["ratelimit-policy"] == '"default";q=3;w=60'


# -- changes ------------------------------------------------------------------------------------


def test_patch_with_if_match(tc: TestClient, keys: Keys) -> None:
    lead, _ = create(tc, keys.sales, 5)
    etag = f'"{lead["version"]}"'
    changed = tc.patch(
        f"/v1/leads/{lead['id']}",
        json={"title": "CTO", "city": None, "stage": "mql", "owner": "sam@seller.example",
              "tags": ["enterprise", "hot"], "reason": "Qualified on a call"},
        headers=auth(keys.sales, **{"if-match": etag}),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["title"], body["city"], body["stage"]) == ("CTO", None, "mql")
    assert body["owner"] == "sam@seller.example" and body["tags"] == ["enterprise", "hot"]
    assert changed.headers["etag"] == f'"{body["version"]}"'

    stale = tc.patch(f"/v1/leads/{lead['id']}", json={"title": "CEO"},
                     headers=auth(keys.sales, **{"if-match": etag}))
    problem = assert_problem(stale, 412, "precondition-failed")
    assert problem["current_version"] == body["version"]
    assert_problem(tc.patch(f"/v1/leads/{lead['id']}", json={"title": "CEO"},
                            headers=auth(keys.sales, **{"if-match": "W/" + etag})),
                   412, "precondition-failed")
    assert_problem(tc.patch(f"/v1/leads/{lead['id']}", json={"title": "CEO"},
                            headers=auth(keys.sales, **{"if-match": "three"})), 400, "bad-request")

    # all changes of one PATCH are one write: one request id, one transaction
    history = tc.get(f"/v1/leads/{lead['id']}/history", headers=auth(keys.sales)).json()["data"]
    patch_entries = [e for e in history if e["version"] > lead["version"]]
    assert len({e["request_id"] for e in patch_entries}) == 1
    assert len({e["position"].split("-")[0] for e in patch_entries}) == 1
    assert all(e["reason"] == "Qualified on a call" for e in patch_entries)
    changes = {c["field"]: c for e in patch_entries for c in e["changes"]}
    assert changes["title"] == {"field": "title", "before": "Head of Engineering", "after": "CTO"}
    assert changes["city"]["before"] == "London" and changes["city"]["after"] is None
    assert changes["stage"] == {"field": "stage", "before": "lead", "after": "mql"}

    unchanged = tc.patch(f"/v1/leads/{lead['id']}", json={"title": "CTO"},
                         headers=auth(keys.sales))
    assert unchanged.status_code == 200 and unchanged.json()["version"] == body["version"]
    star = tc.patch(f"/v1/leads/{lead['id']}", json={"title": "CEO"},
                    headers=auth(keys.sales, **{"if-match": "*"}))
    assert star.status_code == 200 and star.json()["title"] == "CEO"

    invalid = tc.patch(f"/v1/leads/{lead['id']}", json={"stage": "warm"},
                       headers=auth(keys.sales))
    assert_problem(invalid, 422, "validation-failed")
    assert_problem(tc.patch(f"/v1/leads/{lead['id']}", json={"id": "x"},
                            headers=auth(keys.sales)), 422, "validation-failed")


def test_workspace_may_require_if_match(tc: TestClient, keys: Keys) -> None:
    lead, _ = create(tc, keys.sales, 6)
    policy = tc.patch("/v1/workspace", json={"require_if_match": True}, headers=auth(keys.admin))
    assert policy.json() == {"workspace": "acme", "require_if_match": True}
    assert tc.get("/v1/workspace", headers=auth(keys.sales)).json()["require_if_match"] is True
    assert_problem(tc.patch(f"/v1/leads/{lead['id']}", json={"city": "Paris"},
                            headers=auth(keys.sales)), 428, "precondition-required")
    ok = tc.patch(f"/v1/leads/{lead['id']}", json={"city": "Paris"},
                  headers=auth(keys.sales, **{"if-match": f'"{lead["version"]}"'}))
    assert ok.status_code == 200
    # another workspace's policy is its own
    other, _ = create(tc, keys.other, 6)
    assert tc.patch(f"/v1/leads/{other['id']}", json={"city": "Oslo"},
                    headers=auth(keys.other)).status_code == 200


def test_archive_restore_tags_and_notes(tc: TestClient, keys: Keys) -> None:
    lead, _ = create(tc, keys.sales, 7)
    lead_url = f"/v1/leads/{lead['id']}"
    tagged = tc.put(f"{lead_url}/tags/vip", headers=auth(keys.sales))
    assert tagged.status_code == 200 and "vip" in tagged.json()["tags"]
    again = tc.put(f"{lead_url}/tags/vip", headers=auth(keys.sales))
    assert again.json()["version"] == tagged.json()["version"]
    assert_problem(tc.put(f"{lead_url}/tags/NOPE!", headers=auth(keys.sales)),
                   422, "validation-failed")
    untagged = tc.delete(f"{lead_url}/tags/vip", headers=auth(keys.sales))
    assert "vip" not in untagged.json()["tags"]

    note = tc.post(f"{lead_url}/notes", json={"text": "Called; wants a demo."},
                   headers=auth(keys.sales))
    assert note.status_code == 201, note.text
    assert note.json()["text"] == "Called; wants a demo." and note.headers["x-consistency-token"]
    assert_problem(tc.post(f"{lead_url}/notes", json={"text": ""}, headers=auth(keys.sales)),
                   422, "validation-failed")
    notes = tc.get(f"{lead_url}/notes", headers=auth(keys.sales)).json()
    assert [n["text"] for n in notes["data"]] == ["Called; wants a demo."]
    assert notes["data"][0]["author"]["key_id"] == keys.ids["sales"]

    archived = tc.delete(lead_url, headers=auth(keys.sales, **{"x-reason": "Left the company"}))
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert_problem(tc.patch(lead_url, json={"city": "Rome"}, headers=auth(keys.sales)),
                   409, "lead-archived")
    token = archived.headers["x-consistency-token"]
    listed = tc.get("/v1/leads?status=archived",
                    headers=auth(keys.sales, **{"x-consistency-token": token})).json()
    assert [x["id"] for x in listed["data"]] == [lead["id"]]
    assert tc.get("/v1/leads", headers=auth(keys.sales)).json()["data"] == []
    restored = tc.post(f"{lead_url}/restore", headers=auth(keys.sales))
    assert restored.status_code == 200 and restored.json()["status"] == "active"
    history = tc.get(f"{lead_url}/history", headers=auth(keys.sales)).json()["data"]
    types = [e["type"] for e in history]
    assert types[-2:] == ["LeadArchived", "LeadRestored"]
    assert history[-2]["reason"] == "Left the company"
    note_entry = next(e for e in history if e["type"] == "LeadNoteAdded")
    assert note_entry["changes"][-1]["after"]["text"] == "Called; wants a demo."


# -- lists, pages, the feed ----------------------------------------------------------------------


def test_list_filters_and_cursor_pages(tc: TestClient, keys: Keys) -> None:
    items = [lead_body(10 + i, stage="mql" if i % 2 else "lead", tags=["t" + str(i % 3)],
                       owner=f"o{i % 2}", source="partner" if i < 3 else "web_form")
             for i in range(7)]
    batch = tc.post("/v1/leads/batch", json={"leads": items}, headers=auth(keys.sales))
    assert batch.status_code == 200, batch.text
    # the batch's newest write, as a consistency token for the list
    tokens = [tc.get(f"/v1/leads/{r['lead']['id']}/history",
                     headers=auth(keys.sales)).json()["data"][-1]["position"]
              for r in batch.json()["results"]]
    newest = max(tokens, key=lambda t: tuple(map(int, t.split("-"))))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, "sort": "created_at"} | ({"cursor": cursor} if cursor else {})
        page = tc.get("/v1/leads", params=params,
                      headers=auth(keys.sales, **{"x-consistency-token": newest})).json()
        seen += [x["id"] for x in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and len(set(seen)) == 7

    def ids(**params: Any) -> set[str]:
        return {x["id"] for x in tc.get("/v1/leads", params=params,
                                        headers=auth(keys.sales)).json()["data"]}

    by_index = [r["lead"]["id"] for r in batch.json()["results"]]
    assert ids(stage="mql") == {by_index[i] for i in (1, 3, 5)}
    assert ids(stage=["mql", "lead"]) == set(by_index)
    assert ids(tag="t0") == {by_index[i] for i in (0, 3, 6)}
    assert ids(owner="o0", source="partner") == {by_index[i] for i in (0, 2)}
    assert ids(q="lovelace12") == {by_index[2]}
    assert ids(q="ANALYTICAL ENGINES 1") == set(by_index)
    assert ids(q="100%_") == set()
    assert ids(created_after="2000-01-01T00:00:00Z", created_before="2999-01-01T00:00:00Z") \
        == set(by_index)
    assert ids(updated_before="2000-01-01T00:00:00Z") == set()
    desc = tc.get("/v1/leads", params={"sort": "-updated_at", "limit": 7},
                  headers=auth(keys.sales)).json()["data"]
    stamps = [(x["updated_at"], x["id"]) for x in desc]
    assert stamps == sorted(stamps, reverse=True)

    page = tc.get("/v1/leads", params={"limit": 2, "stage": "mql"}, headers=auth(keys.sales))
    cursor = page.json()["next_cursor"]
    assert_problem(tc.get("/v1/leads", params={"cursor": cursor, "stage": "lead"},
                          headers=auth(keys.sales)), 400, "bad-request")
    assert_problem(tc.get("/v1/leads", params={"cursor": "garbage!"}, headers=auth(keys.sales)),
                   400, "bad-request")


def _feed(tc: TestClient, token: str, after: str | None = None, *, at_least: int = 0,
          limit: int = 100) -> dict:
    """A page of the feed; polls (bounded) until it holds `at_least` events, since a gap-safe
    read shows nothing a still-running transaction (a worker's batch, say) could precede."""
    params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
    for _ in range(100):
        page = tc.get("/v1/events", params=params, headers=auth(token)).json()
        if len(page["data"]) >= at_least:
            return page
        time.sleep(0.05)
    raise AssertionError(f"the feed did not reach {at_least} events: {page}")


def test_change_feed(tc: TestClient, keys: Keys) -> None:
    mine, _ = create(tc, keys.sales, 20)
    theirs, _ = create(tc, keys.other, 21)
    first = _feed(tc, keys.sales, at_least=1, limit=1)
    assert len(first["data"]) == 1
    event = first["data"][0]
    assert event["type"] == "LeadCreated" and event["lead_id"] == mine["id"]
    assert event["data"]["fields"]["email"] == "ada20@analytical20.example"
    assert event["metadata"]["actor"]["role"] == "sales"
    rest = _feed(tc, keys.sales, first["next_cursor"], at_least=mine["version"] - 1)
    assert {e["lead_id"] for e in rest["data"]} == {mine["id"]}
    assert [e["version"] for e in rest["data"]] == list(range(2, mine["version"] + 1))
    tail = _feed(tc, keys.sales, rest["next_cursor"])
    assert tail["data"] == [] and tail["next_cursor"] == rest["next_cursor"]
    others = _feed(tc, keys.other, at_least=theirs["version"])["data"]
    assert {e["lead_id"] for e in others} == {theirs["id"]}
    assert_problem(tc.get("/v1/events", params={"after": "%%%"}, headers=auth(keys.sales)),
                   400, "bad-request")


# -- batches ------------------------------------------------------------------------------------


def test_batch_reports_each_item(tc: TestClient, keys: Keys) -> None:
    items: list[Any] = [lead_body(30), {"first_name": 5}, lead_body(31, stage="hot"), "nope",
                        lead_body(32, extra="x"), lead_body(33)]
    response = tc.post("/v1/leads/batch", json={"leads": items}, headers=auth(keys.sales))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["rejected"], body["atomic"]) == (2, 4, False)
    statuses = [r["status"] for r in body["results"]]
    assert statuses == ["created", "rejected", "rejected", "rejected", "rejected", "created"]
    assert [r["index"] for r in body["results"]] == list(range(6))
    assert body["results"][1]["error"]["errors"][0]["field"] == "first_name"
    assert body["results"][4]["error"]["errors"][0]["field"] == "extra"

    atomic = tc.post("/v1/leads/batch?atomic=true", json={"leads": items},
                     headers=auth(keys.sales))
    problem = assert_problem(atomic, 422, "validation-failed")
    assert {e["field"].split(".")[0] for e in problem["errors"]} == {
        "leads[1]", "leads[2]", "leads[3]", "leads[4]"}
    whole = tc.post("/v1/leads/batch?atomic=true",
                    json={"leads": [lead_body(40 + i) for i in range(5)]},
                    headers=auth(keys.sales))
    assert whole.status_code == 200 and whole.json()["created"] == 5
    created_at = {r["lead"]["created_at"] for r in whole.json()["results"]}
    assert len(created_at) == 1  # one transaction
    # an atomic batch that repeats a person is refused whole
    twice = tc.post("/v1/leads/batch?atomic=true",
                    json={"leads": [lead_body(50), lead_body(50, external_id="other")]},
                    headers=auth(keys.sales))
    assert_problem(twice, 409, "duplicate-lead")

    assert_problem(tc.post("/v1/leads/batch", json={"leads": []}, headers=auth(keys.sales)),
                   422, "validation-failed")
    too_many = {"leads": [{}] * 1001}
    assert_problem(tc.post("/v1/leads/batch", json=too_many, headers=auth(keys.sales)),
                   422, "validation-failed")


def test_duplicates(tc: TestClient, keys: Keys) -> None:
    lead, _ = create(tc, keys.sales, 60)
    again = tc.post("/v1/leads", json=lead_body(60, external_id="x"), headers=auth(keys.sales))
    problem = assert_problem(again, 409, "duplicate-lead")
    assert problem["existing_id"] == lead["id"]
    merged = tc.post("/v1/leads?on_duplicate=merge",
                     json=lead_body(60, external_id="x", industry="software"),
                     headers=auth(keys.sales))
    assert merged.status_code == 200, merged.text
    assert merged.json()["id"] == lead["id"] and merged.json()["industry"] == "software"
    # the same person in another workspace is another lead
    assert tc.post("/v1/leads", json=lead_body(60), headers=auth(keys.other)).status_code == 201

    # a PATCH moves the lead's identity with it: taken identities are refused, old ones freed
    second, _ = create(tc, keys.sales, 61)
    taken = tc.patch(f"/v1/leads/{second['id']}", json={"email": lead["email"], "city": "Oslo"},
                     headers=auth(keys.sales))
    assert assert_problem(taken, 409, "duplicate-lead")["existing_id"] == lead["id"]
    moved = tc.patch(f"/v1/leads/{second['id']}",
                     json={"email": "new.address@analytical61.example", "stage": "mql"},
                     headers=auth(keys.sales))
    assert moved.status_code == 200, moved.text
    reuse_old = lead_body(62, email=second["email"])
    assert tc.post("/v1/leads", json=reuse_old, headers=auth(keys.sales)).status_code == 201
    reuse_new = lead_body(63, email="new.address@analytical61.example")
    assert_problem(tc.post("/v1/leads", json=reuse_new, headers=auth(keys.sales)),
                   409, "duplicate-lead")


# -- idempotency --------------------------------------------------------------------------------


def test_idempotency_key(tc: TestClient, keys: Keys) -> None:
    headers = auth(keys.sales, **{"idempotency-key": '"form-123"'})
    first = tc.post("/v1/leads", json=lead_body(70), headers=headers)
    assert first.status_code == 201
    replay = tc.post("/v1/leads", json=lead_body(70), headers=headers)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["etag"] == first.headers["etag"]
    assert replay.headers["x-consistency-token"] == first.headers["x-consistency-token"]
    # key order and whitespace do not make a different request
    reordered = tc.post("/v1/leads", content=_reversed_json(lead_body(70)),
                        headers={**headers, "content-type": "application/json"})
    assert reordered.status_code == 201 and reordered.json()["id"] == first.json()["id"]

    reused = tc.post("/v1/leads", json=lead_body(71), headers=headers)
    assert_problem(reused, 422, "idempotency-key-reused")
    # scoped to the API key: another key may use the same value
    other = tc.post("/v1/leads", json=lead_body(70),
                    headers=auth(keys.other, **{"idempotency-key": "form-123"}))
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert_problem(tc.post("/v1/leads", json=lead_body(72),
                           headers=auth(keys.sales, **{"idempotency-key": '"bad\\"key"'})),
                   400, "bad-request")
    # a refused request frees its key for a corrected one
    refused = tc.post("/v1/leads", json=lead_body(73, stage="hot"),
                      headers=auth(keys.sales, **{"idempotency-key": "k2"}))
    assert refused.status_code == 422
    fixed = tc.post("/v1/leads", json=lead_body(73),
                    headers=auth(keys.sales, **{"idempotency-key": "k2"}))
    assert fixed.status_code == 201

    note_headers = auth(keys.sales, **{"idempotency-key": "note-1"})
    url = f"/v1/leads/{first.json()['id']}/notes"
    n1 = tc.post(url, json={"text": "hello"}, headers=note_headers)
    n2 = tc.post(url, json={"text": "hello"}, headers=note_headers)
    assert n1.status_code == n2.status_code == 201 and n1.json() == n2.json()
    assert len(tc.get(url, headers=auth(keys.sales)).json()["data"]) == 1


def _reversed_json(body: dict[str, Any]) -> bytes:
    import json

    return json.dumps(dict(reversed(list(body.items()))), indent=3).encode()


# -- isolation ----------------------------------------------------------------------------------


def test_another_workspace_sees_nothing(tc: TestClient, keys: Keys) -> None:
    lead, token = create(tc, keys.sales, 80)
    read(tc, keys.sales, lead["id"], token)
    url = f"/v1/leads/{lead['id']}"
    theirs = auth(keys.other, **{"x-consistency-token": token})
    assert_problem(tc.get(url, headers=theirs), 404, "not-found")
    assert_problem(tc.patch(url, json={"city": "X"}, headers=auth(keys.other)), 404, "not-found")
    assert_problem(tc.patch(url, json={"city": "X"},
                            headers=auth(keys.other, **{"if-match": f'"{lead["version"]}"'})),
                   404, "not-found")
    assert_problem(tc.delete(url, headers=auth(keys.other)), 404, "not-found")
    assert_problem(tc.post(f"{url}/restore", headers=auth(keys.other)), 404, "not-found")
    assert_problem(tc.put(f"{url}/tags/x", headers=auth(keys.other)), 404, "not-found")
    assert_problem(tc.post(f"{url}/notes", json={"text": "x"}, headers=auth(keys.other)),
                   404, "not-found")
    assert_problem(tc.get(f"{url}/history", headers=auth(keys.other)), 404, "not-found")
    assert_problem(tc.get(f"{url}/notes", headers=auth(keys.other)), 404, "not-found")
    assert tc.get("/v1/leads", headers=theirs).json()["data"] == []
    assert tc.get("/v1/events", headers=auth(keys.other)).json()["data"] == []
    assert read(tc, keys.sales, lead["id"], token)["city"] == "London"


# -- operations ---------------------------------------------------------------------------------


def test_health_ready_schema_and_problem_types(tc: TestClient, keys: Keys) -> None:
    assert tc.get("/health").json() == {"status": "ok"}
    ready = tc.get("/ready")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgres", "nats", "projection"}
    document = tc.get("/schema/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    for path in ("/v1/leads", "/v1/leads/{lead_id}", "/v1/leads/batch", "/v1/events",
                 "/v1/leads/{lead_id}/history", "/v1/leads/{lead_id}/notes",
                 "/v1/leads/{lead_id}/tags/{tag}", "/v1/leads/{lead_id}/restore"):
        assert path in paths, path
    create_op = paths["/v1/leads"]["post"]
    assert {"409", "412", "422", "429"} <= set(create_op["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in create_op["parameters"])
    assert paths["/health"]["get"]["security"] == []
    assert tc.get("/schema").status_code == 200
    assert tc.get("/problems/precondition-failed").json()["status"] == 412
    assert len(tc.get("/problems").json()) >= 15


@pytest.fixture
def http_settings() -> HttpSettings:
    return HttpSettings(consistency_wait_s=10.0, check_nats=True, max_body_bytes=64 * 1024)


def test_read_your_writes_times_out_with_503(infra: Any, keys: Keys) -> None:
    from tests.http_support import make_app

    app = make_app(infra, HttpSettings(consistency_wait_s=0.3, check_nats=False,
                                         ready_max_projection_lag=0), workers=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/leads", json=lead_body(90), headers=auth(keys.sales))
        token = response.headers["x-consistency-token"]
        stale = client.get(f"/v1/leads/{response.json()['id']}",
                           headers=auth(keys.sales, **{"x-consistency-token": token}))
        assert_problem(stale, 503, "unavailable")
        assert stale.headers["retry-after"] == "1"
        assert_problem(client.get("/v1/leads", headers=auth(
            keys.sales, **{"x-consistency-token": "not-a-token"})), 400, "bad-request")
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["projection"]["ok"] is False
