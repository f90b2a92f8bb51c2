"""The lead projection and its runner against real PostgreSQL and NATS: the read model equals a
fresh fold of the ledger, duplicates apply nothing twice, and whatever NATS loses or no longer
keeps is read from the ledger."""

from __future__ import annotations

import asyncio

import msgspec
import nats
import pytest

from ledger.checkpoints import read_checkpoint
from ledger.store import NewEvent
from projections.checkpoints import wait_for
from projections.feed import delivered_of
from projections.leads import LeadsProjection, get_lead, row_from_state
from projections.runner import apply_batch
from schema.events import LeadCreated, LeadErased, LeadFields, LeadFieldsChanged, LeadTagged
from schema.positions import LogPosition
from tests.pipeline_support import (
    META,
    eventually,
    fresh_fold,
    holds_lease,
    make_feed,
    make_relay,
    make_runner,
    reached,
    read_ledger,
    read_model,
    readable,
    relay_done,
    running,
    stream_content,
    write_leads,
)


async def test_live_projection_equals_a_fresh_fold_of_the_ledger(infra, store, pool):
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await write_leads(store, 300, writers=3)
        await eventually(lambda: reached(pool, store, "lead"), 30, "the projection to catch up")
    assert await read_model(pool) == await fresh_fold(store)


async def test_read_your_writes_through_relay_and_nats(infra, store, pool):
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await write_leads(store, 5)
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection to start")
        created = LeadCreated(lead_id="RYW", fields=LeadFields(company="Initech"), stage="mql")
        result = await store.append("ws-a", "RYW", 0, [NewEvent(created)], META)
        assert await wait_for(pool, "lead", result.last, timeout=20)
        async with pool.connection() as conn:
            row = await get_lead(conn, "ws-a", "RYW")
            assert row is not None and row.company == "Initech" and row.stage == "mql"
            assert await get_lead(conn, "ws-b", "RYW") is None  # never across workspaces
    assert not await wait_for(pool, "lead", LogPosition(10**12, 0), timeout=0.05)


async def test_the_same_events_applied_twice_change_nothing(infra, store, pool):
    await write_leads(store, 40)
    events = await read_ledger(store)
    projection = LeadsProjection(store)
    async with pool.connection() as conn:
        head = await apply_batch(conn, projection, events, LogPosition())
        once = await read_model(pool)
        assert await apply_batch(conn, projection, events, LogPosition()) == head
        # Below the checkpoint too: per-lead versions alone make the apply idempotent.
        async with conn.transaction():
            await projection.apply(conn, events[len(events) // 2:])
            await projection.apply(conn, events)
    assert await read_model(pool) == once == await fresh_fold(store)


async def test_a_message_delivered_twice_is_applied_once(infra, store, pool):
    runner = make_runner(infra, store, pool)
    async with running(runner):
        await eventually(lambda: _listening(runner), 10, "the feed")
        written = await write_leads(store, 20)
        async with running(make_relay(infra, store, pool)):
            await eventually(lambda: relay_done(pool, store), 20, "the relay")
        # Redeliver: the same envelopes again, under fresh message ids so NATS keeps them.
        await _republish(infra, count=written // 2)
        await write_leads(store, 5, seed=9)  # proves the runner moved past them
        async with running(make_relay(infra, store, pool)):
            await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
    assert runner.duplicates >= written // 2 and runner.gaps == 0
    assert await read_model(pool) == await fresh_fold(store)


async def test_a_message_deleted_from_nats_is_read_from_the_ledger(infra, store, pool):
    runner = make_runner(infra, store, pool)
    stop = asyncio.Event()
    assert await runner.lease.acquire(stop)
    try:
        await write_leads(store, 30)
        async with running(make_relay(infra, store, pool)):
            await eventually(lambda: relay_done(pool, store), 20, "the relay")
        content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
        delivered = [delivered_of(m.data) for m in content.messages]
        total = len(delivered)
        del delivered[-1]  # NATS lost the very last one
        del delivered[total // 2]  # and one mid-stream
        await runner.handle(delivered, stop)
        assert runner.gaps == 1
        # Only the next message (or the idle look at the ledger) reveals a lost last one.
        await readable(store)
        await runner.catch_up(stop)
    finally:
        await runner.lease.release()
    ledger = await read_ledger(store)
    assert runner.cursor == ledger[-1].log_position
    assert await read_model(pool) == await fresh_fold(store)


async def test_catch_up_from_the_ledger_when_the_stream_lost_old_messages(infra, store, pool):
    await write_leads(store, 50)
    async with running(make_relay(infra, store, pool)):
        await eventually(lambda: relay_done(pool, store), 20, "the relay")
    nc = await nats.connect(infra.nats_url)
    await nc.jetstream().purge_stream(infra.stream)  # retention dropped everything so far
    await nc.close()
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await write_leads(store, 50, seed=11)
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
    assert await read_model(pool) == await fresh_fold(store)


async def test_a_lead_whose_later_event_arrives_first_reads_its_tail(infra, store, pool):
    """A lead's version 3 reaching the projection before versions 1-2 (they commit in another
    order, or were lost) fetches the missing predecessors instead of skipping them."""
    created = LeadCreated(lead_id="G", fields=LeadFields(first_name="Grace"), stage="lead")
    await store.append("ws-a", "G", 0, [NewEvent(created), NewEvent(LeadTagged(tag="a"))], META)
    await store.append("ws-a", "G", 2, [NewEvent(LeadFieldsChanged(
        changes=LeadFields(company="Navy")))], META)
    events = await read_ledger(store)
    async with pool.connection() as conn, conn.transaction():
        await LeadsProjection(store).apply(conn, events[2:])
        await LeadsProjection(store).apply(conn, events[:2])
    row = (await read_model(pool))[("ws-a", "G")]
    assert (row.version, row.first_name, row.tags, row.company) == (3, "Grace", ["a"], "Navy")


async def test_a_second_runner_stands_by(infra, store, pool):
    first, second = make_runner(infra, store, pool), make_runner(infra, store, pool)
    async with running(first, second, make_relay(infra, store, pool)):
        await write_leads(store, 30)
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
        assert [await holds_lease(first), await holds_lease(second)].count(True) == 1
    assert await read_model(pool) == await fresh_fold(store)
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, "lead") == (await read_ledger(store))[-1].log_position


async def test_erased_leads_leave_the_read_model(infra, store, pool):
    created = LeadCreated(lead_id="E", fields=LeadFields(email="e@example.com"), stage="lead")
    await store.append("ws-a", "E", 0, [NewEvent(created)], META)
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
        assert ("ws-a", "E") in await read_model(pool)
        await store.append("ws-a", "E", 1, [NewEvent(LeadErased())], META)
        await eventually(lambda: reached(pool, store, "lead"), 20, "the erasure")
    assert ("ws-a", "E") not in await read_model(pool)


async def _listening(runner) -> bool:
    return runner.feed.live and await holds_lease(runner)


async def _republish(infra, count: int) -> None:
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    nc = await nats.connect(infra.nats_url)
    js = nc.jetstream()
    for msg in content.messages[:count]:
        await js.publish(msg.subject, msg.data)  # no Nats-Msg-Id: stored again
    info = await js.stream_info(infra.stream)
    assert info.state.messages == len(content.messages) + count
    await nc.close()


async def test_bulk_mode_spilling_to_the_table_folds_the_same_model(infra, store, pool):
    """A rebuild holds leads in memory; past its limit it writes them out and reloads them
    from the table when their later events come. Both paths give the same rows."""
    await write_leads(store, 120, leads_per_append=3)
    projection = LeadsProjection(store, bulk=25)  # spills every few batches
    events = await read_ledger(store)
    async with pool.connection() as conn:
        for start in range(0, len(events), 40):
            async with conn.transaction():
                await projection.apply(conn, events[start : start + 40])
        assert projection._written  # it did spill
        async with conn.transaction():
            await projection.flush(conn)
    assert await read_model(pool) == await fresh_fold(store)


def test_row_values_follow_the_column_order():
    from datetime import UTC, datetime

    from ledger.lead import INITIAL, evolve
    from projections.lead_rows import COLUMNS, row_values, state_from_row

    state = evolve(INITIAL, LeadCreated(
        lead_id="R", fields=LeadFields(email="r@example.com", industry="saas"), stage="sql",
        owner="o", tags=("a", "b"),
    ))
    now = datetime.now(UTC)
    row = row_from_state("ws", state, now, now)
    values = row_values("ws", state, now, now)
    assert dict(zip(COLUMNS, values, strict=True)) == msgspec.structs.asdict(row)
    assert (row.email, row.industry, row.stage, row.tags) == ("r@example.com", "saas", "sql",
                                                             ["a", "b"])
    assert state_from_row(row) == state


async def test_run_workers_runs_the_relay_and_every_projection(infra, store):
    from api.runtime import open_runtime
    from api.settings import Settings
    from api.workers import PROJECTIONS, run_workers

    settings = Settings(stream=infra.stream, subject_prefix=infra.subject_prefix)
    runtime = await open_runtime(
        settings, infra.database_url, infra.nats_url, infra.master_key, migrate_first=False
    )
    stop = asyncio.Event()
    # No reactors: built-in enrichment would keep appending while the projections are compared
    # with a fold of the ledger (reactors have their own tests: test_reactor*.py).
    workers = asyncio.create_task(run_workers(runtime, stop, reactors=()))
    try:
        await write_leads(store, 30)
        for name in ["relay", *PROJECTIONS]:
            await eventually(lambda name=name: reached(runtime.pool, store, name), 30, name)
    finally:
        stop.set()
        await asyncio.wait_for(workers, 30)
        await runtime.close()
    assert await read_model(store.pool) == await fresh_fold(store)


async def test_a_backlog_is_taken_in_whole_batches(infra, store, pool):
    """A runner that fell behind takes what the feed holds for it a batch at a time, not one
    event per wake-up: under load that is what lets it catch up."""
    feed = make_feed(infra)
    async with feed.listen() as inbox:
        assert feed.live
        await _create(store, 0, 100)  # 100 events
        async with running(make_relay(infra, store, pool)):
            await eventually(lambda: _holds(inbox, 100), 20, "the feed to deliver")
        sizes = [len(await inbox.take(40, timeout=1)) for _ in range(3)]
        assert sizes == [40, 40, 20]
        with pytest.raises(TimeoutError):
            await inbox.take(40, timeout=0.05)
    assert not feed.live  # the last listener gone, the feed stops


async def _holds(inbox, count: int) -> bool:
    return len(inbox) >= count


async def test_an_inbox_too_far_behind_is_emptied(store):
    """The feed never holds more than its limit for a runner: past it, the inbox is emptied, and
    the next event's `previous` link sends the runner to the ledger for what was dropped (the
    gap test above), so memory stays bounded and nothing is missed."""
    from projections.feed import Inbox

    await _create(store, 0, 7)
    events = await read_ledger(store)
    delivered = _published(events)
    inbox = Inbox(limit=3)
    for item in delivered:
        inbox.put(item)
    assert inbox.dropped == 6 and len(inbox) == 1
    (last,) = await inbox.take(10, timeout=1)
    assert last.recorded.log_position == events[-1].log_position
    assert last.previous == events[-2].log_position  # the link that reveals the gap


def _published(events) -> list:
    """The events as the relay publishes them: each linked to the one before."""
    from ledger.envelopes import to_cloudevent
    from schema.envelope import encode_envelope

    previous, delivered = LogPosition(), []
    for recorded in events:
        delivered.append(delivered_of(encode_envelope(to_cloudevent(recorded, previous))))
        previous = recorded.log_position
    return delivered


async def test_the_runners_of_a_process_share_one_consumer(infra, store, pool):
    """Every runner in a process takes the ledger from one feed: each event crosses NATS once
    per process, not once per runner."""
    from processors.reactor import ReactorRunner
    from projections.duplicates import DuplicatesProjection
    from projections.runner import ProjectionRunner
    from tests.test_reactor import Recorder

    feed = make_feed(infra)
    recorder = Recorder()
    runners = [
        make_runner(infra, store, pool, feed=feed),
        ProjectionRunner(DuplicatesProjection(), store, pool, feed),
        ReactorRunner(recorder, store, pool, feed),
    ]
    async with running(make_relay(infra, store, pool), *runners):
        for runner in runners:
            await eventually(lambda runner=runner: _listening(runner), 10, "the feed")
        await write_leads(store, 20)
        for name in ("lead", "duplicates", "reactor-recorder"):
            await eventually(lambda name=name: reached(pool, store, name), 20, name)
        nc = await nats.connect(infra.nats_url)
        try:
            info = await nc.jetstream().stream_info(infra.stream)
        finally:
            await nc.close()
        assert info.state.consumer_count == 1
    assert feed.subscriptions == 1 and sum(len(v) for v in recorder.seen.values()) > 0
    assert await read_model(pool) == await fresh_fold(store)


async def test_batches_a_projection_has_nothing_to_do_with_defer_its_checkpoint(
    infra, store, pool
):
    """A projection that handles a few event types (tasks) writes no checkpoint for batches of
    none of them (each would be a transaction of its own): the checkpoint waits for the next
    batch with work, a quiet moment, or DEFER_CHECKPOINT_S; nothing is skipped meanwhile."""
    from datetime import UTC, datetime

    import psycopg

    from ledger.checkpoints import read_checkpoint
    from projections.runner import DEFER_CHECKPOINT_S, ProjectionRunner
    from projections.tasks import TasksProjection, get_task
    from schema.events import LeadTaskOpened

    runner = ProjectionRunner(TasksProjection(), store, pool, make_feed(infra))
    runner.lease._conn = await psycopg.AsyncConnection.connect(infra.database_url,
                                                               autocommit=True)
    try:
        await _create(store, 0, 10)
        created = await store.read_all(runner.cursor, 1000)
        runner.cursor = await runner.apply(created)
        assert runner.cursor == created[-1].log_position
        async with pool.connection() as conn:
            assert await read_checkpoint(conn, "tasks") == LogPosition()  # deferred

        task = LeadTaskOpened(task_id="T1", kind="follow_up", assignee="ana@seller.example",
                              due_at=datetime.now(UTC), reason="assigned")
        await store.append("ws-a", created[0].stream_id, None, [NewEvent(task)], META)
        opened = await store.read_all(runner.cursor, 1000)
        runner.cursor = await runner.apply(opened)  # work: applied and written together
        async with pool.connection() as conn:
            assert await read_checkpoint(conn, "tasks") == opened[-1].log_position
            assert (await get_task(conn, "ws-a", "T1")) is not None

        await _create(store, 10, 3)
        more = await store.read_all(runner.cursor, 1000)
        runner.cursor = await runner.apply(more)
        await runner.idle()  # a quiet moment writes what was deferred
        async with pool.connection() as conn:
            assert await read_checkpoint(conn, "tasks") == more[-1].log_position

        await _create(store, 13, 2)
        first = await store.read_all(runner.cursor, 1000)
        runner.cursor = await runner.apply(first)
        await asyncio.sleep(DEFER_CHECKPOINT_S)
        await _create(store, 15, 2)
        late = await store.read_all(runner.cursor, 1000)
        runner.cursor = await runner.apply(late)  # deferred long enough: written now
        async with pool.connection() as conn:
            assert await read_checkpoint(conn, "tasks") == late[-1].log_position
    finally:
        await runner.lease.conn.close()


async def _create(store, first: int, n: int) -> None:
    for k in range(first, first + n):
        created = LeadCreated(lead_id=f"L{k:03d}", fields=LeadFields(), stage="lead")
        await store.append("ws-a", f"L{k:03d}", 0, [NewEvent(created)], META)


async def test_the_feed_deletes_the_durable_consumers_runners_had_before_it(infra):
    """An upgrade: each runner used to have a durable consumer. Nothing pulls from them now, so
    the feed removes them; a downstream consumer's durable is left alone."""
    from nats.js.api import ConsumerConfig

    from ledger.jetstream import ensure_stream
    from tests.pipeline_support import DUPLICATE_WINDOW_S, MAX_AGE_S

    nc = await nats.connect(infra.nats_url)
    try:
        js = nc.jetstream()
        await ensure_stream(js, infra.stream, infra.subject_prefix, max_age_s=MAX_AGE_S,
                            duplicate_window_s=DUPLICATE_WINDOW_S)
        for name in ("projection-lead", "projection-reactor-enrich-p0of2", "my-crm"):
            await js.add_consumer(infra.stream, ConsumerConfig(durable_name=name))
        async with make_feed(infra).listen():
            pass
        left = {c.name for c in await js.consumers_info(infra.stream)}
    finally:
        await nc.close()
    assert "my-crm" in left
    assert not left & {"projection-lead", "projection-reactor-enrich-p0of2"}


async def test_a_feed_that_fails_to_subscribe_tries_again(infra):
    """Whatever ends a subscription attempt (NATS, or a bug), the feed tries again with a
    backoff instead of leaving the process's runners on the ledger alone."""
    feed = make_feed(infra)
    subscribe = feed._subscribe
    failed: list[str] = []

    async def first_fails(nc):
        if not failed:
            failed.append("once")
            raise RuntimeError("unexpected")
        await subscribe(nc)

    feed._subscribe = first_fails
    async with feed.listen():
        await eventually(lambda: _is_live(feed), 10, "the feed to subscribe")
    assert failed == ["once"] and feed.subscriptions == 1


async def _is_live(feed) -> bool:
    return feed.live
