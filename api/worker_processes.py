"""`up`'s workers in processes of their own, beside the HTTP server's.

Python runs one thread at a time per process, so with everything in one process the HTTP API
and the processing plane (relay, projections, processors, reactors, webhook sender) took turns
on one core; bench_pipeline measured that process saturated near 20 leads/s while the machine's
second core served only PostgreSQL. `up` therefore starts LEADLEDGER_WORKER_PROCESSES children
(`python -m api.workers all --group I/N`: every N-th worker from the I-th), passes them the
servers it resolved (external or embedded) and stops them with itself: SIGTERM within the
workers' grace, then SIGKILL. A child that dies is restarted with a backoff; each child also
dies with `up` (PR_SET_PDEATHSIG), so a `kill -9` of `up` leaves nothing behind. Leases and
checkpoints make a restart, or a duplicate run, safe (api/workers.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import sys
from collections.abc import Mapping

import structlog

from ledger.lease import wait_for_stop

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


WORKER_NICENESS = 10
"""How much lower the workers' CPU priority is than the HTTP server's. Ingestion comes first:
under more load than the machine can process, writes are still accepted (the ledger is the system
of record) and the processing plane lags and catches up, instead of both slowing down together
until creates time out (bench_pipeline at 100/s offered with two worker processes at the same
priority: 1,310 of 2,000 creates failed)."""


def _prepare_child() -> None:
    """In the child, before exec: a lower CPU priority, and the kernel sends SIGTERM when the
    parent dies."""
    os.nice(WORKER_NICENESS)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the child outlives a killed parent
        pass


def worker_env(database_url: str, nats_url: str, master_key: str, stream: str,
               subject_prefix: str) -> dict[str, str]:
    """The children's environment: this process's, plus the servers and names `up` resolved
    (embedded servers' addresses included: to a child they are external)."""
    return {**os.environ, "LEADLEDGER_DATABASE_URL": database_url,
            "LEADLEDGER_NATS_URL": nats_url, "LEADLEDGER_MASTER_KEY": master_key,
            "LEADLEDGER_STREAM": stream, "LEADLEDGER_SUBJECT_PREFIX": subject_prefix}


async def run_worker_processes(
    env: Mapping[str, str], count: int, stop: asyncio.Event, grace_s: float
) -> None:
    """Runs `count` worker processes until `stop`, then stops them within `grace_s`."""
    async with asyncio.TaskGroup() as group:
        for index in range(count):
            group.create_task(_keep_running(index, count, env, stop, grace_s))


async def _keep_running(
    index: int, count: int, env: Mapping[str, str], stop: asyncio.Event, grace_s: float
) -> None:
    label = f"{index}/{count}"
    failures = 0
    while not stop.is_set():
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "api.workers", "all", "--group", label,
            # Its own session: a Ctrl-C on the terminal reaches `up` alone, which stops the
            # children in order instead of seeing them exit and restarting them.
            env=dict(env), preexec_fn=_prepare_child, start_new_session=True,
        )
        log.info("worker process started", group=label, pid=process.pid)
        exited = asyncio.create_task(process.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            await _stop(process, exited, grace_s, label)
            return
        failures += 1
        delay = min(60.0, 2.0**failures) * random.uniform(0.5, 1.0)
        log.error("worker process exited", group=label, code=process.returncode,
                  restart_in_s=round(delay, 1))
        await wait_for_stop(stop, delay)


async def _stop(
    process: asyncio.subprocess.Process, exited: asyncio.Task[int], grace_s: float, label: str
) -> None:
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(exited), grace_s)
    except TimeoutError:
        log.warning("worker process did not stop in time; killing", group=label,
                    grace_s=grace_s)
        process.kill()
        await exited
