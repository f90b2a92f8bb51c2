"""The composition root: builds pools, keyring, store and clients from Settings, once.

Nothing opens a socket at import time; `open_runtime` does it, and `Runtime.close` undoes it.
Interfaces (HTTP app, CLI, workers) receive a Runtime and never build their own connections.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from api.settings import Settings
from ledger.crypto import Keyring, parse_master_key
from ledger.database import open_pool
from ledger.email_dns import MxChecker, parse_nameservers
from ledger.identity import IdentityHasher
from ledger.ingest import Ingestor
from ledger.lead_commands import LeadCommands
from ledger.migrations import migrate
from ledger.quality_settings import QualitySettings
from ledger.store import EventStore
from processors.outbound import OutboundGuard
from projections.candidates import CandidateFinder


@dataclass
class Runtime:
    settings: Settings
    database_url: str
    nats_url: str
    pool: AsyncConnectionPool
    keyring: Keyring
    store: EventStore
    commands: LeadCommands
    ingestor: Ingestor
    """The creation path every interface shares: normalize, validate, dedup, create."""
    quality: QualitySettings
    outbound: OutboundGuard
    """The guard every outbound request of the processing plane goes through."""

    async def close(self) -> None:
        await self.pool.close()


async def open_runtime(
    settings: Settings, database_url: str, nats_url: str, master_key: str, *, migrate_first: bool = True
) -> Runtime:
    """`database_url`, `nats_url` and `master_key` are resolved by the caller (external
    settings, or the embedded servers' addresses and key file)."""
    if migrate_first:
        await migrate(database_url)
    pool = await open_pool(database_url, max_size=settings.pool_max_size)
    return build_runtime(settings, database_url, nats_url, master_key, pool)


def build_runtime(
    settings: Settings, database_url: str, nats_url: str, master_key: str,
    pool: AsyncConnectionPool,
) -> Runtime:
    """Wires everything over a pool (opened or not yet: nothing here does I/O)."""
    master = parse_master_key(master_key)
    keyring = Keyring(master)
    store = EventStore(pool, keyring)
    dedup = settings.dedup == "on"
    commands = LeadCommands(store, IdentityHasher(master) if dedup else None)
    return Runtime(
        settings=settings,
        database_url=database_url,
        nats_url=nats_url,
        pool=pool,
        keyring=keyring,
        store=store,
        commands=commands,
        ingestor=Ingestor(commands, CandidateFinder(pool), fuzzy=dedup, mx=MxChecker(
            parse_nameservers(settings.dns_nameservers), timeout_s=settings.dns_timeout_s,
        )),
        quality=QualitySettings(pool),
        outbound=OutboundGuard(pool),
    )
