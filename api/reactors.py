"""The processing plane's reactors and how they run: one registry, read by `leadledger up` (every
reactor, every partition, in-process) and by `python -m api.workers react <name>` (some
partitions of one reactor, in a worker process of its own).

A reactor is built from the runtime; each partition gets a ReactorRunner (processors/reactor.py)
with its own lease and checkpoint, so any number of processes may run any partitions.
"""

from __future__ import annotations

from collections.abc import Callable

from api.runtime import Runtime
from processors.enrichment import build_enrichment
from processors.reactor import Reactor, ReactorRunner
from processors.routing import routing_reactor
from processors.webhooks import webhooks_reactor
from projections.feed import Feed

REACTORS: dict[str, Callable[[Runtime], Reactor]] = {
    "enrich": lambda r: build_enrichment(r.store, r.commands, r.pool, r.keyring, r.quality,
                                         r.outbound),
    "route": lambda runtime: routing_reactor(runtime.store, runtime.commands, runtime.pool),
    "webhooks": lambda runtime: webhooks_reactor(runtime.pool, runtime.keyring),
}
"""Name → factory: one line per reactor."""


def make_reactor_runners(
    runtime: Runtime, feed: Feed, name: str, partitions: list[int] | None = None
) -> list[ReactorRunner]:
    """Runners for `partitions` (default: all) of reactor `name`."""
    settings = runtime.settings
    count = settings.reactor_partitions
    chosen = partitions if partitions is not None else list(range(count))
    reactor = REACTORS[name](runtime)
    return [
        ReactorRunner(
            reactor, runtime.store, runtime.pool, feed, partition=p, partitions=count,
            concurrency=settings.reactor_concurrency,
        )
        for p in chosen
    ]
