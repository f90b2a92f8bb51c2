"""Webhooks end to end: the app with its workers (relay, projections, the webhooks reactor, the
sender) against real PostgreSQL and NATS, and receivers that are real HTTP servers on loopback
(pytest-httpserver) verifying every signature with the standardwebhooks package.

The retry schedule is scaled down (LEADLEDGER_WEBHOOK_RETRY_SCALE) so that five failures take
seconds, not hours; Retry-After is not scaled."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import pytest
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook, WebhookVerificationError
from werkzeug import Request, Response

from ledger.store import NewEvent
from processors import webhook_deliveries
from processors.outbound import OutboundGuard
from processors.webhook_endpoints import EndpointSpec, WebhookEndpoints
from processors.webhook_events import webhook_id
from processors.webhook_sender import SenderOptions, WebhookSender
from processors.webhooks import webhooks_reactor
from schema.events import LeadCreated, LeadErased, LeadFields, LeadNoteAdded
from tests.http_support import *
from tests.http_support import auth, lead_body
from tests.pipeline_support import META, eventually, make_relay, running
from tests.test_reactor import make_reactor_runner

RETRY_SCALE = "0.00005"  # 5 s, 5 min, 30 min, 2 h, 5 h → 0.25 ms ... 0.9 s


class Received(msgspec.Struct):
    webhook_id: str
    body: bytes
    headers: dict[str, str]
    at: float
    status: int
    verified_with: list[int]
    """Indexes into Receiver.secrets of the secrets whose signature verified."""

    @property
    def payload(self) -> dict[str, Any]:
        return msgspec.json.decode(self.body)


class Receiver:
    """A webhook receiver on loopback: verifies each request with every secret it knows,
    answers per `respond(webhook id, how many times it was seen before)`."""

    def __init__(self, server: HTTPServer, path: str = "/hook") -> None:
        self.url = server.url_for(path)
        self.secrets: list[str] = []
        self.requests: list[Received] = []
        self.respond: Callable[[str, int], tuple[int, dict[str, str]]] = lambda i, n: (204, {})
        self.delay_s = 0.0
        """How long each request takes to answer (outside the lock: concurrent requests)."""
        self._lock = threading.Lock()
        server.expect_request(path, method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        body = request.get_data()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for index, secret in enumerate(self.secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(index)
            except WebhookVerificationError:
                pass
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            msg_id = headers.get("webhook-id", "")
            seen = sum(1 for r in self.requests if r.webhook_id == msg_id)
            status, extra = self.respond(msg_id, seen)
            self.requests.append(Received(msg_id, body, headers, time.monotonic(), status,
                                          verified))
        return Response(status=status, headers=extra)

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def deduped(self) -> dict[str, Received]:
        """What a receiver that deduplicates by webhook-id keeps: the first accepted copy."""
        kept: dict[str, Received] = {}
        for r in self.accepted():
            kept.setdefault(r.webhook_id, r)
        return kept


@pytest.fixture(autouse=True)
def fast_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADLEDGER_WEBHOOK_RETRY_SCALE", RETRY_SCALE)
    monkeypatch.setenv("LEADLEDGER_WEBHOOK_TIMEOUT_S", "3")
    monkeypatch.setenv("LEADLEDGER_WEBHOOK_POLL_S", "0.05")


@pytest.fixture
def receiver_server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def receiver(receiver_server: HTTPServer) -> Receiver:
    return Receiver(receiver_server)


def allow_loopback(tc, token: str) -> None:
    answer = tc.put("/v1/outbound/allowlist", json={"networks": ["127.0.0.0/8", "::1"]},
                    headers=auth(token))
    assert answer.status_code == 200, answer.text


def create_endpoint(tc, token: str, receiver: Receiver, **body: Any) -> dict[str, Any]:
    answer = tc.post("/v1/webhooks", json={"url": receiver.url, **body}, headers=auth(token))
    assert answer.status_code == 201, answer.text
    endpoint = answer.json()
    assert endpoint["secret"].startswith("whsec_")
    receiver.secrets.append(endpoint["secret"])
    return endpoint


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def ledger_events(tc, token: str) -> list[dict[str, Any]]:
    answer = tc.get("/v1/events", params={"limit": 1000}, headers=auth(token))
    assert answer.status_code == 200
    return answer.json()["data"]


def new_lead(tc, token: str, n: int, **overrides: Any) -> str:
    answer = tc.post("/v1/leads", json=lead_body(n, **overrides), headers=auth(token))
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def deliveries(tc, token: str, endpoint_id: str, **params: Any) -> list[dict[str, Any]]:
    answer = tc.get(f"/v1/webhooks/{endpoint_id}/deliveries", params={"limit": 1000, **params},
                    headers=auth(token))
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_a_receiver_failing_five_times_gets_every_event_once_in_order_per_lead(
    tc, keys, receiver
):
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver)
    receiver.respond = lambda msg_id, seen: (500, {}) if seen < 5 else (204, {})
    leads = [new_lead(tc, keys.admin, n) for n in range(3)]
    assert tc.patch(f"/v1/leads/{leads[0]}", json={"stage": "mql"},
                    headers=auth(keys.admin)).status_code == 200
    assert tc.put(f"/v1/leads/{leads[1]}/tags/vip", headers=auth(keys.admin)).status_code in (
        200, 204)

    def expected() -> set[str]:
        return {webhook_id(endpoint["id"], e["id"]) for e in ledger_events(tc, keys.admin)}

    wait_for(lambda: len(expected()) >= 5 and set(receiver.deduped()) == expected(), 120,
             "every event to be accepted")
    time.sleep(0.5)  # nothing more arrives
    accepted = receiver.accepted()
    assert len(accepted) == len(receiver.deduped()) == len(expected())  # exactly once
    assert all(r.verified_with == [0] for r in receiver.requests)  # every request is signed
    assert {sum(1 for r in receiver.requests if r.webhook_id == i) for i in expected()} == {6}
    by_lead: dict[str, list[int]] = defaultdict(list)
    for r in accepted:
        by_lead[r.payload["data"]["lead_id"]].append(r.payload["data"]["version"])
    assert set(by_lead) == set(leads)
    assert all(versions == sorted(versions) for versions in by_lead.values())
    first = next(r for r in accepted if r.payload["type"] == "lead.created")
    data = first.payload["data"]
    assert data["workspace"] == "acme" and data["event"]["fields"]["email"].startswith("ada")
    assert first.headers["content-type"] == "application/json"
    assert abs(int(first.headers["webhook-timestamp"]) - time.time()) < 300

    log = deliveries(tc, keys.admin, endpoint["id"])
    assert {d["status"] for d in log} == {"delivered"}
    one = log[0]
    assert [a["status_code"] for a in one["attempt_log"]] == [500] * 5 + [204]
    assert [a["outcome"] for a in one["attempt_log"]] == ["retry"] * 5 + ["delivered"]
    assert all(a["latency_ms"] is not None and a["latency_ms"] >= 0 for a in one["attempt_log"])
    assert one["attempt_log"][0]["error"].startswith("HTTP 500")


def test_410_disables_the_endpoint_and_redelivery_after_enabling_keeps_the_ids(
    tc, keys, receiver
):
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver, event_types=["lead.created"])
    receiver.respond = lambda msg_id, seen: (410, {})
    new_lead(tc, keys.admin, 1)
    wait_for(lambda: not tc.get(f"/v1/webhooks/{endpoint['id']}",
                                headers=auth(keys.admin)).json()["enabled"], 60,
             "the endpoint to be disabled")
    shown = tc.get(f"/v1/webhooks/{endpoint['id']}", headers=auth(keys.admin)).json()
    assert "410" in shown["disabled_reason"] and "secret" not in shown
    [gone] = deliveries(tc, keys.admin, endpoint["id"])
    assert gone["status"] == "failed" and gone["attempt_log"][0]["outcome"] == "disabled"
    new_lead(tc, keys.admin, 2)  # not queued while disabled
    time.sleep(1.5)
    assert len(deliveries(tc, keys.admin, endpoint["id"])) == 1

    receiver.respond = lambda msg_id, seen: (204, {})
    assert tc.post(f"/v1/webhooks/{endpoint['id']}/enable",
                   headers=auth(keys.admin)).json()["enabled"] is True
    answer = tc.post(f"/v1/webhooks/{endpoint['id']}/redeliver", json={},
                     headers=auth(keys.admin))
    assert answer.status_code == 202 and answer.json() == {"redelivered": 1}
    wait_for(lambda: receiver.deduped(), 30, "the redelivery")
    assert [r.webhook_id for r in receiver.requests] == [gone["webhook_id"]] * 2


def test_429_with_retry_after_is_waited_for(tc, keys, receiver):
    allow_loopback(tc, keys.admin)
    create_endpoint(tc, keys.admin, receiver, event_types=["lead.created"])
    receiver.respond = lambda msg_id, seen: (429, {"Retry-After": "2"}) if seen == 0 \
        else (204, {})
    new_lead(tc, keys.admin, 1)
    wait_for(lambda: receiver.deduped(), 30, "the delivery after the 429")
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id
    assert 2.0 <= second.at - first.at < 6.0  # the schedule alone would retry within ms


def test_rotation_signs_with_both_secrets_until_the_old_one_expires(tc, keys, receiver):
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver, event_types=["lead.created"])
    new_lead(tc, keys.admin, 1)
    wait_for(lambda: len(receiver.deduped()) == 1, 30, "the first delivery")

    rotated = tc.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret", headers=auth(keys.admin))
    assert rotated.status_code == 200, rotated.text
    receiver.secrets.append(rotated.json()["secret"])
    assert rotated.json()["previous_secret_expires_at"] is not None
    new_lead(tc, keys.admin, 2)
    wait_for(lambda: len(receiver.deduped()) == 2, 30, "the delivery during the overlap")

    final = tc.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret",
                    json={"previous_valid_for_s": 0}, headers=auth(keys.admin)).json()
    receiver.secrets.append(final["secret"])
    new_lead(tc, keys.admin, 3)
    wait_for(lambda: len(receiver.deduped()) == 3, 30, "the delivery after the overlap")
    first, during, after = (r for r in receiver.requests)
    assert first.verified_with == [0]
    assert during.verified_with == [0, 1]  # old and new secret both verify
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert after.verified_with == [2]
    assert all(s not in tc.get(f"/v1/webhooks/{endpoint['id']}",
                               headers=auth(keys.admin)).text for s in receiver.secrets)


def test_cel_filters_select_events_and_bad_ones_are_refused_with_their_position(
    tc, keys, receiver
):
    allow_loopback(tc, keys.admin)
    bad = tc.post("/v1/webhooks", json={"url": receiver.url,
                                        "filter": 'data.event.stage == "mql" &&& true'},
                  headers=auth(keys.admin))
    assert bad.status_code == 422
    [error] = bad.json()["errors"]
    assert error["field"] == "filter" and "line 1, column 29" in error["message"]
    unknown = tc.post("/v1/webhooks", json={"url": receiver.url, "filter": "lead.stage == 1"},
                      headers=auth(keys.admin))
    assert unknown.status_code == 422 and "unknown variable" in unknown.text
    create_endpoint(tc, keys.admin, receiver,
                    filter='type == "lead.stage_changed" && data.event.stage == "mql"')
    first, second = new_lead(tc, keys.admin, 1), new_lead(tc, keys.admin, 2)
    for lead, stage in ((first, "mql"), (second, "sql")):
        assert tc.patch(f"/v1/leads/{lead}", json={"stage": stage},
                        headers=auth(keys.admin)).status_code == 200
    wait_for(lambda: receiver.deduped(), 30, "the filtered delivery")
    time.sleep(1.5)
    [only] = receiver.requests
    assert only.payload["type"] == "lead.stage_changed"
    assert only.payload["data"]["lead_id"] == first


def test_private_destinations_need_the_allow_list(tc, keys, receiver):
    refused = tc.post("/v1/webhooks", json={"url": receiver.url}, headers=auth(keys.admin))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "url" and "allow" in refused.text
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver, event_types=["lead.created"])
    assert tc.put("/v1/outbound/allowlist", json={"networks": []},
                  headers=auth(keys.admin)).status_code == 200
    time.sleep(5.5)  # the sender's cached allow-list expires
    new_lead(tc, keys.admin, 1)

    def blocked() -> bool:
        log = deliveries(tc, keys.admin, endpoint["id"])
        return bool(log and log[0]["attempt_log"])

    wait_for(blocked, 30, "the blocked attempt")
    [delivery] = deliveries(tc, keys.admin, endpoint["id"])
    assert delivery["status"] == "pending"  # retried later: the allow-list may come back
    assert delivery["attempt_log"][0]["error"].startswith("blocked destination")
    assert delivery["attempt_log"][0]["status_code"] is None
    assert receiver.requests == []


def test_redelivering_one_delivery_keeps_its_webhook_id(tc, keys, receiver):
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver, event_types=["lead.created"])
    new_lead(tc, keys.admin, 1)
    wait_for(lambda: receiver.deduped(), 30, "the delivery")
    [delivery] = deliveries(tc, keys.admin, endpoint["id"])
    wait_for(lambda: deliveries(tc, keys.admin, endpoint["id"])[0]["status"] == "delivered",
             10, "the delivery to be recorded")
    again = tc.post(f"/v1/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/redeliver",
                    headers=auth(keys.admin))
    assert again.status_code == 202 and again.json()["status"] == "pending"
    wait_for(lambda: len(receiver.requests) == 2, 30, "the redelivery")
    first, second = receiver.requests
    assert first.webhook_id == second.webhook_id == delivery["webhook_id"]
    assert first.body == second.body and second.verified_with == [0]
    assert first.headers["webhook-signature"] != second.headers["webhook-signature"] or \
        first.headers["webhook-timestamp"] == second.headers["webhook-timestamp"]
    wait_for(lambda: len(deliveries(tc, keys.admin, endpoint["id"])[0]["attempt_log"]) == 2,
             10, "the second attempt in the log")
    missing = tc.post(f"/v1/webhooks/{endpoint['id']}/deliveries/999999/redeliver",
                      headers=auth(keys.admin))
    assert missing.status_code == 404


def test_roles_pages_and_the_event_type_catalogue(tc, keys, receiver):
    allow_loopback(tc, keys.admin)
    assert tc.post("/v1/webhooks", json={"url": receiver.url},
                   headers=auth(keys.sales)).status_code == 403
    ids = [create_endpoint(tc, keys.admin, receiver)["id"] for _ in range(3)]
    page = tc.get("/v1/webhooks", params={"limit": 2}, headers=auth(keys.sales)).json()
    rest = tc.get("/v1/webhooks", params={"cursor": page["next_cursor"]},
                  headers=auth(keys.sales)).json()
    assert sorted(e["id"] for e in page["data"] + rest["data"]) == sorted(ids)
    assert rest["next_cursor"] is None
    assert all("secret" not in e for e in page["data"] + rest["data"])
    assert tc.get(f"/v1/webhooks/{ids[0]}", headers=auth(keys.other)).status_code == 404
    changed = tc.patch(f"/v1/webhooks/{ids[0]}", json={"event_types": ["lead.scored"],
                                                      "description": "scores"},
                       headers=auth(keys.limited))  # an ops key
    assert changed.status_code == 200 and changed.json()["event_types"] == ["lead.scored"]
    bad_type = tc.patch(f"/v1/webhooks/{ids[0]}", json={"event_types": ["lead.nope"]},
                        headers=auth(keys.admin))
    assert bad_type.status_code == 422
    once = [tc.post("/v1/webhooks", json={"url": receiver.url},
                    headers=auth(keys.admin, **{"Idempotency-Key": "hook-1"})) for _ in range(2)]
    assert [r.status_code for r in once] == [201, 201]
    assert once[0].json()["id"] == once[1].json()["id"]
    assert once[0].json()["secret"].startswith("whsec_") and "secret" not in once[1].json()
    assert once[1].headers["idempotent-replayed"] == "true"
    assert tc.delete(f"/v1/webhooks/{ids[1]}", headers=auth(keys.admin)).status_code == 204
    assert tc.get(f"/v1/webhooks/{ids[1]}", headers=auth(keys.admin)).status_code == 404
    catalogue = tc.get("/v1/webhooks/event-types", headers=auth(keys.analyst)).json()
    created = next(t for t in catalogue if t["type"] == "lead.created")
    assert created["ledger_type"] == "LeadCreated"
    assert created["example"]["data"]["event_type"] == "LeadCreated"
    assert len(catalogue) >= 25


async def test_an_erased_leads_pending_deliveries_carry_no_personal_data(
    infra, store, pool, keyring, receiver
):
    """At the processor level: the lead is erased while its deliveries wait for a receiver that
    is down; what finally arrives has its personal fields null."""
    await OutboundGuard(pool).set_allowlist("ws-a", ["127.0.0.0/8"])
    endpoint, secret = await WebhookEndpoints(pool, keyring).create(
        "ws-a", EndpointSpec(url=receiver.url), "test")
    receiver.secrets.append(secret)
    receiver.respond = lambda msg_id, seen: (503, {})
    created = LeadCreated(lead_id="L1", stage="lead",
                          fields=LeadFields(email="ada@x.example", company="Acme"))
    await store.append("ws-a", "L1", 0, [NewEvent(created),
                                         NewEvent(LeadNoteAdded(note_id="n", text="secret"))],
                       META)
    sender = WebhookSender(store, pool, keyring, SenderOptions(retry_scale=0.00005, poll_s=0.05))
    reactor = make_reactor_runner(infra, store, pool, webhooks_reactor(pool, keyring))
    async with running(make_relay(infra, store, pool), reactor, sender):
        try:
            await eventually(lambda: _has_requests(receiver, 1), 30, "a first (failed) attempt")
        except AssertionError:
            async with pool.connection() as conn:
                cur = await conn.execute("SELECT * FROM webhook_deliveries")
                rows = await cur.fetchall()
                cur = await conn.execute("SELECT * FROM webhook_attempts")
                attempts = await cur.fetchall()
                cur = await conn.execute("SELECT reactor, error FROM dead_letters")
                raise AssertionError(f"deliveries {rows}, attempts {attempts}, "
                                     f"dead letters {await cur.fetchall()}") from None
        assert receiver.requests[0].payload["data"]["event"]["fields"]["email"] == \
            "ada@x.example"
        await store.destroy_key("ws-a", "L1")
        await store.append("ws-a", "L1", 2, [NewEvent(LeadErased())], META)
        receiver.respond = lambda msg_id, seen: (204, {})
        await eventually(lambda: _has_accepted(receiver, 3), 30, "every event delivered")
    kept = receiver.deduped()
    by_version = {r.payload["data"]["version"]: r.payload["data"] for r in kept.values()}
    assert by_version[1]["redacted"] is True
    assert by_version[1]["event"]["fields"] == {"email": None, "company": "Acme"}
    assert by_version[2]["event"]["text"] is None
    assert by_version[3]["event_type"] == "LeadErased"
    assert all("ada@x.example" not in r.body.decode() for r in receiver.accepted())
    async with pool.connection() as conn:
        log = await webhook_deliveries.page(conn, "ws-a", endpoint.id, before_id=None,
                                            status=None, limit=10)
    assert sorted(d.lead_version for d in log) == [1, 2, 3]
    assert {d.status for d in log} == {"delivered"}


async def _has_requests(receiver: Receiver, n: int) -> bool:
    await asyncio.sleep(0)
    return len(receiver.requests) >= n


async def _has_accepted(receiver: Receiver, n: int) -> bool:
    await asyncio.sleep(0)
    return len(receiver.deduped()) >= n



def test_bad_requests_answer_problems_never_500(tc, keys, receiver):
    allow_loopback(tc, keys.admin)
    endpoint = create_endpoint(tc, keys.admin, receiver)
    base = f"/v1/webhooks/{endpoint['id']}"
    admin = auth(keys.admin)
    cases = [
        ("post", "/v1/webhooks", {}, 422),
        ("post", "/v1/webhooks", {"url": "http://127.0.0.1/\u0000"}, 422),
        ("post", f"{base}/rotate-secret", {"secret": "whsec_short"}, 422),
        ("post", f"{base}/rotate-secret", {"previous_valid_for_s": -1}, 422),
        ("post", f"{base}/redeliver", {"after": "not-a-position"}, 422),
        ("post", f"{base}/redeliver", {"after": f"{2**70}-1"}, 422),
        ("post", f"{base}/deliveries/{2**70}/redeliver", None, 404),
        ("post", f"{base}/deliveries/0/redeliver", None, 404),
        ("get", f"{base}/deliveries?cursor=garbage", None, 400),
        ("get", "/v1/webhooks/no%00such", None, 422),
        ("get", "/v1/webhooks/00000000-0000-0000-0000-000000000000", None, 404),
        ("patch", base, {"filter": "data.x ==="}, 422),
        ("post", "/v1/webhooks/00000000-0000-0000-0000-000000000000/enable", None, 404),
    ]
    for method, path, body, status in cases:
        kwargs = {"json": body} if body is not None else {}
        answer = getattr(tc, method)(path, headers=admin, **kwargs)
        assert answer.status_code == status, (method, path, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    cleared = tc.patch(base, json={"filter": None, "description": "all"}, headers=admin)
    assert cleared.status_code == 200 and cleared.json()["filter"] is None
