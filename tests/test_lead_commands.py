"""The one command path's plans against real PostgreSQL: several commands in one write, with the
id of the event each command decides (what enrichment relies on to record several providers'
findings at once and still append nothing twice)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from ledger.crypto import parse_master_key
from ledger.identity import IdentityHasher
from ledger.lead_commands import LeadCommands
from schema.commands import CreateLead, RecordEnrichment
from schema.events import EnrichmentValue, LeadEnriched, LeadFields
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
