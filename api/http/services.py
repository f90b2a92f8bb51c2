"""What the HTTP handlers use, built once per app from the runtime (the composition root)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.datastructures import State

from api.http.access import RateLimiter
from api.http.idempotency import IdempotencyStore
from api.http.settings import HttpSettings
from api.http.writes import LeadWriter
from api.keys import KeyStore
from api.runtime import Runtime
from ledger.attribute_definitions import AttributeDefinitions
from ledger.scoring_models import ScoringModels
from processors.outbound import OutboundGuard
from processors.providers.firmographics import Firmographics
from processors.providers.http_configs import EnrichmentConfigs
from processors.rescore import Rescorer, max_per_s_from_env
from processors.routing_store import RoutingStore


@dataclass(frozen=True)
class Services:
    runtime: Runtime
    settings: HttpSettings
    keys: KeyStore
    writer: LeadWriter
    idempotency: IdempotencyStore
    limiter: RateLimiter
    attributes: AttributeDefinitions
    scoring: ScoringModels
    rescorer: Rescorer
    """Runs the rescore jobs this process's activations start (api/http/scoring.py)."""
    routing: RoutingStore
    outbound: OutboundGuard
    enrichment: EnrichmentConfigs
    firmographics: Firmographics

    @classmethod
    def build(cls, runtime: Runtime, settings: HttpSettings) -> Services:
        return cls(
            runtime=runtime,
            settings=settings,
            keys=KeyStore(runtime.pool),
            writer=LeadWriter(
                runtime.store, runtime.commands, runtime.ingestor, runtime.quality,
            ),
            idempotency=IdempotencyStore(
                runtime.pool, ttl_s=settings.idempotency_ttl_s, lease_s=settings.idempotency_lease_s
            ),
            limiter=RateLimiter(),
            attributes=AttributeDefinitions(runtime.pool),
            scoring=(scoring := ScoringModels(runtime.pool)),
            outbound=runtime.outbound,
            enrichment=EnrichmentConfigs(runtime.pool, runtime.keyring),
            firmographics=Firmographics(runtime.pool),
            rescorer=Rescorer(runtime.store, runtime.commands, scoring, runtime.pool,
                              max_per_s=max_per_s_from_env()),
            routing=RoutingStore(runtime.pool),
        )


def provide_services(state: State) -> Services:
    """Litestar dependency `services`."""
    return state.services  # type: ignore[no-any-return]
