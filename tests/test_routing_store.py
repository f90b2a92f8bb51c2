"""Routing decisions against a real PostgreSQL: a team's cursor under concurrent decisions."""

from __future__ import annotations

import asyncio
from collections import Counter

from processors.routing_store import RoutingStore
from schema.routing import TEAM, RoutingBook, Target, Team, TeamMember

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
