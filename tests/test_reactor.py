"""Reactors against real PostgreSQL and NATS: every wanted event is acted on, in order per lead,
failures are retried (bounded) and then parked in the dead-letter table without stalling the
rest, a parked event can be retried, and partitions split the leads between them."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ledger.store import EventStore, NewEvent, RecordedEvent
from processors import dead_letters
from processors.reactor import FirstReads, ReactorRunner, Retries, owns, reader_name
from schema.events import LeadCreated, LeadFields, LeadTagged
from tests.pipeline_support import (
    META,
    eventually,
    make_feed,
    make_relay,
    reached,
    running,
)


class Recorder:
    """Remembers what it saw per lead; fails `fail_times` times on each event of `flaky`, and
    always on `broken` leads."""

    def __init__(self, name: str = "recorder", *, flaky: set[str] = frozenset(),
                 broken: set[str] = frozenset(), fail_times: int = 2) -> None:
        self.name = name
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.failures: dict[str, int] = defaultdict(int)
        self.flaky, self.broken, self.fail_times = set(flaky), set(broken), fail_times

    def wants(self, recorded: RecordedEvent) -> bool:
        return isinstance(recorded.event, (LeadCreated, LeadTagged))

    async def prepare(self, events: list[RecordedEvent]) -> list[str]:
        return [e.event_id for e in events]

    async def react(self, recorded: RecordedEvent, prepared: list[str]) -> None:
        assert recorded.event_id in prepared  # prepared for the batch the event is in
        lead = recorded.stream_id
        if lead in self.broken:
            raise RuntimeError(f"cannot handle {lead}")
        if lead in self.flaky and self.failures[recorded.event_id] < self.fail_times:
            self.failures[recorded.event_id] += 1
            raise ConnectionError("provider timed out")
        await asyncio.sleep(0)
        if recorded.version not in self.seen[lead]:  # idempotent, as reactors must be
            self.seen[lead].append(recorded.version)


def make_reactor_runner(infra, store, pool, reactor, **kwargs) -> ReactorRunner:
    return ReactorRunner(
        reactor, store, pool, kwargs.pop("feed", None) or make_feed(infra),
        retries=Retries(attempts=4, initial_s=0.01, max_s=0.05), **kwargs,
    )


async def write(store: EventStore, leads: int, tags: int = 3) -> None:
    for n in range(leads):
        lead = f"L{n:03d}"
        events = [LeadCreated(lead_id=lead, fields=LeadFields(company=f"Co {n}"), stage="lead")]
        events += [LeadTagged(tag=f"t{i}") for i in range(tags)]
        await store.append("ws-a", lead, 0, [NewEvent(e) for e in events], META)


async def test_every_event_is_acted_on_in_order_and_flaky_ones_are_retried(infra, store, pool):
    reactor = Recorder(flaky={"L001", "L007"})
    runner = make_reactor_runner(infra, store, pool, reactor)
    async with running(make_relay(infra, store, pool), runner):
        await write(store, 20)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30,
                         "the reactor to catch up")
    assert sorted(reactor.seen) == [f"L{n:03d}" for n in range(20)]
    assert all(versions == [1, 2, 3, 4] for versions in reactor.seen.values())
    assert reactor.failures and all(n == 2 for n in reactor.failures.values())
    async with pool.connection() as conn:
        assert await dead_letters.page(conn, "ws-a", reactor=None, status=None, after=None,
                                       limit=10) == []


async def test_an_event_that_keeps_failing_is_parked_and_can_be_retried(infra, store, pool):
    reactor = Recorder(broken={"L003"})
    runner = make_reactor_runner(infra, store, pool, reactor)
    async with running(make_relay(infra, store, pool), runner):
        await write(store, 6, tags=1)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30,
                         "the reactor to move past the broken lead")
        assert "L003" not in reactor.seen and len(reactor.seen) == 5
        async with pool.connection() as conn:
            parked = await dead_letters.page(conn, "ws-a", reactor="recorder",
                                             status="parked", after=None, limit=10)
            assert [(p.stream_id, p.attempts) for p in parked] == [("L003", 4), ("L003", 4)]
            assert "cannot handle L003" in parked[0].error
            assert await dead_letters.page(conn, "ws-b", reactor=None, status=None,
                                           after=None, limit=10) == []
            reactor.broken.clear()  # the provider is fixed
            for letter in parked:
                await dead_letters.set_status(
                    conn, "ws-a", "recorder", letter.event_id, dead_letters.RETRYING,
                    only_from=(dead_letters.PARKED,),
                )

        async def resolved() -> bool:
            async with pool.connection() as conn:
                rows = await dead_letters.page(conn, "ws-a", reactor="recorder",
                                               status="resolved", after=None, limit=10)
            return len(rows) == 2

        await eventually(resolved, 30, "the retried dead letters to resolve")
    assert reactor.seen["L003"] == [1, 2]


async def test_partitions_split_the_leads_and_cover_them_all(infra, store, pool):
    reactors = [Recorder(), Recorder()]
    runners = [
        make_reactor_runner(infra, store, pool, reactor, partition=i, partitions=2)
        for i, reactor in enumerate(reactors)
    ]
    async with running(make_relay(infra, store, pool), *runners):
        await write(store, 30, tags=1)
        for i in range(2):
            await eventually(lambda i=i: reached(pool, store, reader_name("recorder", i, 2)), 30,
                             f"partition {i} to catch up")
    first, second = (set(r.seen) for r in reactors)
    assert first and second and not first & second
    assert first | second == {f"L{n:03d}" for n in range(30)}
    assert all(owns(lead, 0, 2) for lead in first)


async def test_a_restart_resumes_from_the_checkpoint_without_losing_events(infra, store, pool):
    reactor = Recorder()
    async with running(make_relay(infra, store, pool),
                       make_reactor_runner(infra, store, pool, reactor)):
        await write(store, 5, tags=0)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30, "first run")
    later = Recorder()
    async with running(make_relay(infra, store, pool),
                       make_reactor_runner(infra, store, pool, later)):
        for n in range(5, 8):
            created = LeadCreated(lead_id=f"L{n:03d}", fields=LeadFields(), stage="lead")
            await store.append("ws-a", f"L{n:03d}", 0, [NewEvent(created)], META)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30, "second run")
    assert sorted(reactor.seen) == [f"L{n:03d}" for n in range(5)]
    assert sorted(later.seen) == ["L005", "L006", "L007"]  # the rest was checkpointed before


async def test_events_it_has_nothing_to_do_with_defer_the_checkpoint_until_idle(
    infra, store, pool
):
    """A reactor writes no checkpoint for batches with nothing for it (each would be a
    transaction of its own), and writes it down once the stream goes quiet; a restart from the
    older checkpoint acts on nothing twice."""
    from schema.events import LeadNoteAdded

    reactor = Recorder()
    runner = make_reactor_runner(infra, store, pool, reactor)
    async with running(make_relay(infra, store, pool), runner):
        await write(store, 2, tags=0)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30, "creates")
        for n in range(30):  # not wanted by the recorder: no work, so no checkpoint per batch
            await store.append("ws-a", "L000", None,
                               [NewEvent(LeadNoteAdded(note_id=f"n{n}", text="hi"))], META)
        # Quiet again: the deferred checkpoint is written within the runner's idle fetch.
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30, "notes")
    assert reactor.seen == {"L000": [1], "L001": [1]}
    later = Recorder()
    async with running(make_relay(infra, store, pool),
                       make_reactor_runner(infra, store, pool, later)):
        await store.append("ws-a", "L001", None, [NewEvent(LeadTagged(tag="new"))], META)
        await eventually(lambda: reached(pool, store, reader_name("recorder")), 30, "restart")
    assert later.seen == {"L001": [2]}


async def test_a_batch_reads_each_lead_once_and_a_later_look_reads_afresh(store):
    await write(store, 2, tags=1)
    batch = (await store.read_stream("ws-a", "L000")).events
    reads = await FirstReads.of(store, batch + (await store.read_stream("ws-a", "L001")).events)
    await store.append("ws-a", "L000", 2, [NewEvent(LeadTagged(tag="later"))], META)

    first = await reads.stream(store, "ws-a", "L000")
    again = await reads.stream(store, "ws-a", "L000")

    assert first.version == 2  # as read for the batch
    assert again.version == 3 and again.events[-1].event == LeadTagged(tag="later")
    assert (await reads.stream(store, "ws-a", "L001")).version == 2
