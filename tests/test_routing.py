"""Routing and follow-up end to end, over HTTP with the workers running (relay, projections, the
route reactor, the overdue sweeper): rules in order, round-robin over a team, least-loaded with
capacity, territory by country, the fallback queue; LeadAssigned names the rule; a follow-up
task opens with the SLA's due time; /v1/tasks lists, completes and reassigns; an overdue task is
escalated (and, per the SLA, re-routed)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from litestar.testing import TestClient

from tests.http_support import *
from tests.http_support import Keys, auth

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def fast_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADLEDGER_OVERDUE_SWEEP_S", "0.3")


def until(check: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def put(tc: TestClient, token: str, path: str, body: dict) -> dict:
    response = tc.put(f"/v1/routing/{path}", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def create(tc: TestClient, token: str, n: int, **fields: Any) -> str:
    body = {"email": f"person{n}@company{n}.example", "company": f"Company {n}", **fields}
    response = tc.post("/v1/leads", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def events(tc: TestClient, token: str) -> list[dict]:
    found, after = [], None
    while True:
        query = f"?limit=1000&after={after}" if after else "?limit=1000"
        page = tc.get(f"/v1/events{query}", headers=auth(token)).json()
        found += page["data"]
        if len(page["data"]) < 1000:
            return found
        after = page["next_cursor"]


def of_type(tc: TestClient, token: str, kind: str) -> dict[str, list[dict]]:
    by_lead: dict[str, list[dict]] = {}
    for event in events(tc, token):
        if event["type"] == kind:
            by_lead.setdefault(event["lead_id"], []).append(event)
    return by_lead


def tasks(tc: TestClient, token: str, query: str = "") -> list[dict]:
    response = tc.get(f"/v1/tasks{query}", headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


def test_leads_are_routed_and_followed_up(tc: TestClient, keys: Keys) -> None:
    put(tc, keys.admin, "teams", {"teams": [
        {"id": "uk", "name": "UK", "strategy": "round-robin",
         "members": [{"owner": "ann"}, {"owner": "bob"}, {"owner": "cy"}]},
        {"id": "us", "name": "US", "strategy": "least-loaded", "overflow_queue": "us-waiting",
         "members": [{"owner": "dan", "capacity": 1}, {"owner": "eve", "capacity": 2}]},
    ]})
    put(tc, keys.admin, "territories", {"territories": [
        {"id": "dach", "name": "DACH", "countries": ["de", "AT"], "target_kind": "owner",
         "target": "dora"},
    ]})
    put(tc, keys.admin, "sla", {"default_minutes": 120, "by_priority": {"p1": 15}})
    saved = put(tc, keys.admin, "rules", {"fallback_queue": "inbox", "rules": [
        {"id": "vip", "name": "VIP accounts", "condition": 'lead.company == "VIP Corp"',
         "target_kind": "owner", "target": "vera", "priority": "p1"},
        {"id": "uk", "name": "UK", "condition": 'lead.country == "GB"', "target_kind": "team",
         "target": "uk"},
        {"id": "us", "name": "US", "condition": 'lead.country == "US"', "target_kind": "team",
         "target": "us"},
    ]})
    assert [r["id"] for r in saved["rules"]] == ["vip", "uk", "us"] and saved["enabled"]

    vip = create(tc, keys.sales, 0, company="VIP Corp", country="GB")  # matches vip and uk
    uk = [create(tc, keys.sales, n, country="GB") for n in range(1, 5)]
    us = [create(tc, keys.sales, n, country="US") for n in range(5, 9)]
    dach = create(tc, keys.sales, 9, country="DE")
    nowhere = create(tc, keys.sales, 10, country="JP")
    kept = create(tc, keys.sales, 11, country="GB", owner="owner-by-hand")
    everyone = [vip, *uk, *us, dach, nowhere]

    opened = until(lambda: (found := of_type(tc, keys.admin, "LeadTaskOpened"))
                   and set(found) >= set(everyone) and found, "every follow-up to open")
    assigned = of_type(tc, keys.admin, "LeadAssigned")
    decided = {lead: evs[-1]["data"] for lead, evs in assigned.items()}

    assert decided[vip]["owner"] == "vera"
    assert (decided[vip]["rule_id"], decided[vip]["rule_name"]) == ("vip", "VIP accounts")
    # Round-robin: four leads over three members, one each and then the first again (the
    # reactor works on leads concurrently, so which lead got whom is not fixed).
    assert Counter(decided[lead]["owner"] for lead in uk) == {"ann": 2, "bob": 1, "cy": 1}
    assert all(decided[lead]["team"] == "uk" and decided[lead]["rule_name"] == "UK"
               for lead in uk)
    # Least-loaded with capacity: dan holds 1, eve 2, the fourth lead waits for the team.
    assert Counter((decided[lead]["owner"], decided[lead]["queue"]) for lead in us) == {
        ("dan", None): 1, ("eve", None): 2, (None, "us-waiting"): 1}
    assert (decided[dach]["owner"], decided[dach]["rule_id"]) == ("dora", "territory:dach")
    assert (decided[nowhere]["queue"], decided[nowhere]["rule_id"]) == ("inbox", None)
    assert kept not in assigned and kept not in opened  # a person's owner is left alone

    for lead in everyone:
        [task] = [e for e in opened[lead]]
        created = tc.get(f"/v1/leads/{lead}/history?limit=1",
                         headers=auth(keys.admin)).json()["data"]
        minutes = 15 if lead == vip else 120
        assert when(task["data"]["due_at"]) - when(created[0]["recorded_at"]) == timedelta(
            minutes=minutes)
        assert task["data"]["assignee"] == decided[lead]["owner"]
        assert task["metadata"]["causation_id"] == created[0]["event_id"]

    lead_view = until(lambda: (v := tc.get(f"/v1/leads/{dach}", headers=auth(keys.admin))
                               .json())["open_tasks"] and v, "the lead read model")
    assert (lead_view["owner"], lead_view["assigned_by"]) == ("dora", "territory:dach")

    # /v1/tasks: lists by assignee, completes and reassigns through the lead's commands.
    anns = until(lambda: len(t := tasks(tc, keys.sales, "?assignee=ann")) == 2 and t,
                 "ann's tasks")
    assert all(t["status"] == "open" and not t["overdue"] and t["kind"] == "follow-up"
               for t in anns)
    first, second = anns
    done = tc.post(f"/v1/tasks/{first['id']}/complete", json={"outcome": "called"},
                   headers=auth(keys.sales))
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "done" and done.json()["outcome"] == "called"
    assert tc.post(f"/v1/tasks/{first['id']}/complete", json={},
                   headers=auth(keys.sales)).status_code == 200  # again: nothing changes
    moved = tc.post(f"/v1/tasks/{second['id']}/reassign", json={"assignee": "zoe",
                    "reason": "ann is on leave"}, headers=auth(keys.sales))
    assert moved.status_code == 200 and moved.json()["assignee"] == "zoe"
    until(lambda: [t["id"] for t in tasks(tc, keys.sales, "?assignee=zoe")] == [second["id"]],
          "the reassignment to show")
    until(lambda: tasks(tc, keys.sales, f"?lead={first['lead_id']}")[0]["status"] == "done",
          "the completion to show")
    assert tc.post(f"/v1/tasks/{first['id']}/reassign", json={"assignee": "x"},
                   headers=auth(keys.sales)).status_code == 409
    assert tc.post(f"/v1/tasks/{second['id']}/complete", json={},
                   headers=auth(keys.analyst)).status_code == 403
    assert tc.get(f"/v1/tasks/{second['id']}", headers=auth(keys.other)).status_code == 404
    history = tc.get(f"/v1/leads/{second['lead_id']}/history",
                     headers=auth(keys.admin)).json()["data"]
    [reassigned] = [e for e in history if e["type"] == "LeadTaskReassigned"]
    assert reassigned["reason"] == "ann is on leave" and reassigned["source"] == "api"

    # Paging: every open task once, in due order.
    page, seen = tasks(tc, keys.sales, "?status=open&limit=3"), []
    response = tc.get("/v1/tasks?status=open&limit=3", headers=auth(keys.sales)).json()
    seen += [t["id"] for t in response["data"]]
    while response["next_cursor"]:
        response = tc.get(f"/v1/tasks?status=open&limit=3&cursor={response['next_cursor']}",
                          headers=auth(keys.sales)).json()
        seen += [t["id"] for t in response["data"]]
    assert len(seen) == len(set(seen)) == len(everyone) - 1 and page


def test_routing_config_is_checked_and_guarded(tc: TestClient, keys: Keys) -> None:
    bad = tc.put("/v1/routing/rules", json={"rules": [
        {"id": "a", "name": "A", "condition": 'lead.country == "DE" &&', "target_kind": "owner",
         "target": "x"},
        {"id": "b", "name": "B", "condition": "lead.colour == 1", "target_kind": "owner",
         "target": "x"},
    ]}, headers=auth(keys.admin))
    assert bad.status_code == 422
    problems = bad.json()["problems"]
    assert [p["rule_index"] for p in problems] == [0, 1] and problems[0]["column"] is not None
    no_team = tc.put("/v1/routing/rules", json={"rules": [
        {"id": "a", "name": "A", "condition": "true", "target_kind": "team", "target": "ghost"},
    ]}, headers=auth(keys.admin))
    assert no_team.status_code == 422 and no_team.json()["errors"][0]["field"] == (
        "rules[0].target")
    assert tc.put("/v1/routing/sla", json={"default_minutes": 5},
                  headers=auth(keys.sales)).status_code == 403
    assert tc.get("/v1/routing/rules", headers=auth(keys.sales)).json()["enabled"] is False
    put(tc, keys.admin, "teams", {"teams": [{"id": "t", "name": "T",
                                             "members": [{"owner": "a"}]}]})
    put(tc, keys.admin, "rules", {"rules": [{"id": "r", "name": "R", "condition": "true",
                                             "target_kind": "team", "target": "t"}]})
    in_use = tc.put("/v1/routing/teams", json={"teams": []}, headers=auth(keys.admin))
    assert in_use.status_code == 422 and "rule 'R'" in in_use.json()["detail"]


def test_overdue_tasks_are_escalated_then_rerouted(tc: TestClient, keys: Keys) -> None:
    put(tc, keys.admin, "teams", {"teams": [{
        "id": "t", "name": "T", "escalation_owner": "lara",
        "members": [{"owner": "ann"}, {"owner": "bob"}]}]})
    put(tc, keys.admin, "rules", {"rules": [{"id": "all", "name": "All", "condition": "true",
                                             "target_kind": "team", "target": "t"}]})
    put(tc, keys.admin, "sla", {"default_minutes": 0, "escalation_minutes": 30})
    first = create(tc, keys.sales, 1)
    task = until(lambda: (t := tasks(tc, keys.sales, f"?lead={first}")) and t[0]["escalated"]
                 and t[0], "the overdue task to be escalated")
    assert task["assignee"] == "lara" and task["status"] == "open"
    # Due 30 minutes after its first due time (the lead's creation: 0 minutes' SLA).
    late = when(task["due_at"]) - when(task["opened_at"]) - timedelta(minutes=30)
    assert timedelta(seconds=-10) < late <= timedelta(0)
    [moved] = of_type(tc, keys.admin, "LeadTaskReassigned")[first]
    assert moved["data"]["previous"] == "ann" and moved["data"]["escalated"] is True
    assert moved["metadata"]["actor"]["key_id"] == "processor:route"

    put(tc, keys.admin, "sla", {"default_minutes": 0, "overdue_action": "reroute"})
    second = create(tc, keys.sales, 2)  # round-robin: bob, then re-routed to ann
    task = until(lambda: (t := tasks(tc, keys.sales, f"?lead={second}")) and t[0]["escalated"]
                 and t[0], "the overdue task to be re-routed")
    assert task["assignee"] == "ann"
    lead = until(lambda: (v := tc.get(f"/v1/leads/{second}", headers=auth(keys.admin)).json())
                 ["owner"] == "ann" and v, "the lead to move")
    assert (lead["team"], lead["assigned_by"]) == ("t", "overdue")
    time.sleep(1.0)  # more sweeps: an escalated task is not escalated again
    assert len(of_type(tc, keys.admin, "LeadTaskReassigned")[second]) == 1


def test_crossing_into_a_band_with_an_sla_opens_a_follow_up(tc: TestClient, keys: Keys) -> None:
    model = {"model_id": "inbound", "rules": [
        {"name": "demo", "expression": "activity.demo_request.count > 0", "points": 40}],
        "bands": [{"name": "hot", "min_score": 40}, {"name": "cold", "min_score": 0}]}
    saved = tc.post("/v1/scoring/models", json=model, headers=auth(keys.admin))
    assert saved.status_code == 201, saved.text
    assert tc.post("/v1/scoring/models/inbound/versions/1/activate",
                   headers=auth(keys.admin)).status_code in (200, 202)
    put(tc, keys.admin, "sla", {"default_minutes": 600, "by_band": {"hot": 30}})
    put(tc, keys.admin, "rules", {"rules": [{"id": "all", "name": "All", "condition": "true",
                                             "target_kind": "owner", "target": "ann"}]})
    lead = create(tc, keys.sales, 1)
    until(lambda: len(tasks(tc, keys.sales, f"?lead={lead}")) == 1, "the first follow-up")
    demo = tc.post(f"/v1/leads/{lead}/activities", json={"kind": "demo_request"},
                   headers=auth(keys.sales))
    assert demo.status_code == 201, demo.text
    band = until(lambda: [t for t in tasks(tc, keys.sales, f"?lead={lead}")
                          if t["kind"] == "score-band"], "the band follow-up")[0]
    scored = next(e for e in of_type(tc, keys.admin, "LeadScored")[lead]
              if e["data"]["band"] == "hot")
    assert band["assignee"] == "ann" and "cold -> hot" in band["reason"]
    assert when(band["due_at"]) - when(scored["recorded_at"]) == timedelta(minutes=30)
    # The first score (band cold, no SLA of its own) opened nothing: one follow-up, one band task.
    assert Counter(t["kind"] for t in tasks(tc, keys.sales, f"?lead={lead}")) == {
        "follow-up": 1, "score-band": 1}
