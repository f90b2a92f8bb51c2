"""The feed: a worker process's one JetStream subscription to the ledger, shared by every runner
in the process (projections, processors, reactors).

Every runner needs every event (it passes over those it has nothing to do with). With a durable
consumer per runner, each event crossed NATS once per runner (eight times in `up`), was parsed
and decoded once per runner, and every runner paid a fetch request and an acknowledgement per
batch: that fan-out was about a fifth of what the processing plane cost a lead. The feed takes
each event once per process, decodes it once, and hands the same `Delivered` to the inbox of
every runner that holds its lease here.

What the feed does not do is keep anyone's position: a runner's position is its checkpoint in
PostgreSQL, committed with what it applied (projections/runner.py), and whatever the feed
misses or drops, the runner reads from the ledger, revealed by the `previous` link of the next
event or by its idle look. So the subscription is an ordered push consumer (ephemeral, no acks,
flow controlled, starting at new messages; nats-py recreates it from the last stream sequence
when heartbeats stop or a sequence is skipped), and an inbox that falls too far behind is
emptied rather than left to grow: its runner then reads that stretch from the ledger in large
batches, which is also the cheaper way to catch up.

The feed runs while at least one runner listens and stops (closing its NATS connection) when
the last one leaves; NATS going away is retried with backoff meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
from collections import deque
from collections.abc import AsyncIterator

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from ledger.envelopes import from_cloudevent
from ledger.jetstream import connect_nats, ensure_stream
from ledger.store import RecordedEvent
from schema.envelope import decode_envelope, stream_subjects
from schema.positions import LogPosition
from schema.registry import DEFAULT_REGISTRY, EventRegistry

log = structlog.get_logger(__name__)

INBOX_LIMIT = 5_000
"""Events an inbox holds before it is emptied (its runner then reads them from the ledger)."""
SUBSCRIBE_WAIT_S = 2.0
"""How long a runner starting to listen waits for the subscription before going on without it
(it then reads the ledger at its idle looks until the feed is back)."""
HEARTBEAT_S = 2.0
"""The consumer's idle heartbeat: two missed ones make nats-py recreate it."""
LEGACY_CONSUMERS = re.compile(r"projection-(lead|duplicates|scoring|score-history|tasks|reactor-.+)")
"""The durable consumers runners had before the feed (one per runner): nothing pulls from them
any more, so the first feed to subscribe deletes them from the stream."""


class Delivered(msgspec.Struct, frozen=True):
    """One ledger event as NATS delivered it, with the position published just before it."""

    previous: LogPosition
    recorded: RecordedEvent


def delivered_of(payload: bytes, registry: EventRegistry = DEFAULT_REGISTRY) -> Delivered:
    """Decodes a message of the ledger stream; raises msgspec.DecodeError or ValueError when it
    is not one (or is corrupt)."""
    envelope = decode_envelope(payload)
    return Delivered(LogPosition.parse(envelope.previous), from_cloudevent(envelope, registry))


class Inbox:
    """What the feed delivered for one runner and the runner has not taken yet."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        """Events emptied out because the runner was too far behind."""
        self.resync = False
        """Set when the feed (re)subscribed: what was published meanwhile is in the ledger."""
        self._items: deque[Delivered] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Delivered) -> None:
        if len(self._items) >= self.limit:
            self.dropped += len(self._items)
            self._items.clear()
        self._items.append(item)
        self._ready.set()

    def wake_to_resync(self) -> None:
        self.resync = True
        self._ready.set()

    async def take(self, most: int, timeout: float) -> list[Delivered]:
        """Up to `most` deliveries: at once if any are waiting, else the first to arrive
        within `timeout` (TimeoutError when none does; [] when woken only to resync). No wait
        for more: whatever arrives while the runner applies this is the next batch."""
        if not self._items:
            self._ready.clear()
            await asyncio.wait_for(self._ready.wait(), timeout)
        count = min(most, len(self._items))
        return [self._items.popleft() for _ in range(count)]


class Feed:
    def __init__(
        self,
        nats_url: str,
        stream: str,
        subject_prefix: str,
        *,
        max_age_s: float,
        duplicate_window_s: float,
        registry: EventRegistry = DEFAULT_REGISTRY,
        name: str = "leadledger-feed",
        inbox_limit: int = INBOX_LIMIT,
    ) -> None:
        self.nats_url = nats_url
        self.stream = stream
        self.prefix = subject_prefix
        self.max_age_s = max_age_s
        self.duplicate_window_s = duplicate_window_s
        self.registry = registry
        self.name = name
        self.inbox_limit = inbox_limit
        self.subscriptions = 0
        """Times the feed subscribed (1 + resubscriptions after NATS went away)."""
        self.undecodable = 0
        self._inboxes: set[Inbox] = set()
        self._pump: asyncio.Task[None] | None = None
        self._live = asyncio.Event()

    @property
    def live(self) -> bool:
        """Whether the subscription is up."""
        return self._live.is_set()

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[Inbox]:
        """An inbox that receives every event published from (about) now on. Waits, at most
        SUBSCRIBE_WAIT_S, for the subscription: a runner reads the ledger once more after it
        starts listening, so that nothing published before is missed."""
        inbox = Inbox(self.inbox_limit)
        self._inboxes.add(inbox)
        if self._pump is None or self._pump.done():
            self._pump = asyncio.create_task(self._run(), name=f"feed {self.name}")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._live.wait(), SUBSCRIBE_WAIT_S)
            yield inbox
        finally:
            self._inboxes.discard(inbox)
            if not self._inboxes:
                await self._stop()

    async def _stop(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _run(self) -> None:
        failures = 0
        while True:
            nc: NATS | None = None
            try:
                nc = await connect_nats(self.nats_url, name=self.name)
                await self._subscribe(nc)
                failures = 0
                while not nc.is_closed:  # nats-py reconnects by itself a few times first
                    await asyncio.sleep(0.5)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                failures += 1
                log.warning("feed lost NATS; runners read the ledger meanwhile",
                            feed=self.name, error=repr(exc))
            except Exception:  # a bug must not leave the process without a feed
                failures += 1
                log.exception("feed failed; runners read the ledger meanwhile", feed=self.name)
            finally:
                self._live.clear()
                if nc is not None:
                    with contextlib.suppress(Exception):
                        await nc.close()
            await asyncio.sleep(min(5.0, 0.25 * 2**failures) * random.uniform(0.5, 1.0))

    async def _subscribe(self, nc: NATS) -> None:
        js = nc.jetstream()
        await ensure_stream(js, self.stream, self.prefix, max_age_s=self.max_age_s,
                            duplicate_window_s=self.duplicate_window_s)
        await self._delete_legacy_consumers(js)
        last = (await js.stream_info(self.stream)).state.last_seq
        psub = await js.subscribe(
            stream_subjects(self.prefix), stream=self.stream, cb=self._on_message,
            ordered_consumer=True, idle_heartbeat=HEARTBEAT_S,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                  opt_start_seq=last + 1),
        )
        # nats-py recreates a stalled ordered consumer from the last sequence it delivered, which
        # before the first delivery is 0: the whole stream again. Start it where we did.
        jsi = getattr(getattr(psub, "_sub", None), "_jsi", None)
        if jsi is not None and not jsi._sseq:
            jsi._sseq = last
        self.subscriptions += 1
        self._live.set()
        for inbox in self._inboxes:
            inbox.wake_to_resync()

    async def _delete_legacy_consumers(self, js: JetStreamContext) -> None:
        for info in await js.consumers_info(self.stream):
            name = info.config.durable_name or info.name
            if name and LEGACY_CONSUMERS.fullmatch(name):
                await js.delete_consumer(self.stream, name)
                log.info("legacy consumer deleted", stream=self.stream, consumer=name)

    async def _on_message(self, msg: Msg) -> None:
        try:
            item = delivered_of(msg.data, self.registry)
        except (msgspec.DecodeError, ValueError) as exc:
            # Not ours or corrupt: if it hid an event, the next one's link shows the gap.
            self.undecodable += 1
            log.error("undecodable message", subject=msg.subject, error=str(exc))
            return
        for inbox in self._inboxes:
            inbox.put(item)
