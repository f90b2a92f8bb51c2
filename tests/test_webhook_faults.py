"""Kill -9 of the webhooks reactor and of the webhook sender, at random moments, under a write load
(both run as `python -m api.workers` subprocesses; the relay runs in the test). The receiver
(a real HTTP server on loopback, failing now and then) verifies every signature and keeps the
first copy of each webhook-id: in the end it holds exactly one webhook per event of the
endpoint's workspace, and each lead's events arrived in ledger order. Duplicated requests (a
sender killed between the request and recording its result) are allowed: same webhook-id."""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from collections.abc import Iterator

import pytest
from pytest_httpserver import HTTPServer

from processors import webhook_deliveries
from processors.outbound import OutboundGuard
from processors.webhook_endpoints import EndpointSpec, WebhookEndpoints
from processors.webhook_events import webhook_id
from tests.pipeline_support import eventually, make_relay, read_ledger, running, write_leads
from tests.test_pipeline_faults import Worker, _leased
from tests.test_webhooks import Receiver

pytestmark = pytest.mark.slow

LEADS = 400  # about 1,600 events, half of them in the endpoint's workspace
FAST = {
    "LEADLEDGER_WEBHOOK_RETRY_SCALE": "0.0002",
    "LEADLEDGER_WEBHOOK_TIMEOUT_S": "2",  # a killed sender's claims fall due after 5 s
    "LEADLEDGER_WEBHOOK_POLL_S": "0.05",
    "LEADLEDGER_LOG_LEVEL": "error",
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    yield Receiver(server)
    server.clear()
    server.stop()


async def test_reactor_and_sender_killed_at_random_moments_under_load(
    infra, store, pool, keyring, tmp_path, receiver
):
    await OutboundGuard(pool).set_allowlist("ws-a", ["127.0.0.0/8"])
    endpoint, secret = await WebhookEndpoints(pool, keyring).create(
        "ws-a", EndpointSpec(url=receiver.url), "test")
    receiver.secrets.append(secret)
    flaky = random.Random(5)

    receiver.respond = lambda msg_id, seen: (500, {}) if flaky.random() < 0.1 else (204, {})
    receiver.delay_s = 0.05  # requests stay in flight long enough for kills to land mid-request
    workers = [Worker(infra, ["react", "webhooks"], tmp_path / "reactor.log"),
               Worker(infra, ["send-webhooks"], tmp_path / "sender.log")]
    for worker in workers:
        worker.env.update(FAST)
        worker.start()
    rng = random.Random()

    async def kill_one() -> None:
        # Long enough between kills for a restarted worker to get going (start-up takes about a
        # second), short enough to land in the middle of its work.
        await asyncio.sleep(rng.uniform(1.0, 2.5))
        victim = rng.choice(workers)
        victim.kill()  # SIGKILL: mid-batch, mid-request, mid-start-up
        victim.start()

    async with running(make_relay(infra, store, pool)):
        load = asyncio.create_task(write_leads(store, LEADS, writers=1, leads_per_append=2,
                                               pause_s=0.05, seed=31))
        while not load.done():
            await kill_one()
        await load
        ledger = [r for r in await read_ledger(store) if r.workspace == "ws-a"]
        expected = {webhook_id(endpoint.id, r.event_id): r for r in ledger}
        deadline = time.monotonic() + 120
        # The backlog drains after the load: keep killing while most of it is being sent.
        while len(receiver.deduped()) < 0.8 * len(expected) and time.monotonic() < deadline:
            await kill_one()

        async def all_received() -> bool:
            await asyncio.sleep(0.2)
            return set(receiver.deduped()) == set(expected)

        await eventually(all_received, 180, "every event to reach the receiver")
        await eventually(lambda: _leased(pool, "projection-reactor-webhooks"), 30,
                         "the reactor to finish starting")

        async def all_delivered() -> bool:
            # A sender killed after its request reached the receiver but before it wrote the
            # outcome leaves the delivery claimed: it falls due again when the claim expires
            # (5 s here) and is sent again (the receiver dedups it by webhook-id).
            async with pool.connection() as conn:
                rows = await webhook_deliveries.page(conn, "ws-a", endpoint.id, before_id=None,
                                                     status=None, limit=10_000)
            return {r.status for r in rows} == {"delivered"}

        await eventually(all_delivered, 60, "every delivery to be recorded as delivered")
        await asyncio.sleep(2)  # so has the sender (SIGTERM before its handler kills it)
    assert [w.stop() for w in workers] == [0, 0]  # SIGTERM stops both cleanly
    assert sum(w.kills for w in workers) >= 4 and len(expected) >= 700

    kept = receiver.deduped()
    assert set(kept) == set(expected)  # nothing lost, nothing foreign
    assert all(r.verified_with == [0] for r in receiver.requests)
    arrival: dict[str, list[int]] = defaultdict(list)
    for msg_id, first in kept.items():  # dicts keep insertion order: first acceptance order
        assert first.payload["data"]["event_id"] == expected[msg_id].event_id
        arrival[expected[msg_id].stream_id].append(expected[msg_id].version)
    assert all(versions == sorted(versions) for versions in arrival.values())
    async with pool.connection() as conn:
        rows = await webhook_deliveries.page(conn, "ws-a", endpoint.id, before_id=None,
                                             status=None, limit=10_000)
    assert len(rows) == len(expected)  # one delivery per event, however often a batch re-ran
    assert {r.status for r in rows} == {"delivered"}
    repeats = len(receiver.accepted()) - len(kept)
    print(f"{len(expected)} events, {len(receiver.requests)} requests, {repeats} repeated after"
          f" a kill, kills: {[w.kills for w in workers]}")
