"""Which asyncio event loop the long-running processes (`leadledger up`, `python -m api.workers`)
run on: uvloop where it is installed and not switched off (LEADLEDGER_EVENT_LOOP=asyncio, a
setting: api/settings.py).

Every worker and request is a chain of small awaits on PostgreSQL and NATS: with the standard
loop one trivial psycopg round trip cost about 90 µs of CPU here (registering and removing the
socket's reader, futures, wake-ups), with uvloop about 55 (measured with `SELECT 1` in a loop on
this project's 2-core machine). That overhead is a large part of what a lead costs the
processing plane (bench/RESULTS.md, pipeline). Short CLI commands keep the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's, unless `choice` is "asyncio" or uvloop is not installed; None: the standard
    loop."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # not available on this platform
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], choice: str = "uvloop") -> T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
