"""The HTTP API over a real socket (uvicorn), under concurrency: idempotent races, optimistic
concurrency with If-Match, isolation and revocation as a client on the network sees them."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx
import pytest

from tests.http_support import *
from tests.http_support import Keys, auth, lead_body, make_app, without_enrichment


@pytest.fixture
def api_app(infra: Any, http_settings: Any) -> Any:
    """Without built-in enrichment: If-Match races here must be between these writers only."""
    return make_app(infra, http_settings, reactors=without_enrichment())

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def client(url: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    return httpx.AsyncClient(base_url=url, timeout=30, limits=limits)


async def test_two_identical_idempotent_requests_at_once_create_one_lead(
    server: str, keys: Keys
) -> None:
    async with client(server) as http:
        for round_ in range(5):
            headers = auth(keys.sales, **{"idempotency-key": f"signup-{round_}"})
            body = lead_body(100 + round_)
            first, second = await asyncio.gather(
                http.post("/v1/leads", json=body, headers=headers),
                http.post("/v1/leads", json=body, headers=headers),
            )
            statuses = sorted([first.status_code, second.status_code])
            assert statuses in ([201, 201], [201, 409]), (first.text, second.text)
            if statuses == [201, 201]:
                assert first.json() == second.json()
            else:
                conflict = first if first.status_code == 409 else second
                assert conflict.json()["type"] == "/problems/idempotency-in-flight"
                assert conflict.headers["retry-after"] == "1"
            retry = await http.post("/v1/leads", json=body, headers=headers)
            assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        created: collections.Counter[str] = collections.Counter()
        for _ in range(100):  # gap-safe reads trail transactions still running: poll
            feed = (await http.get("/v1/events", params={"limit": 1000},
                                   headers=auth(keys.sales))).json()["data"]
            created = collections.Counter(
                e["data"]["fields"]["external_id"] for e in feed if e["type"] == "LeadCreated"
            )
            if sum(created.values()) >= 5:
                break
            await asyncio.sleep(0.05)
        assert created == {f"crm-{100 + r}": 1 for r in range(5)}


async def test_fifty_concurrent_patches_with_if_match_lose_no_update(
    server: str, keys: Keys
) -> None:
    async with client(server) as http:
        made = await http.post("/v1/leads", json=lead_body(200), headers=auth(keys.sales))
        lead = made.json()
        url = f"/v1/leads/{lead['id']}"

        # 50 writers that all read the same version: exactly one may win.
        same = await asyncio.gather(*(
            http.patch(url, json={"title": f"same-{i}"},
                       headers=auth(keys.sales, **{"if-match": f'"{lead["version"]}"'}))
            for i in range(50)
        ))
        codes = collections.Counter(r.status_code for r in same)
        assert codes == {200: 1, 412: 49}, codes

        # 50 read-modify-write clients: each reads the lead's version from the ledger (its
        # history), then writes with If-Match. Every write is applied or refused, none lost.
        async def writer(i: int) -> httpx.Response:
            history = (await http.get(f"{url}/history", params={"limit": 1000},
                                      headers=auth(keys.sales))).json()["data"]
            version = history[-1]["version"]
            return await http.patch(url, json={"title": f"rmw-{i}"},
                                    headers=auth(keys.sales, **{"if-match": f'"{version}"'}))

        results = await asyncio.gather(*(writer(i) for i in range(50)))
        assert {r.status_code for r in results} <= {200, 412}
        applied = {r.json()["title"] for r in results if r.status_code == 200}
        versions = [r.json()["version"] for r in results if r.status_code == 200]
        assert applied and len(versions) == len(set(versions))
        history = (await http.get(f"{url}/history", params={"limit": 1000},
                                  headers=auth(keys.sales))).json()["data"]
        written = [c["after"] for e in history for c in e["changes"]
                   if c["field"] == "title" and str(c["after"]).startswith("rmw-")]
        assert sorted(written) == sorted(applied)  # every 200 is in the ledger, no 412 is
        final = history[-1]
        assert max(versions) == final["version"]


async def test_concurrent_patches_without_if_match_all_apply(server: str, keys: Keys) -> None:
    async with client(server) as http:
        made = await http.post("/v1/leads", json=lead_body(300), headers=auth(keys.sales))
        url = f"/v1/leads/{made.json()['id']}"
        results = await asyncio.gather(*(
            http.put(f"{url}/tags/t{i}", headers=auth(keys.sales)) for i in range(20)
        ))
        assert all(r.status_code == 200 for r in results), [r.text for r in results]
        history = (await http.get(f"{url}/history", params={"limit": 1000},
                                  headers=auth(keys.sales))).json()["data"]
        tags = set(history[-1]["changes"][0]["after"])
        assert {f"t{i}" for i in range(20)} <= tags


async def test_isolation_and_revocation_over_the_network(server: str, keys: Keys) -> None:
    async with client(server) as http:
        made = await http.post("/v1/leads", json=lead_body(400),
                               headers=auth(keys.sales, **{"x-request-id": "net-1"}))
        assert made.status_code == 201 and made.headers["x-request-id"] == "net-1"
        token = made.headers["x-consistency-token"]
        url = f"/v1/leads/{made.json()['id']}"
        mine = await http.get(url, headers=auth(keys.sales, **{"x-consistency-token": token}))
        assert mine.status_code == 200
        theirs = await http.get(url, headers=auth(keys.other, **{"x-consistency-token": token}))
        assert theirs.status_code == 404
        assert (await http.patch(url, json={"city": "x"},
                                 headers=auth(keys.other))).status_code == 404
        revoke = await http.post(f"/v1/keys/{keys.ids['sales']}/revoke", headers=auth(keys.admin))
        assert revoke.status_code == 200
        after = await http.get(url, headers=auth(keys.sales))
        assert after.status_code == 401
        assert after.headers["content-type"].startswith("application/problem+json")
