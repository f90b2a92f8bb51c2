"""The outbox relay against real PostgreSQL and NATS: order, envelopes and links, dedup on
republish, and a standby taking over when the active relay's connection dies."""

from __future__ import annotations

import asyncio
import socket
import time

from ledger.checkpoints import RELAY, read_checkpoint, set_checkpoint
from ledger.envelopes import from_cloudevent
from ledger.store import NewEvent
from schema.envelope import event_subject
from schema.events import LeadTagged
from schema.positions import LogPosition
from tests.pipeline_support import (
    META,
    eventually,
    holds_lease,
    last_written,
    make_relay,
    read_ledger,
    readable,
    relay_done,
    running,
    stream_content,
    write_leads,
)


async def test_relay_publishes_every_event_once_in_ledger_order(infra, store, pool):
    written = await write_leads(store, 60)
    async with running(make_relay(infra, store, pool, batch_size=50)):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to publish")
    ledger = await read_ledger(store)
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)

    assert len(ledger) == written == len(content.envelopes)
    previous = LogPosition()
    for recorded, msg, envelope in zip(ledger, content.messages, content.envelopes, strict=True):
        assert (msg.headers or {}).get("Nats-Msg-Id") == recorded.event_id == envelope.id
        assert msg.subject == event_subject(
            infra.subject_prefix, recorded.workspace, recorded.stream_id,
            recorded.event.event_type,
        )
        assert envelope.position == recorded.log_position.token()
        assert envelope.previous == previous.token()
        assert from_cloudevent(envelope) == recorded  # decrypted data, metadata, time, version
        previous = recorded.log_position


async def test_new_appends_wake_the_relay(infra, store, pool):
    relay = make_relay(infra, store, pool, poll_s=30.0)  # only a NOTIFY can wake it in time
    async with running(relay):
        await eventually(lambda: holds_lease(relay), 10, "the lease")
        await asyncio.sleep(1)  # it has read the (empty) ledger and sleeps now
        written = await write_leads(store, 5)
        # A NOTIFY can come before the horizon passes its events (a transaction elsewhere on
        # the cluster holds it back); the relay then reads them at the next one.
        await readable(store)
        target = await last_written(pool)
        await store.append("ws-a", "wake", 0, [NewEvent(LeadTagged(tag="x"))], META)

        async def published() -> bool:
            async with pool.connection() as conn:
                return await read_checkpoint(conn, RELAY) >= target

        await eventually(published, 5, "the relay to publish")
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    assert len(content.envelopes) >= written


async def test_republishing_from_an_older_checkpoint_is_deduplicated(infra, store, pool):
    written = await write_leads(store, 30)
    async with running(make_relay(infra, store, pool)):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to publish")
    # As if the relay had crashed after publishing, before checkpointing.
    async with pool.connection() as conn:
        await set_checkpoint(conn, RELAY, LogPosition())
    async with running(make_relay(infra, store, pool)):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to republish")
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    assert len(content.envelopes) == written
    assert len({e.id for e in content.envelopes}) == written


async def test_a_standby_takes_over_when_the_active_relay_connection_dies(infra, store, pool):
    # The first relay looks again only after a minute: once its session is killed it is as
    # good as dead, and the standby must carry on alone.
    first = make_relay(infra, store, pool, lease_poll_s=60.0)
    standby = make_relay(infra, store, pool, lease_poll_s=0.1)
    async with running(first):
        await eventually(lambda: holds_lease(first), 10, "the first relay's lease")
        async with running(standby):
            written = await write_leads(store, 20)
            await eventually(lambda: relay_done(pool, store), 20, "the first relay to publish")
            assert not await holds_lease(standby)

            async with pool.connection() as conn:
                await conn.execute(
                    "SELECT pg_terminate_backend(%s)", (first.lease.conn.info.backend_pid,)
                )
            await eventually(lambda: holds_lease(standby), 10, "the standby to take over")
            written += await write_leads(store, 20, seed=8)
            await eventually(lambda: relay_done(pool, store), 20, "the standby to publish")
            assert not await holds_lease(first)

    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    assert len(content.envelopes) == written == len({e.id for e in content.envelopes})
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, RELAY) == (await read_ledger(store))[-1].log_position


async def test_without_nats_the_relay_keeps_its_place_and_still_stops_promptly(
    infra, store, pool
):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"nats://127.0.0.1:{probe.getsockname()[1]}"
    relay = make_relay(infra, store, pool, nats_url=nowhere)
    async with running(relay) as stop:
        await write_leads(store, 5)  # writes never touch NATS
        await asyncio.sleep(1.5)
        async with pool.connection() as conn:
            assert await read_checkpoint(conn, RELAY) == LogPosition()
        started = time.monotonic()
        stop.set()
    assert time.monotonic() - started < 5


async def test_the_checkpoint_is_written_at_quiet_moments_not_after_every_batch(
    infra, store, pool
):
    """A backlog published batch after batch writes its checkpoint a few times, not once a
    batch (each write was a transaction every published event waited for); once the ledger is
    quiet the stored checkpoint is the last event published."""
    written = await write_leads(store, 60)
    relay = make_relay(infra, store, pool, batch_size=10)
    saves: list[LogPosition] = []
    save = relay._save

    async def counted(checkpoint: LogPosition) -> LogPosition:
        saves.append(checkpoint)
        return await save(checkpoint)

    relay._save = counted
    async with running(relay):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to publish")
    batches = -(-written // 10)
    assert 1 <= len(saves) < batches / 2
    assert saves[-1] == (await read_ledger(store))[-1].log_position


async def test_a_batch_whose_acknowledgement_fails_is_sent_again_with_those_after_it(
    infra, store, pool
):
    """Batches go out without waiting for the previous one's PubAcks. When one of them is not
    acknowledged in time, it and every batch sent after it go out again, in order: the stream
    holds each event once, in ledger order (JetStream drops the ids it already has)."""
    written = await write_leads(store, 40)
    relay = make_relay(infra, store, pool, batch_size=10)
    acknowledged = relay._acknowledged
    failed: list[int] = []

    async def flaky(futures):
        if not failed:
            failed.append(len(futures))
            raise TimeoutError("no PubAck in time")
        return await acknowledged(futures)

    relay._acknowledged = flaky
    async with running(relay):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to publish")
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    ledger = await read_ledger(store)
    assert failed == [10]
    assert [e.id for e in content.envelopes] == [r.event_id for r in ledger]
    assert len(ledger) == written


async def test_a_publish_lost_while_later_ones_went_out_leaves_the_stream_in_order(
    infra, store, pool
):
    """A message lost in flight (a connection dropped mid-batch) while the next ones reach
    JetStream: each message names its predecessor as the stream's expected last id, so
    JetStream refuses the later ones instead of storing them ahead of it, and the relay sends
    the batch again. The stream holds every event once, in ledger order."""
    written = await write_leads(store, 40)
    relay = make_relay(infra, store, pool, batch_size=10)
    send = relay._send
    calls: list[int] = []

    async def lossy(js, messages):
        calls.append(len(messages))
        if len(calls) != 2:
            return await send(js, messages)
        lost = asyncio.get_running_loop().create_future()
        lost.set_exception(TimeoutError("never acknowledged"))
        return [lost, *await send(js, messages[1:])]  # the first never reached the server

    relay._send = lossy
    async with running(relay):
        await eventually(lambda: relay_done(pool, store), 20, "the relay to publish")
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    ledger = await read_ledger(store)
    assert [e.id for e in content.envelopes] == [r.event_id for r in ledger]
    assert len(ledger) == written and len(calls) > 2
