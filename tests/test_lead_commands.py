"""The one command path's plans against real PostgreSQL: several commands in one write, with the
id of the event each command decides (what enrichment relies on to record several providers'
findings at once and still append nothing twice)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ledger.crypto import parse_master_key
from ledger.identity import IdentityHasher
from ledger.lead_commands import LeadCommands, Planned
from ledger.store import NewEvent
from schema.commands import CreateLead, RecordEnrichment, RecordScore
from schema.events import EnrichmentValue, LeadEnriched, LeadFields, LeadTagged
from schema.metadata import Actor, EventMetadata

META = EventMetadata(actor=Actor(key_id="k", role="admin"), source="processor")
NOW = datetime(2026, 1, 5, tzinfo=UTC)


@pytest.fixture
def commands(store, infra):
    return LeadCommands(store, IdentityHasher(parse_master_key(infra.master_key)))


def found(provider: str, **values: str) -> RecordEnrichment:
    return RecordEnrichment(provider=provider, values={
        k: EnrichmentValue(value=v, provider=provider, fetched_at=NOW) for k, v in values.items()
    })


async def test_each_command_keeps_its_own_event_id_and_a_repeat_appends_nothing(commands, store):
    await commands.execute("ws", "L1", CreateLead(lead_id="L1", fields=LeadFields(),
                                                  stage="lead"), META)
    await commands.execute("ws", "L1", found("phone", line_type="mobile"), META)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    plan = [found("email", free_mail="true"), found("phone", line_type="mobile"),
            found("firmographics", industry="software")]  # the middle one changes nothing

    first = await commands.execute_plan("ws", "L1", lambda _s: plan, META, command_ids=ids)
    again = await commands.execute_plan("ws", "L1", lambda _s: plan, META, command_ids=ids)

    stream = await store.read_stream("ws", "L1")
    enriched = [r for r in stream.events[2:] if isinstance(r.event, LeadEnriched)]
    assert [(r.event.provider, r.event_id) for r in enriched] == [
        ("email", ids[0]), ("firmographics", ids[2])]
    assert len(first.events) == 2 and again.events == []
    assert stream.version == 4  # created, phone, then one write of two events
    assert enriched[0].version == enriched[1].version - 1 and enriched[0].metadata == META


async def test_a_stream_the_caller_read_is_used_and_a_stale_one_only_costs_a_retry(
    commands, store
):
    from schema.commands import TagLead

    await commands.execute("ws", "L2", CreateLead(lead_id="L2", fields=LeadFields(),
                                                  stage="lead"), META)
    read = await store.read_stream("ws", "L2")
    first = await commands.execute("ws", "L2", TagLead(tag="fresh"), META, known=read)
    assert first.state.version == 2
    # `read` is now one version behind: the append conflicts, the retry reads the lead again.
    second = await commands.execute("ws", "L2", TagLead(tag="stale"), META, known=read)
    assert second.state.version == 3 and second.state.tags == ("fresh", "stale")
    assert [r.version for r in (await store.read_stream("ws", "L2")).events] == [1, 2, 3]


def score(value: float, digest: str) -> RecordScore:
    return RecordScore(model_id="m", model_version=1, score=value, band="warm", digest=digest)


async def test_commands_for_several_leads_land_in_one_write_and_the_rest_are_told_apart(
    commands, store, pool
):
    for lead in ("A", "B", "C"):
        await commands.execute("ws", lead, CreateLead(
            lead_id=lead, fields=LeadFields(email=f"{lead.lower()}@example.com"),
            stage="lead"), META)
    known = {lead: await store.read_stream("ws", lead) for lead in ("A", "B", "C")}
    await store.append("ws", "B", known["B"].version, [NewEvent(LeadTagged(tag="moved-on"))],
                       META)  # B moves on after it was read
    repeat_id = str(uuid.uuid4())
    first = await commands.execute("ws", "C", score(10, "c1"), META, event_ids=[repeat_id])
    planned = [
        Planned("A", score(42, "a1"), META, str(uuid.uuid4()), known["A"]),
        Planned("B", score(7, "b1"), META, str(uuid.uuid4()), known["B"]),
        Planned("C", score(10, "c1"), META, repeat_id, known["C"]),  # read before its score
    ]
    async with pool.connection() as conn, conn.transaction():
        results = await commands.execute_each("ws", planned, conn=conn)
        await conn.execute("SELECT 1")  # the transaction is still usable

    landed, moved, repeated = results
    assert landed is not None and landed.state.score == 42
    assert landed.state.version == known["A"].version + 1
    assert moved is None and repeated is None  # for `execute`, which settles each
    a = await store.read_stream("ws", "A")
    assert a.version == known["A"].version + 1 and a.events[-1].event.score == 42
    assert a.events[-1].log_position == landed.position
    assert (await store.read_stream("ws", "B")).version == known["B"].version + 1  # its tag
    assert (await store.read_stream("ws", "C")).version == first.state.version
    c_ids = [r.event_id for r in (await store.read_stream("ws", "C")).events]
    assert c_ids.count(repeat_id) == 1  # the repeat wrote nothing
