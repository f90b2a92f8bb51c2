"""The NATS side of the ledger: connecting, and the one JetStream stream that carries it.

`ensure_stream` is shared by the relay (which publishes) and the projection runners (which
consume); whoever starts first creates the stream, and a changed retention setting is applied.
"""

from __future__ import annotations

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from schema.envelope import stream_subjects

log = structlog.get_logger(__name__)

# A client reconnects by itself a few times (publishes meanwhile wait in its buffer); past
# that it closes, and the caller's own loop reconnects with backoff. Bounded either way.
_RECONNECT_ATTEMPTS = 4
_RECONNECT_WAIT_S = 0.5


async def connect_nats(url: str, *, name: str) -> NATS:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error", client=name, error=repr(exc))

    async def on_disconnect() -> None:
        log.info("nats disconnected", client=name)

    async def on_reconnect() -> None:
        log.info("nats reconnected", client=name)

    return await nats.connect(
        url,
        name=name,
        connect_timeout=2,
        allow_reconnect=True,
        max_reconnect_attempts=_RECONNECT_ATTEMPTS,
        reconnect_time_wait=_RECONNECT_WAIT_S,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
    )


def stream_config(
    stream: str, prefix: str, *, max_age_s: float, duplicate_window_s: float
) -> StreamConfig:
    return StreamConfig(
        name=stream,
        subjects=[stream_subjects(prefix)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=max_age_s,
        # NATS refuses a duplicate window longer than the retention it deduplicates within.
        duplicate_window=min(duplicate_window_s, max_age_s),
    )


async def ensure_stream(
    js: JetStreamContext, stream: str, prefix: str, *, max_age_s: float, duplicate_window_s: float
) -> None:
    """Creates the ledger stream, or updates its retention and subjects if they changed."""
    wanted = stream_config(
        stream, prefix, max_age_s=max_age_s, duplicate_window_s=duplicate_window_s
    )
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(wanted)
        log.info("stream created", stream=stream, subjects=wanted.subjects)
        return
    have = info.config
    if (
        have.subjects != wanted.subjects
        or abs((have.max_age or 0.0) - max_age_s) > 1e-3
        or abs((have.duplicate_window or 0.0) - wanted.duplicate_window) > 1e-3
    ):
        await js.update_stream(wanted)
        log.info("stream updated", stream=stream)
