"""Kill -9 of the enrichment and routing reactors, at random moments, under a write load (issue
#6: nothing lost, no duplicated side effect). Both run as `python -m api.workers react ...`
subprocesses; the relay runs in the test. Each is killed at least MIN_KILLS times, at any moment
(start-up included) and, at least once each, between acting on a batch and checkpointing it (the
test waits for effects whose cause is past the checkpoint, then kills). Leads are created through
the command path in a workspace that routes (one round-robin team, one rule sending everything
to it) and in one that does not. Afterwards, from the ledger:

- each lead has exactly one `LeadEnriched` per built-in provider with something to say about it
  (what the providers answer for the created lead, asked again here), with the event id derived
  from (LeadCreated, provider), and nothing else;
- each lead of the routing workspace has exactly one `LeadAssigned` and one `LeadTaskOpened`
  (to the same member, ids derived from the LeadCreated), one stored decision, and the
  round-robin is balanced within one: decisions are stored once per cause with the team's
  cursor moved in the same transaction (processors/routing_store.py), so a re-run after a kill
  neither skips a member nor assigns twice; the other workspace is never routed;
- both reactors' checkpoints reach the last event and nothing was parked in the dead letters."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from ledger.checkpoints import read_checkpoint
from ledger.crypto import parse_master_key
from ledger.identity import IdentityHasher
from ledger.lead import INITIAL, fold
from ledger.lead_commands import LeadCommands
from ledger.store import RecordedEvent
from processors.enrichment import builtin_providers, enrichment_event_id
from processors.providers import snapshot_of
from processors.providers.firmographics import Firmographics
from processors.reactor import reader_name
from processors.routing import derived_id
from processors.routing_store import RoutingStore
from schema.commands import CreateLead
from schema.events import LeadAssigned, LeadCreated, LeadEnriched, LeadFields, LeadTaskOpened
from schema.routing import FOLLOW_UP, RoutingRule, Team, TeamMember
from tests.pipeline_support import META, eventually, last_written, make_relay, read_ledger, running
from tests.test_pipeline_faults import Worker, _leased

pytestmark = pytest.mark.slow

ROUTED, UNROUTED = "ws-a", "ws-b"
LEADS = 360  # two in three in the routing workspace
MEMBERS = ("ann", "bob", "cy")
MIN_KILLS = 5  # of each reactor, at least
COMPANIES = 12  # company domains; firmographics knows the even ones
FIRMOGRAPHICS = "\n".join(
    ["domain,company_name,industry,employee_range,country"]
    + [f"co{n}.example,Company {n},Software,11-50,GB" for n in range(0, COMPANIES, 2)]
)


def lead_fields(n: int) -> LeadFields:
    """Company addresses (first.last: a name guess), free mail, no address; a phone or not."""
    company = n % COMPANIES
    email = (f"first{n}.last{n}@co{company}.example" if n % 4 in (0, 1)
             else f"someone{n}@gmail.com" if n % 4 == 2 else None)
    phone = f"+44 20 7946 {n % 10_000:04d}" if n % 3 else None
    website = f"https://www.co{company}.example" if n % 5 == 0 else None
    return LeadFields(email=email, phone=phone, website=website, company=f"Co {company}")


async def create_leads(commands: LeadCommands, count: int, *, writers: int = 2,
                       pause_s: float = 0.04) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(count):
        queue.put_nowait(n)

    async def writer() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            workspace = UNROUTED if n % 3 == 2 else ROUTED
            command = CreateLead(lead_id=f"R{n:05d}", fields=lead_fields(n), stage="lead")
            await commands.execute(workspace, command.lead_id, command, META)
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(writer() for _ in range(writers)))


# Effects of a reactor (by actor) whose cause lies past its checkpoint: what a restart runs again.
_TO_REDO = """
SELECT count(*) FROM events e
JOIN events c ON c.event_id = (e.metadata->>'causation_id')::uuid
JOIN checkpoints k ON k.name = %s
WHERE e.metadata->'actor'->>'key_id' = %s
  AND (c.transaction_id, c.position) > (k.transaction_id, k.position)
"""


async def both_reached(pool) -> bool:
    """Both reactors have checkpointed the last event written (each writes events the other
    reads, so both are looked at against the same, latest, position)."""
    target = await last_written(pool)
    async with pool.connection() as conn:
        for name in ("enrich", "route"):
            if await read_checkpoint(conn, reader_name(name)) < target:
                return False
    return target == await last_written(pool)


async def test_enrich_and_route_reactors_killed_at_random_moments_under_load(
    infra, store, pool, tmp_path
):
    routing = RoutingStore(pool)
    await routing.save_teams(ROUTED, [Team(id="rr", name="Round robin", members=tuple(
        TeamMember(owner=m) for m in MEMBERS))], "test")
    await routing.save_rules(ROUTED, [RoutingRule(
        id="all", name="Everyone", condition="true", target_kind="team", target="rr")],
        "inbox", "test")
    firmographics = Firmographics(pool)
    for workspace in (ROUTED, UNROUTED):
        await firmographics.load(workspace, FIRMOGRAPHICS.splitlines(), "test")
    commands = LeadCommands(store, IdentityHasher(parse_master_key(infra.master_key)))

    workers = [Worker(infra, ["react", "enrich"], tmp_path / "enrich.log"),
               Worker(infra, ["react", "route"], tmp_path / "route.log")]
    for worker in workers:
        worker.start()
    rng = random.Random()

    redone: Counter[str] = Counter()  # effects a restarted reactor had to run again
    mid_batch: Counter[str] = Counter()  # kills between acting and checkpointing

    async def to_redo(name: str) -> int:
        """Effects of the reactor whose cause is past its checkpoint: were it killed now, the
        restarted one would run them again (and must append nothing new)."""
        async with pool.connection() as conn:
            cur = await conn.execute(_TO_REDO, (reader_name(name), f"processor:{name}"))
            row = await cur.fetchone()
        return row[0]

    async def kill_one() -> None:
        # Each reactor is killed mid-batch at least once, first of all; then turn about.
        fewest = min(w.kills for w in workers)
        victim = rng.choice([w for w in workers if not mid_batch[w.args[1]]]
                            or [w for w in workers if w.kills == fewest])
        name = victim.args[1]
        if mid_batch[name] and rng.random() < 0.5:
            # Any moment: start-up takes a second or two, so this lands in it now and then.
            await asyncio.sleep(rng.uniform(0.5, 2.0))
        else:
            # The worst moment: once it has acted on a batch and not yet checkpointed it (the
            # backlog that piled up while it was down makes for long batches).
            lease = f"projection-{reader_name(name)}"
            await eventually(lambda: _leased(pool, lease), 30, f"{lease} to start")
            until = time.monotonic() + 3
            while time.monotonic() < until and not await to_redo(name):
                await asyncio.sleep(0.01)
        victim.kill()  # SIGKILL: mid-batch, mid-provider, mid-decision, mid-append
        if pending := await to_redo(name):
            redone[name] += pending
            mid_batch[name] += 1
        victim.start()

    started = time.monotonic()
    async with running(make_relay(infra, store, pool)):
        load = asyncio.create_task(create_leads(commands, LEADS))
        while not load.done():
            await kill_one()
        await load
        loaded = time.monotonic()
        # Then until each reactor was killed a few times, once at least between acting and
        # checkpointing (the backlog piled up meanwhile is where that happens).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
                w.kills < MIN_KILLS or not mid_batch[w.args[1]] for w in workers):
            await kill_one()
        drained = time.monotonic()
        await eventually(lambda: both_reached(pool), 120, "both reactors to catch up")
        await eventually(lambda: _leased(pool, "projection-reactor-enrich"), 30,
                         "the enrich reactor to finish starting")
        await eventually(lambda: _leased(pool, "projection-reactor-route"), 30,
                         "the route reactor to finish starting")
        await asyncio.sleep(1)  # whatever a last batch would append, it would have by now
        assert await both_reached(pool)
    assert [w.stop() for w in workers] == [0, 0]  # SIGTERM stops both cleanly
    kills = [w.kills for w in workers]
    assert min(kills) >= MIN_KILLS, kills
    assert set(mid_batch) == {"enrich", "route"}, mid_batch  # each killed mid-batch, at least once

    ledger = await read_ledger(store)
    by_lead: dict[tuple[str, str], list[RecordedEvent]] = defaultdict(list)
    for recorded in ledger:
        by_lead[(recorded.workspace, recorded.stream_id)].append(recorded)
    assert len(by_lead) == LEADS

    # Enrichment: exactly what the built-in providers have to say about each created lead.
    providers = builtin_providers(pool)
    expected_enriched: dict[str, tuple[str, str]] = {}
    for (workspace, _lead), events in by_lead.items():
        created = events[0]
        assert isinstance(created.event, LeadCreated)
        snapshot = snapshot_of(fold([created.event], INITIAL))
        for provider in providers:
            if not (await provider.enrich(workspace, snapshot)).empty:
                expected_enriched[enrichment_event_id(created.event_id, provider.name)] = (
                    created.event_id, provider.name)
    enriched = [r for r in ledger if isinstance(r.event, LeadEnriched)]
    per_cause = Counter((r.metadata.causation_id, r.event.provider) for r in enriched)
    assert [k for k, n in per_cause.items() if n > 1] == []  # no duplicated finding
    assert {r.event_id: (r.metadata.causation_id, r.event.provider) for r in enriched} == (
        expected_enriched)  # none missing, none extra, each with its derived id
    assert {p for _, p in expected_enriched.values()} == {
        "email-domain", "phone", "firmographics"}
    assert all(r.event.trigger == "created" for r in enriched)

    # Routing: one assignment and one follow-up per lead of the routing workspace, none else.
    owners: Counter[str] = Counter()
    for (workspace, _lead), events in by_lead.items():
        created = events[0]
        assigned = [r for r in events if isinstance(r.event, LeadAssigned)]
        opened = [r for r in events if isinstance(r.event, LeadTaskOpened)]
        if workspace == UNROUTED:
            assert assigned == [] and opened == []
            continue
        assert len(assigned) == 1 and len(opened) == 1, (created.stream_id, assigned, opened)
        assignment, task = assigned[0], opened[0]
        assert assignment.event_id == derived_id(created.event_id, "assign")
        assert task.event_id == derived_id(created.event_id, "open-task")
        assert assignment.metadata.causation_id == task.metadata.causation_id == (
            created.event_id)
        assert assignment.event.team == "rr" and assignment.event.owner in MEMBERS
        assert task.event.task_id == derived_id(created.event_id, "task")
        assert (task.event.kind, task.event.assignee) == (FOLLOW_UP, assignment.event.owner)
        assert task.event.due_at == created.recorded_at + timedelta(days=1)  # the default SLA
        owners[assignment.event.owner] += 1
    routed = sum(1 for ws, _ in by_lead if ws == ROUTED)
    assert sum(owners.values()) == routed == 2 * LEADS // 3
    assert set(owners) == set(MEMBERS)
    assert max(owners.values()) - min(owners.values()) <= 1, owners  # round-robin, no skips

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT workspace, count(*), count(DISTINCT lead_id) FROM routing_decisions"
            " GROUP BY workspace")
        assert await cur.fetchall() == [(ROUTED, routed, routed)]  # one decision per lead
        cur = await conn.execute("SELECT team_id, next_member FROM routing_cursors")
        assert await cur.fetchall() == [("rr", routed % len(MEMBERS))]  # moved once per lead
        cur = await conn.execute("SELECT reactor, event_id, error FROM dead_letters")
        assert await cur.fetchall() == []  # nothing parked
    print(f"{dict(Counter(type(r.event).__name__ for r in ledger))}, owners {dict(owners)}, "
          f"kills {kills}, {dict(mid_batch)} of them mid-batch, redone {dict(redone)}, "
          f"load {loaded - started:.0f} s, killing {drained - loaded:.0f} s more, "
          f"{time.monotonic() - started:.0f} s in all")
