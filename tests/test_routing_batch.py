"""The routing reactor over one batch, against a real PostgreSQL: it reads each lead once, acts
on the events that can change something, and passes over the rest without a look at the lead
(processors/routing.py, RoutingBatch)."""

from __future__ import annotations

from collections import Counter

import pytest

from ledger.crypto import parse_master_key
from ledger.identity import IdentityHasher
from ledger.lead_commands import LeadCommands
from ledger.store import EventStore, NewEvent
from processors.routing import routing_reactor
from processors.routing_store import RoutingStore
from schema.events import (
    LeadAssigned,
    LeadCreated,
    LeadEnriched,
    LeadFields,
    LeadOwnerAssigned,
    LeadScored,
)
from schema.metadata import Actor, EventMetadata
from schema.routing import OWNER, QUEUE, RoutingRule, SlaSettings

META = EventMetadata(actor=Actor(key_id="k", role="admin"), source="api")


class CountingStore(EventStore):
    """The real store, counting the reads of lead streams."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store.pool, store.keyring, store.registry)
        self.reads: Counter[str] = Counter()

    async def read_stream(self, *args, **kwargs):
        self.reads["one"] += 1
        return await super().read_stream(*args, **kwargs)

    async def read_streams(self, *args, **kwargs):
        self.reads["batch"] += 1
        return await super().read_streams(*args, **kwargs)


@pytest.fixture
def counting(store) -> CountingStore:
    return CountingStore(store)


@pytest.fixture
def reactor(counting, pool, infra):
    commands = LeadCommands(counting, IdentityHasher(parse_master_key(infra.master_key)))
    return routing_reactor(counting, commands, pool)


async def _route_everyone_to(pool, kind: str, target: str, by_band: dict[str, int]) -> None:
    routing = RoutingStore(pool)
    await routing.save_rules("ws", [RoutingRule(id="all", name="All", condition="true",
                                                target_kind=kind, target=target)], None, "test")
    await routing.save_sla("ws", SlaSettings(by_band=by_band), "test")


async def _batch(store: EventStore, lead: str) -> list:
    created = LeadCreated(lead_id=lead, fields=LeadFields(company="Initech"), stage="lead")
    enriched = LeadEnriched(provider="phone", fills=LeadFields(country="DE"))
    scored = LeadScored(model_id="m", model_version=1, score=10, band="cold")
    await store.append("ws", lead, 0, [NewEvent(created), NewEvent(enriched),
                                       NewEvent(scored)], META)
    return (await store.read_stream("ws", lead)).events


async def _run(reactor, events) -> None:
    prepared = await reactor.prepare(events)
    for recorded in events:
        await reactor.react(recorded, prepared)


async def test_a_lead_routed_to_an_owner_is_read_once_per_batch(reactor, counting, pool):
    await _route_everyone_to(pool, OWNER, "ada@seller.example", by_band={"hot": 30})
    events = await _batch(counting, "L1")
    counting.reads.clear()
    await _run(reactor, events)
    # the create routes (one batch read); enrichment of an owned lead and a score whose band
    # has no SLA need no look at the lead
    assert counting.reads == {"batch": 1}
    after = (await counting.read_stream("ws", "L1")).events
    assigned = [r.event for r in after if isinstance(r.event, LeadAssigned)]
    assert [a.owner for a in assigned] == ["ada@seller.example"]


async def test_a_lead_left_in_a_queue_is_routed_again_on_enrichment(reactor, counting, pool):
    await _route_everyone_to(pool, QUEUE, "inbound", by_band={})
    events = await _batch(counting, "L2")
    counting.reads.clear()
    await _run(reactor, events)
    assert counting.reads == {"batch": 1, "one": 1}  # the enrichment looks at the lead again


async def test_a_score_in_a_band_with_an_sla_looks_at_the_lead(reactor, counting, pool):
    await _route_everyone_to(pool, OWNER, "ada@seller.example", by_band={"cold": 60})
    events = await _batch(counting, "L3")
    counting.reads.clear()
    await _run(reactor, events)
    assert counting.reads == {"batch": 1, "one": 1}


async def test_an_owner_removed_in_the_batch_lets_enrichment_route_again(reactor, counting, pool):
    await _route_everyone_to(pool, OWNER, "ada@seller.example", by_band={})
    created = LeadCreated(lead_id="L4", fields=LeadFields(company="Initech"), stage="lead")
    await counting.append("ws", "L4", 0, [NewEvent(created)], META)
    first = (await counting.read_stream("ws", "L4")).events
    await _run(reactor, first)  # routed to ada
    await counting.append("ws", "L4", None, [
        NewEvent(LeadOwnerAssigned(owner=None)),
        NewEvent(LeadEnriched(provider="phone", fills=LeadFields(country="DE"))),
    ], META)
    stream = (await counting.read_stream("ws", "L4")).events
    later = [r for r in stream if r.version > first[-1].version]
    # the batch also carries the assignment routing made, as the feed would deliver it
    batch = [r for r in stream if isinstance(r.event, LeadAssigned)] + later
    await _run(reactor, [r for r in batch if reactor.wants(r)])
    assigned = [r.event.owner for r in (await counting.read_stream("ws", "L4")).events
                if isinstance(r.event, LeadAssigned)]
    assert assigned == ["ada@seller.example", "ada@seller.example"]
