"""The duplicate review queue projection: suspicions open, and close on dismiss, merge, erase."""

from __future__ import annotations

import pytest

from ledger.crypto import parse_master_key
from ledger.identity import IdentityHasher
from ledger.lead_commands import FLAG, LeadCommands
from projections.duplicates import DuplicatesProjection, get_pair, list_queue
from projections.runner import apply_batch
from schema.commands import CreateLead, DismissDuplicate, EraseLead
from schema.events import LeadFields
from schema.metadata import Actor, EventMetadata
from schema.positions import ORIGIN

META = EventMetadata(actor=Actor(key_id="k", role="admin"), source="api")


@pytest.fixture
def commands(store, infra):
    return LeadCommands(store, IdentityHasher(parse_master_key(infra.master_key)))


async def project(store, pool, projection, after):
    events = await store.read_all(after, limit=10_000)
    async with pool.connection() as conn:
        return await apply_batch(conn, projection, events, after) if events else after


async def create(commands, lead_id, **fields):
    cmd = CreateLead(lead_id=lead_id, fields=LeadFields(**fields), stage="lead")
    return await commands.execute("ws", lead_id, cmd, META, on_duplicate=FLAG)


async def test_queue_opens_and_closes(commands, store, pool):
    projection = DuplicatesProjection()
    await create(commands, "A", email="ada@acme.com")
    await create(commands, "B", email="ada@acme.com")
    await create(commands, "C", email="ada@acme.com")
    at = await project(store, pool, projection, ORIGIN)
    async with pool.connection() as conn:
        queue = await list_queue(conn, "ws", None, 10)
        assert [(d.lead_id, d.other_id, d.exact, d.matched) for d in queue] == [
            ("B", "A", True, ["email"]), ("C", "A", True, ["email"])]
        page = await list_queue(conn, "ws", (queue[0].suspected_at, "B", "A"), 10)
        assert [d.lead_id for d in page] == ["C"]

    await commands.execute("ws", "B", DismissDuplicate(other_id="A"), META)
    await commands.merge("ws", "A", "C", META)
    at = await project(store, pool, projection, at)
    async with pool.connection() as conn:
        assert await list_queue(conn, "ws", None, 10) == []

    await create(commands, "D", email="ada@acme.com")   # identity now A's (C merged into A)
    at = await project(store, pool, projection, at)
    async with pool.connection() as conn:
        assert (await get_pair(conn, "ws", "D", "A")) is not None
    await commands.execute("ws", "A", EraseLead(), META)
    await project(store, pool, projection, at)
    async with pool.connection() as conn:
        assert await list_queue(conn, "ws", None, 10) == []
