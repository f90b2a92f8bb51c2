"""What every event records besides its facts: who, through what, why, and its causal ids."""

from __future__ import annotations

import msgspec


class Actor(msgspec.Struct, kw_only=True, frozen=True):
    key_id: str
    role: str


SYSTEM_ACTOR = Actor(key_id="system", role="system")


class EventMetadata(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Stored beside each event (never personal data). `recorded_at` is the ledger's own clock."""

    actor: Actor
    source: str
    request_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    reason: str | None = None
