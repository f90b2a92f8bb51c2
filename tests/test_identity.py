"""Deduplication by exact identity keys in the one command path, against real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from ledger.crypto import parse_master_key
from ledger.errors import DuplicateLead
from ledger.identity import IdentityHasher
from ledger.lead_commands import FLAG, LeadCommands
from schema.commands import ChangeLeadFields, CreateLead, EraseLead
from schema.events import LeadFields
from schema.metadata import Actor, EventMetadata

META = EventMetadata(actor=Actor(key_id="k", role="admin"), source="api")


@pytest.fixture
def commands(store, infra):
    return LeadCommands(store, IdentityHasher(parse_master_key(infra.master_key)))


def create(lead_id: str, **fields: str) -> CreateLead:
    return CreateLead(lead_id=lead_id, fields=LeadFields(**fields), stage="lead")


async def test_same_person_created_concurrently_becomes_one_lead(commands):
    async def attempt(i: int):
        try:
            return await commands.execute("ws", f"L{i}", create(f"L{i}", email=f"Ada.Love+{i}@gmail.com"), META)
        except DuplicateLead as dup:
            return dup

    outcomes = await asyncio.gather(*(attempt(i) for i in range(10)))
    created = [o for o in outcomes if not isinstance(o, DuplicateLead)]
    refused = [o for o in outcomes if isinstance(o, DuplicateLead)]
    assert len(created) == 1 and len(refused) == 9
    assert {d.existing_id for d in refused} == {created[0].lead_id}
    assert all(d.matched == ("email",) for d in refused)


async def test_the_index_holds_no_plaintext(commands, pool):
    await commands.execute("ws", "L1", create("L1", email="secret.person@example.com",
                                              phone="+14155552671"), META)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT string_agg(t::text, '|') FROM identity_keys t")
        (text,) = await cur.fetchone()
    assert "secret" not in text and "4155552671" not in text and "example" not in text


async def test_flag_policy_creates_and_records_the_suspected_duplicate(commands):
    await commands.execute("ws", "L1", create("L1", phone="+14155552671"), META)
    result = await commands.execute(
        "ws", "L2", create("L2", phone="+14155552671"), META, on_duplicate=FLAG
    )
    assert result.state.suspected_duplicates == ("L1",)


async def test_changing_to_a_claimed_email_is_refused_and_changes_nothing(commands):
    await commands.execute("ws", "L1", create("L1", email="a@acme.com"), META)
    await commands.execute("ws", "L2", create("L2", email="b@acme.com"), META)
    with pytest.raises(DuplicateLead) as err:
        await commands.execute("ws", "L2", ChangeLeadFields(changes=LeadFields(email="A@acme.com")), META)
    assert err.value.existing_id == "L1"
    assert (await commands.load("ws", "L2")).fields.email == "b@acme.com"
    # L2's old email is still its own: a third lead cannot take it.
    with pytest.raises(DuplicateLead):
        await commands.execute("ws", "L3", create("L3", email="b@acme.com"), META)


async def test_a_changed_email_frees_the_old_one(commands):
    await commands.execute("ws", "L1", create("L1", email="old@acme.com"), META)
    await commands.execute("ws", "L1", ChangeLeadFields(changes=LeadFields(email="new@acme.com")), META)
    await commands.execute("ws", "L2", create("L2", email="old@acme.com"), META)
    with pytest.raises(DuplicateLead):
        await commands.execute("ws", "L3", create("L3", email="new@acme.com"), META)


async def test_erasure_releases_identity_keys(commands):
    await commands.execute("ws", "L1", create("L1", email="gone@acme.com"), META)
    await commands.execute("ws", "L1", EraseLead(), META)
    await commands.execute("ws", "L2", create("L2", email="gone@acme.com"), META)


async def test_merge_moves_identity_and_ends_the_absorbed_stream(commands):
    await commands.execute("ws", "S", create("S", company="Acme"), META)
    await commands.execute("ws", "A", create("A", email="ada@acme.com", title="CTO"), META)
    survivor, absorbed = await commands.merge("ws", "S", "A", META)
    assert survivor.state.fields.email == "ada@acme.com" and survivor.state.merged_from == ("A",)
    assert absorbed.state.status == "merged" and absorbed.state.merged_into == "S"
    with pytest.raises(DuplicateLead) as err:
        await commands.execute("ws", "N", create("N", email="ada@acme.com"), META)
    assert err.value.existing_id == "S"


async def test_identity_is_per_workspace(commands):
    await commands.execute("ws1", "L1", create("L1", email="same@acme.com"), META)
    await commands.execute("ws2", "L1", create("L1", email="same@acme.com"), META)
