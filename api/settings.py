"""Settings: one typed object, read once from `LEADLEDGER_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ledger.email_dns import DnsConfigError, parse_nameservers


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    database_url: str | None = None
    """PostgreSQL; None means embedded PostgreSQL under `data_dir`."""
    nats_url: str | None = None
    """NATS with JetStream; None means an embedded nats-server under `data_dir`."""
    master_key: str | None = None
    """Base64 of 32 bytes wrapping every subject key; embedded mode generates one."""
    data_dir: Path = Path(".leadledger")
    host: str = "127.0.0.1"
    port: int = 8000
    stream: str = "LEADLEDGER"
    """The JetStream stream that carries the ledger."""
    subject_prefix: str = "leadledger"
    stream_max_age_days: float = 7.0
    """How long NATS keeps ledger messages; consumers further behind catch up from the ledger."""
    duplicate_window_s: float = 600.0
    log_format: str = "auto"  # auto (console on a terminal), json, console
    log_level: str = "info"
    pool_max_size: int = 16
    dedup: Literal["on", "off"] = "on"
    """`off` is for benchmarks and trusted one-off loads only: this process claims no identity
    keys and looks for no likely duplicates, and leads it creates stay invisible to dedup later
    (their keys are never in the identity index)."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop of `up` and `python -m api.workers` (api/event_loop.py)."""
    worker_processes: Annotated[int, msgspec.Meta(ge=0, le=8)] = 2
    """Processes `up` runs its workers in, beside the HTTP server's (0: in the HTTP server's own
    process). Python runs one thread at a time per process: apart, HTTP and the processing plane
    share the cores (api/worker_processes.py). Two by default: at 40 leads/s on 2 cores, one
    worker process was saturated (enriched p50 9.6 s) where two kept up (0.49 s)."""
    reactor_partitions: int = 1
    """How many partitions each reactor's leads are split into (processors/reactor.py)."""
    reactor_concurrency: int = 16
    """Leads one reactor partition works on at once."""
    dns_nameservers: str | None = None
    """The MX check's resolvers, `address[:port]` separated by commas (`[v6]:port`); None means
    the system's (resolv.conf). Only workspaces with `email_mx_check` on make lookups."""
    dns_timeout_s: float = 2.0
    """How long one MX check may take before its outcome is unknown (and the write goes on)."""


_ENV = {
    "database_url": "LEADLEDGER_DATABASE_URL",
    "nats_url": "LEADLEDGER_NATS_URL",
    "master_key": "LEADLEDGER_MASTER_KEY",
    "data_dir": "LEADLEDGER_DATA_DIR",
    "host": "LEADLEDGER_HOST",
    "port": "LEADLEDGER_PORT",
    "stream": "LEADLEDGER_STREAM",
    "subject_prefix": "LEADLEDGER_SUBJECT_PREFIX",
    "stream_max_age_days": "LEADLEDGER_STREAM_MAX_AGE_DAYS",
    "duplicate_window_s": "LEADLEDGER_DUPLICATE_WINDOW_S",
    "log_format": "LEADLEDGER_LOG_FORMAT",
    "log_level": "LEADLEDGER_LOG_LEVEL",
    "pool_max_size": "LEADLEDGER_POOL_MAX_SIZE",
    "dedup": "LEADLEDGER_DEDUP",
    "event_loop": "LEADLEDGER_EVENT_LOOP",
    "worker_processes": "LEADLEDGER_WORKER_PROCESSES",
    "reactor_partitions": "LEADLEDGER_REACTOR_PARTITIONS",
    "reactor_concurrency": "LEADLEDGER_REACTOR_CONCURRENCY",
    "dns_nameservers": "LEADLEDGER_DNS_NAMESERVERS",
    "dns_timeout_s": "LEADLEDGER_DNS_TIMEOUT_S",
}


class SettingsError(ValueError):
    pass


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Reads the environment once; explicit overrides (CLI flags) win."""
    env = os.environ if env is None else env
    raw: dict[str, object] = {f: env[v] for f, v in _ENV.items() if env.get(v)}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
        parse_nameservers(settings.dns_nameservers)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from None
    except DnsConfigError as exc:
        raise SettingsError(f"invalid setting: LEADLEDGER_DNS_NAMESERVERS: {exc}") from None
    return settings
