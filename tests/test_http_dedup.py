"""Deduplication over HTTP, on the real stack: exact and likely duplicates under reject, merge and
flag (workspace or per request), concurrent creates of one person, batches that dedup within
themselves, merging leads, and the duplicate review queue resolved by merge and by dismiss."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from tests.http_support import *
from tests.http_support import Keys, auth, lead_body

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PROBLEM = "application/problem+json"


PEOPLE = [
    ("Ada", "Lovelace", "Analytical Engines"), ("Grace", "Hopper", "Cobol Works"),
    ("Alan", "Turing", "Enigma Labs"), ("Edsger", "Dijkstra", "Semaphore Systems"),
    ("Barbara", "Liskov", "Substitution Partners"), ("Donald", "Knuth", "Tex Press"),
    ("Frances", "Allen", "Fortran House"), ("John", "Backus", "Naur Forms"),
    ("Radia", "Perlman", "Spanning Trees"), ("Ken", "Thompson", "Unix Shop"),
    ("Margaret", "Hamilton", "Apollo Guidance"), ("Tim", "Berners", "Web Consortium"),
    ("Shafi", "Goldwasser", "Zero Knowledge"), ("Leslie", "Lamport", "Paxos Clocks"),
    ("Niklaus", "Wirth", "Modula Systems"), ("Guido", "Rossum", "Indentation Software"),
    ("Bjarne", "Stroustrup", "Template Metaworks"), ("Dennis", "Ritchie", "Bell Pointers"),
    ("Katherine", "Johnson", "Orbital Mechanics"), ("Hedy", "Lamarr", "Frequency Hopping"),
    ("Claude", "Shannon", "Information Theory"), ("Sophie", "Wilson", "Acorn Instruments"),
    ("Joan", "Clarke", "Bletchley Cryptanalysis"), ("Lynn", "Conway", "Silicon Design"),
    ("Adele", "Goldberg", "Smalltalk Objects"), ("Jean", "Sammet", "Formac Languages"),
    ("Mary", "Keller", "Basic Instruction"), ("Evelyn", "Berezin", "Reservation Machines"),
]


def person(n: int, **overrides: Any) -> dict[str, Any]:
    """A distinct person (no two alike, even fuzzily), with no phone or external id: their
    email and name identify them."""
    first, last, company = PEOPLE[n]
    domain = company.lower().replace(" ", "-") + ".example"
    fields: dict[str, Any] = {
        "first_name": first, "last_name": last, "company": company,
        "email": f"{first}.{last}@{domain}".lower(), "website": f"https://{domain}",
        "phone": None, "external_id": None,
    }
    return lead_body(n, **{**fields, **overrides})


def assert_problem(response: Any, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    return body


def created(tc: TestClient, token: str, body: dict, query: str = "") -> tuple[dict, str]:
    response = tc.post(f"/v1/leads{query}", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json(), response.headers["x-consistency-token"]


def seen(tc: TestClient, token: str, lead_id: str, consistency: str) -> dict:
    """The lead once the read model has the write (fuzzy matching reads the read model)."""
    response = tc.get(f"/v1/leads/{lead_id}",
                      headers=auth(token, **{"x-consistency-token": consistency}))
    assert response.status_code == 200, response.text
    return response.json()


async def test_concurrent_creates_of_one_person_make_one_lead(server: str, keys: Keys) -> None:
    """The same person twice at once, spelled differently (case, Gmail dots and +tag): one
    lead, under reject (201 + 409) and under merge (201 + 200 into it)."""
    async with httpx.AsyncClient(base_url=server, timeout=30) as http:
        for round_, (policy, loser) in enumerate((("reject", 409), ("merge", 200))):
            first, last, _ = PEOPLE[round_]
            spellings = (f"{first}.{last}+crm@GMAIL.com", f"{first}{last}@gmail.com".lower())
            bodies = [person(round_, email=s) for s in spellings]
            first, second = await asyncio.gather(*(
                http.post(f"/v1/leads?on_duplicate={policy}", json=b, headers=auth(keys.sales))
                for b in bodies))
            statuses = sorted([first.status_code, second.status_code])
            assert statuses == sorted([201, loser]), (first.text, second.text)
            winner = first if first.status_code == 201 else second
            other = second if winner is first else first
            if loser == 409:
                problem = other.json()
                assert other.headers["content-type"].startswith(PROBLEM)
                assert problem["existing_id"] == winner.json()["id"]
                assert problem["exact"] is True and problem["matched"] == ["email"]
                assert problem["score"] == 100
            else:
                assert other.json()["id"] == winner.json()["id"]
                assert other.json()["merged_into"] == winner.json()["id"]
        # ten at once under merge, each spelling the address its own way: one lead, nine
        # merges into it (each changes its email: they contend for it, and all get through)
        bodies = [person(2, email=f"Alan.Turing+{i}@{'GMAIL' if i % 2 else 'gmail'}.com")
                  for i in range(10)]
        answers = await asyncio.gather(*(
            http.post("/v1/leads?on_duplicate=merge", json=b, headers=auth(keys.sales))
            for b in bodies))
        assert sorted(a.status_code for a in answers) == [200] * 9 + [201], [
            a.text for a in answers if a.status_code not in (200, 201)]
        assert len({a.json()["id"] for a in answers}) == 1
        tokens = [a.headers["x-consistency-token"] for a in answers]
        latest = max(tokens, key=lambda t: tuple(int(x) for x in t.split("-")))
        listed = await http.get("/v1/leads", params={"q": "gmail.com", "limit": 10},
                                headers=auth(keys.sales, **{"x-consistency-token": latest}))
        assert len(listed.json()["data"]) == 3  # one lead per round


async def test_twenty_concurrent_creates_of_one_person_make_one_lead(
    server: str, keys: Keys
) -> None:
    """The acceptance's concurrency test: 20 creates at once of the same person (exact identity
    match), each spelling the address its own way (case, Gmail dots, +tags, googlemail): one
    lead under reject (one 201, nineteen 409 naming it) and under merge (one 201, nineteen 200
    merged into it), and the read model lists exactly that one lead."""
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=server, timeout=60, limits=limits) as http:
        for n, (policy, loser) in ((10, ("reject", 409)), (11, ("merge", 200))):
            first, last, _ = PEOPLE[n]
            spellings = [
                f"{first}.{last}+{i}@GMAIL.com" if i % 4 == 0
                else f"{'.'.join(first.lower())}{last}@gmail.com" if i % 4 == 1
                else f"{first.upper()}{last.upper()}+crm{i}@googlemail.com" if i % 4 == 2
                else f"  {first.lower()}.{last.lower()}@Gmail.Com "
                for i in range(20)]
            answers = await asyncio.gather(*(
                http.post(f"/v1/leads?on_duplicate={policy}", json=person(n, email=email),
                          headers=auth(keys.sales))
                for email in spellings))
            codes = collections.Counter(a.status_code for a in answers)
            assert codes == {201: 1, loser: 19}, (policy, [
                a.text for a in answers if a.status_code not in (201, loser)])
            winner = next(a for a in answers if a.status_code == 201).json()
            for other in (a for a in answers if a.status_code == loser):
                body = other.json()
                if loser == 409:
                    assert other.headers["content-type"].startswith(PROBLEM)
                    assert body["type"] == "/problems/duplicate-lead"
                    assert body["existing_id"] == winner["id"] and body["exact"] is True
                else:
                    assert body["id"] == body["merged_into"] == winner["id"]
            tokens = [a.headers["x-consistency-token"] for a in answers
                      if "x-consistency-token" in a.headers]
            latest = max(tokens, key=lambda t: tuple(int(x) for x in t.split("-")))
            listed = await http.get("/v1/leads", params={"q": last, "limit": 50}, headers=auth(
                keys.sales, **{"x-consistency-token": latest}))
            assert listed.status_code == 200, listed.text
            assert [lead["id"] for lead in listed.json()["data"]] == [winner["id"]], policy
            history = (await http.get(f"/v1/leads/{winner['id']}/history",
                                      params={"limit": 1000}, headers=auth(keys.sales))).json()
            created_events = [e for e in history["data"] if e["type"] == "LeadCreated"]
            assert len(created_events) == 1


def test_merge_and_reject_policies(tc: TestClient, keys: Keys) -> None:
    lead, token = created(tc, keys.sales, person(1))
    again = tc.post("/v1/leads", json=person(1, email=lead["email"].upper()),
                    headers=auth(keys.sales))
    problem = assert_problem(again, 409, "duplicate-lead")
    assert (problem["existing_id"], problem["exact"], problem["matched"]) == (
        lead["id"], True, ["email"])
    merged = tc.post("/v1/leads?on_duplicate=merge",
                     json=person(1, title="CTO", industry="fintech", tags=["vip"]),
                     headers=auth(keys.sales))
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["id"], body["merged_into"]) == (lead["id"], lead["id"])
    assert body["title"] == "CTO" and body["industry"] == "financial_services"
    assert "vip" in body["tags"] and body["version"] > lead["version"]
    assert merged.headers["etag"] == f'"{body["version"]}"'
    got = seen(tc, keys.sales, lead["id"], merged.headers["x-consistency-token"])
    assert got["title"] == "CTO" and got["merged_into"] is None

    # likely duplicates: same name at the same company (legal suffix), another address
    seen(tc, keys.sales, lead["id"], token)
    likely = person(1, email="g.hopper@elsewhere.example", company="Cobol Works Ltd")
    fuzzy = tc.post("/v1/leads?on_fuzzy=reject", json=likely, headers=auth(keys.sales))
    problem = assert_problem(fuzzy, 409, "duplicate-lead")
    assert problem["existing_id"] == lead["id"] and problem["exact"] is False
    assert 88 <= problem["score"] <= 100 and "name" in problem["matched"]
    into = tc.post("/v1/leads?on_fuzzy=merge", json=likely, headers=auth(keys.sales))
    assert into.status_code == 200 and into.json()["merged_into"] == lead["id"]
    assert into.json()["email"] == "g.hopper@elsewhere.example"
    for bad in ("?on_duplicate=ignore", "?on_fuzzy=maybe"):
        assert_problem(tc.post(f"/v1/leads{bad}", json=person(2), headers=auth(keys.sales)),
                       422, "validation-failed")


def test_flagged_duplicates_are_queued_and_resolved(tc: TestClient, keys: Keys) -> None:
    a, token = created(tc, keys.sales, person(3))
    seen(tc, keys.sales, a["id"], token)
    b, _ = created(tc, keys.sales, person(4, email=a["email"].upper()), "?on_duplicate=flag")
    assert b["suspected_duplicates"] == [a["id"]]
    c, token = created(tc, keys.sales, person(3, email="edsger@elsewhere.example",
                                             company="Semaphore Systems, Inc."))
    assert c["suspected_duplicates"] == [a["id"]]  # the workspace's fuzzy policy: flag

    queue = tc.get("/v1/duplicates?limit=1",
                   headers=auth(keys.analyst, **{"x-consistency-token": token}))
    assert queue.status_code == 200, queue.text
    first = queue.json()
    rest = tc.get(f"/v1/duplicates?cursor={first['next_cursor']}", headers=auth(keys.analyst))
    pairs = {(d["lead_id"], d["other_id"]): d for d in first["data"] + rest.json()["data"]}
    assert rest.json()["next_cursor"] is None and set(pairs) == {(b["id"], a["id"]),
                                                                 (c["id"], a["id"])}
    exact, likely = pairs[(b["id"], a["id"])], pairs[(c["id"], a["id"])]
    assert (exact["exact"], exact["score"], exact["matched"]) == (True, 100, ["email"])
    assert likely["exact"] is False and 88 <= likely["score"] <= 100
    assert likely["matched"] == ["name", "company"]
    assert exact["lead"]["first_name"] == "Barbara" and exact["other"]["id"] == a["id"]

    # resolve: the analyst may not; a pair the ledger never suspected is 404
    assert_problem(tc.post(f"/v1/duplicates/{b['id']}/{a['id']}/dismiss",
                           headers=auth(keys.analyst)), 403, "forbidden")
    assert_problem(tc.post(f"/v1/duplicates/{b['id']}/{c['id']}/dismiss",
                           headers=auth(keys.sales)), 404, "not-found")
    assert_problem(tc.post(f"/v1/duplicates/{c['id']}/{a['id']}/merge",
                           json={"survivor": "someone-else"}, headers=auth(keys.sales)),
                   422, "validation-failed")
    dismissed = tc.post(f"/v1/duplicates/{a['id']}/{b['id']}/dismiss",  # either order
                        json={"reason": "Different people"}, headers=auth(keys.sales))
    assert dismissed.status_code == 200, dismissed.text
    assert dismissed.json()["id"] == a["id"]
    merged = tc.post(f"/v1/duplicates/{c['id']}/{a['id']}/merge",
                     json={"survivor": a["id"], "reason": "Same person"},
                     headers=auth(keys.sales))
    assert merged.status_code == 200, merged.text
    survivor = merged.json()
    assert survivor["id"] == a["id"] and survivor["merged_from"] == [c["id"]]
    token = merged.headers["x-consistency-token"]
    assert tc.get("/v1/duplicates", headers=auth(
        keys.sales, **{"x-consistency-token": token})).json()["data"] == []
    b_now = seen(tc, keys.sales, b["id"], dismissed.headers["x-consistency-token"])
    assert b_now["suspected_duplicates"] == []
    gone = seen(tc, keys.sales, c["id"], token)
    assert gone["status"] == "merged" and gone["merged_into"] == a["id"]
    history = tc.get(f"/v1/leads/{c['id']}/history", headers=auth(keys.sales)).json()["data"]
    assert history[-1]["type"] == "LeadMergedInto" and history[0]["type"] == "LeadCreated"
    assert_problem(tc.post(f"/v1/duplicates/{c['id']}/{a['id']}/dismiss",
                           headers=auth(keys.sales)), 404, "not-found")


def test_merge_two_leads(tc: TestClient, keys: Keys) -> None:
    survivor, _ = created(tc, keys.sales, person(6, title=None))
    merged, _ = created(tc, keys.sales, person(5, title="VP Sales", tags=["event"]))
    body = {"survivor_id": survivor["id"], "merged_id": merged["id"], "reason": "Same person"}
    assert_problem(tc.post("/v1/leads/merge", json=body, headers=auth(keys.analyst)),
                   403, "forbidden")
    response = tc.post("/v1/leads/merge", json=body, headers=auth(keys.sales))
    assert response.status_code == 200, response.text
    lead = response.json()
    assert lead["id"] == survivor["id"] and lead["merged_from"] == [merged["id"]]
    assert lead["title"] == "VP Sales" and "event" in lead["tags"]
    assert lead["email"] == survivor["email"]  # the survivor's own values stay
    token = response.headers["x-consistency-token"]
    ended = seen(tc, keys.sales, merged["id"], token)
    assert (ended["status"], ended["merged_into"]) == ("merged", survivor["id"])
    for lead_id in (survivor["id"], merged["id"]):
        history = tc.get(f"/v1/leads/{lead_id}/history", headers=auth(keys.sales)).json()
        # the last write through the API (processors may still be enriching the survivor)
        by_api = [entry for entry in history["data"] if entry["source"] == "api"]
        assert by_api[-1]["reason"] == "Same person"
    # the merged lead's identity now finds the survivor
    again = tc.post("/v1/leads", json=person(9, email=merged["email"]), headers=auth(keys.sales))
    assert assert_problem(again, 409, "duplicate-lead")["existing_id"] == survivor["id"]
    listed = tc.get("/v1/leads?status=merged", headers=auth(keys.sales)).json()["data"]
    assert [m["id"] for m in listed] == [merged["id"]]

    assert_problem(tc.post("/v1/leads/merge", json=body, headers=auth(keys.sales)), 410, "gone")
    same = {"survivor_id": survivor["id"], "merged_id": survivor["id"]}
    assert_problem(tc.post("/v1/leads/merge", json=same, headers=auth(keys.sales)),
                   422, "validation-failed")
    unknown = {"survivor_id": survivor["id"], "merged_id": "no-such-lead"}
    assert_problem(tc.post("/v1/leads/merge", json=unknown, headers=auth(keys.sales)),
                   404, "not-found")
    assert_problem(tc.post("/v1/leads/merge", json={"survivor_id": survivor["id"]},
                           headers=auth(keys.sales)), 422, "validation-failed")
    other_ws = {"survivor_id": survivor["id"], "merged_id": merged["id"]}
    assert_problem(tc.post("/v1/leads/merge", json=other_ws, headers=auth(keys.other)),
                   404, "not-found")


def test_batches_dedup_within_themselves(tc: TestClient, keys: Keys) -> None:
    one = person(20, email="Claude.Shannon@gmail.com")
    same = dict(one, email="claudeshannon+batch@GMAIL.com", title="Professor")
    two = person(21)
    # not atomic, merge: the second spelling of the same person merges into the first
    response = tc.post("/v1/leads/batch?on_duplicate=merge", json={"leads": [one, same, two]},
                       headers=auth(keys.sales))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["created"], body["merged"], body["rejected"]) == (2, 1, 0)
    statuses = sorted(r["status"] for r in body["results"][:2])
    assert statuses == ["created", "merged"]
    ids = {r["lead"]["id"] for r in body["results"][:2]}
    assert len(ids) == 1 and body["results"][2]["lead"]["id"] not in ids
    # not atomic, reject (the default): the repeat is rejected, naming the lead
    again = tc.post("/v1/leads/batch", json={"leads": [person(22), person(22, first_name="A")]},
                    headers=auth(keys.sales)).json()
    assert sorted(r["status"] for r in again["results"]) == ["created", "rejected"]
    rejected = next(r for r in again["results"] if r["status"] == "rejected")
    kept = next(r for r in again["results"] if r["status"] == "created")
    assert rejected["error"]["type"] == "/problems/duplicate-lead"
    assert rejected["error"]["existing_id"] == kept["lead"]["id"]

    # atomic: in one transaction, through the same ingestion
    items = [person(23), person(23, email=person(23)["email"].upper(), city="Paris"),
             person(24), person(24, email="adele@elsewhere.example",
                                company="Smalltalk Objects GmbH")]
    atomic = tc.post("/v1/leads/batch?atomic=true&on_duplicate=merge",
                     json={"leads": items}, headers=auth(keys.sales))
    assert atomic.status_code == 200, atomic.text
    results = atomic.json()["results"]
    assert [r["status"] for r in results] == ["created", "merged", "created", "created"]
    assert results[1]["lead"]["id"] == results[0]["lead"]["id"]
    assert results[1]["lead"]["city"] == "Paris"
    assert results[3]["lead"]["suspected_duplicates"] == [results[2]["lead"]["id"]]  # fuzzy
    refused = tc.post("/v1/leads/batch?atomic=true",
                      json={"leads": [person(25), person(26), person(25, first_name="B")]},
                      headers=auth(keys.sales))
    problem = assert_problem(refused, 409, "duplicate-lead")
    assert "item 2" in problem["detail"] and "item 0" in problem["detail"]
    assert problem["errors"] == [{"field": "leads[2].email", "message": "same as leads[0]"}]
    # nothing of the refused batch was written
    assert tc.post("/v1/leads", json=person(25), headers=auth(keys.sales)).status_code == 201
    existing = tc.post("/v1/leads/batch?atomic=true",
                       json={"leads": [person(27), person(20, email="claude.shannon@gmail.com")]},
                       headers=auth(keys.sales))
    problem = assert_problem(existing, 409, "duplicate-lead")
    assert problem["existing_id"] in ids and problem["exact"] is True
