"""Fault injection under a 20,000-event load: kill -9 of the projection worker, kill -9 of the
relay, and NATS crashing and coming back. Afterwards the read model equals a fresh fold of the
ledger and the stream holds every event exactly once."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from api.embedded import EmbeddedNats
from tests.pipeline_support import (
    eventually,
    fresh_fold,
    make_relay,
    make_runner,
    reached,
    read_ledger,
    read_model,
    relay_done,
    running,
    stream_content,
    write_leads,
)

pytestmark = pytest.mark.slow

LEADS = 4_000  # about 20,400 events
REPO = Path(__file__).resolve().parent.parent


class Worker:
    """`python -m api.workers ...` as a subprocess that the test can kill -9 and restart."""

    def __init__(self, infra, args: list[str], log: Path, nats_url: str | None = None) -> None:
        self.args = args
        self.log = log
        self.env = {
            **os.environ,
            "LEADLEDGER_DATABASE_URL": infra.database_url,
            "LEADLEDGER_NATS_URL": nats_url or infra.nats_url,
            "LEADLEDGER_MASTER_KEY": infra.master_key,
            "LEADLEDGER_STREAM": infra.stream,
            "LEADLEDGER_SUBJECT_PREFIX": infra.subject_prefix,
            "LEADLEDGER_LOG_FORMAT": "json",
            "LEADLEDGER_LOG_LEVEL": "warning",
        }
        self.process: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.workers", *self.args],
                cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()  # SIGKILL: no cleanup of any kind
        self.process.wait()
        self.kills += 1

    def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(20)


async def _kill_during(worker: Worker, load: asyncio.Task, rng: random.Random) -> None:
    """Kills the worker at random moments (mid-start-up included) for as long as the load
    runs, restarting it each time."""
    while not load.done():
        await asyncio.sleep(rng.uniform(0.2, 1.2))
        worker.kill()
        worker.start()


async def _assert_everything_arrived(infra, store, pool, written: int) -> None:
    ledger = await read_ledger(store)
    assert len(ledger) == written
    assert await read_model(pool) == await fresh_fold(store)
    content = await stream_content(infra.nats_url, infra.stream, infra.subject_prefix)
    ids = [e.id for e in content.envelopes]
    assert len(ids) == len(set(ids)) == written  # every event, exactly once
    assert set(ids) == {r.event_id for r in ledger}
    assert {(m.headers or {}).get("Nats-Msg-Id") for m in content.messages} == set(ids)


async def test_projection_worker_killed_at_random_moments(infra, store, pool, tmp_path):
    worker = Worker(infra, ["project", "lead"], tmp_path / "worker.log")
    async with running(make_relay(infra, store, pool)):
        worker.start()
        load = asyncio.create_task(write_leads(store, LEADS, writers=4, pause_s=0.02, seed=21))
        await _kill_during(worker, load, random.Random())
        written = await load
        await eventually(lambda: reached(pool, store, "lead"), 60, "the projection worker")
        await eventually(lambda: relay_done(pool, store), 30, "the relay")
        await eventually(lambda: _leased(pool, "projection-lead"), 30, "the worker to start")
    assert worker.stop() == 0  # SIGTERM stops it cleanly
    assert worker.kills >= 3 and written >= 20_000
    await _assert_everything_arrived(infra, store, pool, written)


async def test_relay_killed_at_random_moments(infra, store, pool, tmp_path):
    relay = Worker(infra, ["relay"], tmp_path / "relay.log")
    async with running(make_runner(infra, store, pool)):
        relay.start()
        load = asyncio.create_task(write_leads(store, LEADS, writers=4, pause_s=0.02, seed=22))
        await _kill_during(relay, load, random.Random())
        written = await load
        await eventually(lambda: relay_done(pool, store), 60, "the relay")
        await eventually(lambda: reached(pool, store, "lead"), 30, "the projection")
        await eventually(lambda: _leased(pool, "relay"), 30, "the relay to start")
    assert relay.stop() == 0
    assert relay.kills >= 3 and written >= 20_000
    await _assert_everything_arrived(infra, store, pool, written)


async def test_nats_down_under_write_load(infra, store, pool, tmp_path):
    server = EmbeddedNats(tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    infra = _with_nats(infra, server.url)
    try:
        relay = make_relay(infra, store, pool, ack_timeout_s=1.0)
        runner = make_runner(infra, store, pool)
        async with running(relay, runner):
            load = asyncio.create_task(
                write_leads(store, LEADS, writers=4, pause_s=0.02, seed=23)
            )
            await asyncio.sleep(1.5)
            server.kill()  # NATS crashes mid-load; writes must not notice
            await asyncio.sleep(4)
            assert not load.done() or load.exception() is None
            server = EmbeddedNats(tmp_path, port=port)
            written = await load  # no write failed
            await eventually(lambda: relay_done(pool, store), 60, "the relay")
            await eventually(lambda: reached(pool, store, "lead"), 30, "the projection")
        assert written >= 20_000
        await _assert_everything_arrived(infra, store, pool, written)
    finally:
        server.stop()


async def _leased(pool, lease: str) -> bool:
    """Does some session hold lease `lease` (a worker that finished starting up)?"""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
            (f"leadledger-{lease}",),
        )
        row = await cur.fetchone()
    return bool(row and row[0])


def _with_nats(infra, url: str):
    from tests.conftest import Infra

    return Infra(infra.database_url, url, infra.stream, infra.subject_prefix, infra.master_key)
