"""Routing decisions against a real PostgreSQL: a team's cursor and its members' capacity under
concurrent decisions (made in groups per team: processors/routing_store.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

from processors.routing_store import RoutingStore
from schema.routing import LEAST_LOADED, TEAM, RoutingBook, Target, Team, TeamMember

MEMBERS = ("ada", "grace", "alan", "barbara")
BOOK = RoutingBook(teams=(Team(id="sales", name="Sales",
                               members=tuple(TeamMember(owner=m) for m in MEMBERS)),))
TARGET = Target(kind=TEAM, value="sales", rule_id="r1", rule_name="All", reason="rule r1")


async def test_concurrent_decisions_take_turns_on_the_team(pool) -> None:
    """Forty decisions at once: each stored once, the round-robin as even as in sequence (so
    the cursor moved exactly once per decision)."""
    store = RoutingStore(pool)
    decided = await asyncio.gather(*(
        store.decide("ws", f"event-{i}", f"lead-{i}", TARGET, BOOK, f"task-{i}")
        for i in range(40)
    ))
    assert Counter(d.decision.owner for d in decided) == {m: 10 for m in MEMBERS}
    # a redelivered cause gets the decision already stored, and moves nothing: the next new
    # decision goes to whoever was next anyway
    again = await store.decide("ws", "event-7", "lead-7", TARGET, BOOK, "task-7")
    assert again == decided[7]
    after = [await store.decide("ws", f"later-{i}", f"lead-l{i}", TARGET, BOOK, None)
             for i in range(len(MEMBERS))]
    assert [d.decision.owner for d in after] == list(MEMBERS)  # 40 decisions: a full turn
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM routing_decisions WHERE workspace = 'ws'")
        assert await cur.fetchone() == (44,)


async def test_the_same_cause_asked_twice_at_once_is_decided_once(pool) -> None:
    store = RoutingStore(pool)
    first, second, other = await asyncio.gather(
        store.decide("ws2", "event-1", "lead-1", TARGET, BOOK, "task-1"),
        store.decide("ws2", "event-1", "lead-1", TARGET, BOOK, "task-1"),
        store.decide("ws2", "event-2", "lead-2", TARGET, BOOK, "task-2"),
    )
    assert first == second
    assert (first.decision.owner, other.decision.owner) == ("ada", "grace")  # moved once
    nxt = await store.decide("ws2", "event-3", "lead-3", TARGET, BOOK, None)
    assert nxt.decision.owner == "alan"


async def test_concurrent_decisions_fill_capacity_and_then_overflow(pool) -> None:
    """Each decision of a group sees the loads the ones before it left: two members with room
    for two follow-ups each take four of six leads at once; the other two wait in the queue."""
    book = RoutingBook(teams=(Team(
        id="sdr", name="SDR", strategy=LEAST_LOADED, overflow_queue="sdr-overflow",
        members=(TeamMember(owner="ada", capacity=2), TeamMember(owner="grace", capacity=2)),
    ),))
    target = Target(kind=TEAM, value="sdr", rule_id="r1", rule_name="All", reason="rule r1")
    store = RoutingStore(pool)
    decided = await asyncio.gather(*(
        store.decide("ws3", f"event-{i}", f"lead-{i}", target, book, f"task-{i}")
        for i in range(6)
    ))
    owners = Counter(d.decision.owner for d in decided)
    assert owners == {"ada": 2, "grace": 2, None: 2}
    assert {d.decision.queue for d in decided if d.decision.owner is None} == {"sdr-overflow"}
