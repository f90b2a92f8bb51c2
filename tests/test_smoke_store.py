from schema.events import LeadCreated, LeadFields
from schema.metadata import SYSTEM_ACTOR, EventMetadata
from ledger.store import NewEvent

META = EventMetadata(actor=SYSTEM_ACTOR, source="cli")


async def test_append_and_read(store):
    ev = LeadCreated(lead_id="l1", fields=LeadFields(email="a@b.com"), stage="lead")
    res = await store.append("ws", "l1", 0, [NewEvent(ev)], META)
    assert res.version == 1
    stream = await store.read_stream("ws", "l1")
    assert stream.events[0].event.fields.email == "a@b.com"
    all_ = await store.read_all(type(res.last)(0, 0))
    assert len(all_) == 1
