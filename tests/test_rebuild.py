"""`replay lead`: rebuilding the lead read model into a shadow and swapping it in while the live
runner keeps applying, and `--check` reporting every difference from the live model."""

from __future__ import annotations

import asyncio
import os

import pytest

from ledger.checkpoints import read_checkpoint, set_checkpoint
from ledger.lease import lock_id
from projections.leads import LeadsProjection
from projections.rebuild import RebuildBusy, rebuild, rebuild_leads
from projections.shadow_tables import SUFFIX
from projections.status import pipeline_status
from tests.pipeline_support import (
    eventually,
    fresh_fold,
    last_written,
    make_relay,
    make_runner,
    reached,
    read_ledger,
    read_model,
    running,
    write_leads,
)

_CATALOG = """
SELECT i.relname, pg_get_indexdef(i.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = 'leads'::regclass ORDER BY 1
"""


async def _catalog(pool) -> tuple[list[tuple[str, str]], list[str]]:
    async with pool.connection() as conn:
        indexes = await (await conn.execute(_CATALOG)).fetchall()
        cur = await conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'leads'::regclass ORDER BY 1"
        )
        constraints = [r[0] for r in await cur.fetchall()]
        cur = await conn.execute("SELECT to_regclass('leads_rebuild') IS NULL")
        assert (await cur.fetchone())[0], "the shadow table was left behind"
    return list(indexes), constraints


async def test_rebuild_swaps_in_while_the_live_runner_keeps_applying(infra, store, pool):
    before = await _catalog(pool)
    await write_leads(store, 400)
    seen: list[tuple[int, int]] = []
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        writing = asyncio.create_task(write_leads(store, 300, writers=2, pause_s=0.01, seed=3))
        await asyncio.sleep(0.05)
        report = await rebuild_leads(
            store, pool, progress=lambda done, total: seen.append((done, total)),
            batch_size=500,
        )
        await writing
        await eventually(lambda: reached(pool, store, "lead"), 30, "the live runner")

    assert report.swapped and report.events > 0 and not report.differences
    assert seen and seen[-1][0] == report.events and all(d <= t for d, t in seen)
    assert await read_model(pool) == await fresh_fold(store)
    assert await _catalog(pool) == before  # canonical index and constraint names
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, "lead") == (await read_ledger(store))[-1].log_position


async def test_rebuild_of_an_empty_ledger(infra, store, pool):
    report = await rebuild_leads(store, pool)
    assert report.swapped and report.events == 0
    assert await read_model(pool) == {}


async def test_check_reports_each_difference_and_changes_nothing(infra, store, pool):
    await write_leads(store, 50)
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
    rows = sorted(await read_model(pool))
    (ws1, changed), (ws2, dropped) = rows[0], rows[1]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE leads SET company = 'Hand Edited', notes_count = 99"
            " WHERE workspace = %s AND lead_id = %s", (ws1, changed),
        )
        await conn.execute("DELETE FROM leads WHERE workspace = %s AND lead_id = %s",
                           (ws2, dropped))
        await conn.execute(
            "INSERT INTO leads (workspace, lead_id, version, status, stage, created_at,"
            " updated_at) VALUES ('ws-z', 'ghost', 1, 'active', 'lead', now(), now())"
        )
    live = await read_model(pool)

    report = await rebuild_leads(store, pool, check=True)

    assert not report.swapped
    found = {(d.workspace, d.lead_id): d for d in report.differences}
    assert set(found) == {(ws1, changed), (ws2, dropped), ("ws-z", "ghost")}
    assert found[(ws2, dropped)].kind == "missing"
    assert found[("ws-z", "ghost")].kind == "extra"
    edited = found[(ws1, changed)]
    assert edited.kind == "different"
    assert {(f.field, f.live) for f in edited.fields} == {
        ("company", '"Hand Edited"'), ("notes_count", "99")
    }
    assert await read_model(pool) == live  # check mode leaves the live model alone
    await _catalog(pool)  # and drops its shadow


async def test_check_compares_at_the_live_checkpoint(infra, store, pool):
    """Events the live runner has not applied yet are not differences."""
    await write_leads(store, 30)
    async with running(make_relay(infra, store, pool), make_runner(infra, store, pool)):
        await eventually(lambda: reached(pool, store, "lead"), 20, "the projection")
    await write_leads(store, 30, seed=5)  # no runner: the live model is behind
    report = await rebuild_leads(store, pool, check=True)
    assert report.differences == []
    async with pool.connection() as conn:
        assert report.position == await read_checkpoint(conn, "lead")


async def test_one_rebuild_at_a_time(infra, store, pool):
    async with pool.connection() as other:  # as another process's rebuild would
        await other.execute("SELECT pg_advisory_lock(%s)", (lock_id("rebuild:lead"),))
        with pytest.raises(RebuildBusy):
            await rebuild_leads(store, pool)
        await other.execute("SELECT pg_advisory_unlock(%s)", (lock_id("rebuild:lead"),))
    assert (await rebuild_leads(store, pool)).swapped


async def test_status_reports_checkpoints_and_lag(infra, store, pool):
    written = await write_leads(store, 20)
    report = await pipeline_status(store, pool)
    assert report.relay.lag_events == written and report.projections[0].name == "lead"
    assert report.projections[0].lag_events == written
    assert report.projections[0].updated_at is None
    async with pool.connection() as conn:
        await set_checkpoint(conn, "lead", await last_written(pool))
    report = await pipeline_status(store, pool)
    assert report.projections[0].lag_events == 0 and report.relay.lag_events == written
    assert report.head >= report.horizon.position


@pytest.mark.parametrize("partitions", [1, 3])
async def test_any_number_of_partitions_rebuilds_the_same_model(infra, store, pool, partitions):
    """Partitions split the streams across forked processes; 1 replays in this process."""
    await write_leads(store, 120)  # some leads archived, restored, erased
    seen: list[int] = []
    report = await rebuild_leads(store, pool, partitions=partitions,
                                 progress=lambda done, total: seen.append(done), batch_size=50)
    assert report.swapped and report.events == len(await read_ledger(store))
    assert seen[-1] == report.events and seen == sorted(seen)
    assert await read_model(pool) == await fresh_fold(store)
    async with pool.connection() as conn:
        assert await read_checkpoint(conn, "lead") == report.position


async def test_a_failed_partition_fails_the_rebuild_and_leaves_the_model(infra, store, pool):
    await write_leads(store, 40)
    await rebuild_leads(store, pool)
    before = await read_model(pool)
    parent = os.getpid()

    def shadow_part(part_store):
        if os.getpid() != parent:
            raise RuntimeError("partition broke")
        return LeadsProjection(part_store).shadow(SUFFIX)

    with pytest.raises(RuntimeError, match="partition broke"):
        await rebuild(LeadsProjection(store), store, pool, check=False, progress=None,
                      shadow_part=shadow_part, partitions=2)
    assert await read_model(pool) == before
    await _catalog(pool)  # no shadow left behind
