"""Background workers: the outbox relay, the projection runners and the processors.

    python -m api.workers all [--group 0/2]       (every worker below, or every 2nd from the 1st)
    python -m api.workers relay
    python -m api.workers project lead
    python -m api.workers project duplicates
    python -m api.workers project scoring          (the scoring processor)
    python -m api.workers project score-history
    python -m api.workers rescore                  (resumes rescore jobs whose process died)
    python -m api.workers react enrich [--partitions 0,1]   (a reactor: api/reactors.py)
    python -m api.workers send-webhooks            (the webhook sender; any number may run)

Each reads its settings from the environment (external servers only: LEADLEDGER_DATABASE_URL,
LEADLEDGER_NATS_URL, LEADLEDGER_MASTER_KEY, LEADLEDGER_STREAM and LEADLEDGER_SUBJECT_PREFIX are
required) and stops cleanly on SIGINT or SIGTERM. `leadledger up` runs them all in-process
beside the HTTP server through `run_workers`. Any number of copies may run: leases keep exactly
one of each active and the others on standby (a rescore job runs under a lock of its own).

Processors run as projections (processors/scoring.py): the runner gives them the ledger
catch-up, the NATS fast path and the exactly-once checkpoint, with their output (events) in the
checkpoint's transaction. Reactors (enrichment, routing, webhooks: processors/reactor.py) act
outside transactions and checkpoint after; each runs as LEADLEDGER_REACTOR_PARTITIONS
partitions, and `react <name> --partitions ...` runs some of them in a process of its own.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import sys
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import structlog

from api import event_loop
from api.heap import freeze_startup_heap
from api.logs import configure_logging
from api.reactors import REACTORS, make_reactor_runners
from api.runtime import Runtime, open_runtime
from api.settings import Settings, load_settings
from ledger.lease import wait_for_stop
from ledger.relay import Relay
from ledger.scoring_models import ScoringModels
from processors.overdue import OverdueSweeper
from processors.overdue import every_s_from_env as overdue_every_s
from processors.rescore import Rescorer, max_per_s_from_env
from processors.routing_store import RoutingStore
from processors.scoring import ScoringProcessor
from processors.webhook_sender import SenderOptions, WebhookSender
from projections.duplicates import DuplicatesProjection
from projections.feed import Feed
from projections.leads import LeadsProjection
from projections.runner import Projection, ProjectionRunner
from projections.score_history import ScoreHistoryProjection
from projections.tasks import TasksProjection

log = structlog.get_logger(__name__)

REQUIRED_ENV = (
    "LEADLEDGER_DATABASE_URL",
    "LEADLEDGER_NATS_URL",
    "LEADLEDGER_MASTER_KEY",
    "LEADLEDGER_STREAM",
    "LEADLEDGER_SUBJECT_PREFIX",
)

PROJECTIONS: dict[str, Callable[[Runtime], Projection]] = {
    "lead": lambda runtime: LeadsProjection(runtime.store),
    "duplicates": lambda runtime: DuplicatesProjection(),
    "scoring": lambda runtime: ScoringProcessor(
        runtime.store, runtime.commands, ScoringModels(runtime.pool)
    ),
    "score-history": lambda runtime: ScoreHistoryProjection(),
    "tasks": lambda runtime: TasksProjection(),
}

BATCH_SIZES = {"scoring": 100}
"""The scoring processor appends inside its batch's transaction, which holds back the gap-safe
horizon of every reader until it commits: its batches stay small (the default is 500)."""

_USAGE = (
    "usage: python -m api.workers all [--group I/N] | relay | rescore | send-webhooks"
    " | project <" + "|".join(PROJECTIONS) + ">"
    " | react <" + "|".join(REACTORS) + "> [--partitions 0,1,...]"
)


def make_relay(runtime: Runtime) -> Relay:
    settings = runtime.settings
    return Relay(
        runtime.store, runtime.pool, runtime.nats_url, settings.stream, settings.subject_prefix,
        max_age_s=_max_age_s(settings), duplicate_window_s=settings.duplicate_window_s,
    )


def make_feed(runtime: Runtime, name: str) -> Feed:
    """The process's one subscription to the ledger, shared by its runners."""
    settings = runtime.settings
    return Feed(
        runtime.nats_url, settings.stream, settings.subject_prefix,
        max_age_s=_max_age_s(settings), duplicate_window_s=settings.duplicate_window_s,
        registry=runtime.store.registry, name=f"leadledger-feed-{name}",
    )


def make_runner(runtime: Runtime, feed: Feed, name: str) -> ProjectionRunner:
    return ProjectionRunner(
        PROJECTIONS[name](runtime), runtime.store, runtime.pool, feed,
        batch_size=BATCH_SIZES.get(name, 500),
    )


def make_rescorer(runtime: Runtime) -> Rescorer:
    return Rescorer(runtime.store, runtime.commands, ScoringModels(runtime.pool), runtime.pool,
                    max_per_s=max_per_s_from_env())


def make_sweeper(runtime: Runtime) -> OverdueSweeper:
    return OverdueSweeper(runtime.store, runtime.commands, RoutingStore(runtime.pool),
                          runtime.pool, every_s=overdue_every_s())


def make_webhook_sender(runtime: Runtime) -> WebhookSender:
    return WebhookSender(runtime.store, runtime.pool, runtime.keyring, SenderOptions.from_env())


def _max_age_s(settings: Settings) -> float:
    return settings.stream_max_age_days * 86_400


async def run_workers(
    runtime: Runtime, stop: asyncio.Event, *, reactors: Collection[str] | None = None,
    group: tuple[int, int] = (0, 1),
) -> None:
    """The relay, every projection, the reactors (`reactors`: by name; None, all of them) and
    the background loops, concurrently, until `stop`. `group` (index, count) runs every
    count-th of them from index on: `up` spreads them over its worker processes that way."""
    index, count = group
    feed = make_feed(runtime, f"group-{index}of{count}")
    chosen = worker_list(runtime, feed, stop, reactors)[index::count]
    async with asyncio.TaskGroup() as tasks:
        for label, run in chosen:
            tasks.create_task(_supervise(label, run, stop))


Worker = tuple[str, Callable[[], Coroutine[Any, Any, None]]]


def worker_list(
    runtime: Runtime, feed: Feed, stop: asyncio.Event, reactors: Collection[str] | None = None
) -> list[Worker]:
    """Every worker `up` runs, by label, in a fixed order. The busiest (the relay, the lead
    projection, the scoring processor, each reactor) are spread so that every-count-th picks
    share them out."""
    workers: list[Worker] = [("relay", lambda: make_relay(runtime).run(stop))]
    for name in PROJECTIONS:
        workers.append((f"project {name}",
                        functools.partial(_run_projection, runtime, feed, name, stop)))
    for name in REACTORS if reactors is None else reactors:
        for runner in make_reactor_runners(runtime, feed, name):
            workers.append((f"react {runner.projection.name}",
                            functools.partial(runner.run, stop)))
    workers += [
        ("webhook sender", lambda: make_webhook_sender(runtime).run(stop)),
        ("rescore", lambda: make_rescorer(runtime).resume(stop)),
        ("overdue", lambda: make_sweeper(runtime).run(stop)),
    ]
    return workers


async def _run_projection(runtime: Runtime, feed: Feed, name: str, stop: asyncio.Event) -> None:
    await make_runner(runtime, feed, name).run(stop)


async def _supervise(
    label: str, run: Callable[[], Coroutine[Any, Any, None]], stop: asyncio.Event
) -> None:
    """Restarts a worker that crashed (a bug, a bad message), backing off up to a minute:
    the other workers and the HTTP API keep running meanwhile."""
    failures = 0
    while not stop.is_set():
        try:
            await run()
            return
        except Exception:
            failures += 1
            delay = min(60.0, 2.0**failures) * random.uniform(0.5, 1.0)
            log.exception("worker crashed", worker=label, restart_in_s=round(delay, 1))
            await wait_for_stop(stop, delay)


async def run_one(argv: list[str], settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    assert settings.database_url and settings.nats_url and settings.master_key
    runtime = await open_runtime(
        settings, settings.database_url, settings.nats_url, settings.master_key
    )
    try:
        if argv[0] == "all":
            await run_workers(runtime, stop, group=_group(argv[1:]))
        elif argv == ["relay"]:
            await make_relay(runtime).run(stop)
        elif argv == ["rescore"]:
            await make_rescorer(runtime).resume(stop)
        elif argv == ["send-webhooks"]:
            await make_webhook_sender(runtime).run(stop)
        elif argv[0] == "react":
            feed = make_feed(runtime, "-".join(argv[:2]))
            runners = make_reactor_runners(runtime, feed, argv[1], _partitions(argv[2:]))
            await asyncio.gather(*(runner.run(stop) for runner in runners))
        else:
            await make_runner(runtime, make_feed(runtime, argv[1]), argv[1]).run(stop)
    finally:
        await runtime.close()
    log.info("worker stopped", worker=" ".join(argv))


def _group(args: list[str]) -> tuple[int, int]:
    """`--group 1/2` → (1, 2); none given → every worker."""
    if not args:
        return 0, 1
    index, count = (int(x) for x in args[1].split("/"))
    if not 0 <= index < count:
        raise ValueError(f"--group {args[1]}: expected INDEX/COUNT with 0 <= INDEX < COUNT")
    return index, count


def _partitions(args: list[str]) -> list[int] | None:
    """`--partitions 0,2` → [0, 2]; none given → every partition."""
    if not args:
        return None
    return [int(p) for p in args[1].split(",")]


def _valid(argv: list[str]) -> bool:
    if argv in (["all"], ["relay"], ["rescore"], ["send-webhooks"]):
        return True
    if len(argv) == 3 and argv[0] == "all" and argv[1] == "--group":
        index, _, count = argv[2].partition("/")
        return index.isdigit() and count.isdigit() and int(index) < int(count)
    if len(argv) == 2 and argv[0] == "project":
        return argv[1] in PROJECTIONS
    if len(argv) in (2, 4) and argv[0] == "react" and argv[1] in REACTORS:
        return len(argv) == 2 or (
            argv[2] == "--partitions" and all(p.isdigit() for p in argv[3].split(","))
        )
    return False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not _valid(argv):
        print(_USAGE, file=sys.stderr)
        return 2
    missing = [name for name in REQUIRED_ENV if not os.environ.get(name)]
    if missing:
        print("missing settings: " + ", ".join(missing), file=sys.stderr)
        return 2
    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level)
    freeze_startup_heap()
    event_loop.run(run_one(argv, settings), settings.event_loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
