"""HTTP settings: one typed object, read once from `LEADLEDGER_HTTP_*` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec


class HttpSettings(msgspec.Struct, kw_only=True, frozen=True):
    rate_limit_per_minute: int = 6_000
    """Default quota of one API key; a key may carry its own (`keys create --rate-limit`)."""
    max_body_bytes: int = 64 * 1024
    max_batch_body_bytes: int = 4 * 1024 * 1024
    consistency_wait_s: float = 2.0
    """How long a read waits for the read model to reach a consistency token before 503."""
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lease_s: int = 60
    """After this long an unfinished request's claim may be taken over by a retry."""
    ready_max_projection_lag: int = 10_000
    """/ready fails while the lead projection is more events than this behind the ledger."""
    check_nats: bool = True


_ENV = {
    "rate_limit_per_minute": "LEADLEDGER_HTTP_RATE_LIMIT",
    "max_body_bytes": "LEADLEDGER_HTTP_MAX_BODY_BYTES",
    "max_batch_body_bytes": "LEADLEDGER_HTTP_MAX_BATCH_BODY_BYTES",
    "consistency_wait_s": "LEADLEDGER_HTTP_CONSISTENCY_WAIT_S",
    "idempotency_ttl_s": "LEADLEDGER_HTTP_IDEMPOTENCY_TTL_S",
    "idempotency_lease_s": "LEADLEDGER_HTTP_IDEMPOTENCY_LEASE_S",
    "ready_max_projection_lag": "LEADLEDGER_HTTP_READY_MAX_LAG",
    "check_nats": "LEADLEDGER_HTTP_CHECK_NATS",
}


def load_http_settings(env: Mapping[str, str] | None = None, **overrides: object) -> HttpSettings:
    env = os.environ if env is None else env
    raw: dict[str, object] = {f: env[v] for f, v in _ENV.items() if env.get(v)}
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return msgspec.convert(raw, HttpSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid HTTP setting: {exc}") from None
