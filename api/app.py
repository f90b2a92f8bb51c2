"""The HTTP application: `create_app(runtime)` builds the Litestar app, its routes and machinery.

Layers, outermost first: request ids and the request log line (every request, 404s included);
routing; authentication, read/write by role and rate limits (every route but the public ones);
the handlers. Every error leaves as RFC 9457 problem details. The OpenAPI 3.1 document is at
/schema/openapi.json, browsable at /schema (Scalar) and /schema/swagger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from litestar import Litestar, Router
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme, Tag

from api.http.access import AccessMiddleware
from api.http.activities import ActivitiesController
from api.http.attributes import AttributesController
from api.http.batch import BatchController
from api.http.bounces import BounceController
from api.http.context import RequestContextMiddleware
from api.http.dead_letters import DeadLettersController
from api.http.duplicates import DuplicatesController, MergeController
from api.http.enrichment import EnrichLeadController, EnrichmentController
from api.http.events import EventsController
from api.http.health import HealthController
from api.http.history import HistoryController
from api.http.leads import LeadController
from api.http.notes import NotesController
from api.http.openapi import finish_openapi
from api.http.outbound import OutboundController
from api.http.problems import handle_exception
from api.http.quality import QualityController
from api.http.routing import RoutingController
from api.http.scores import ScoresController
from api.http.scoring import ScoringController
from api.http.services import Services, provide_services
from api.http.settings import HttpSettings, load_http_settings
from api.http.tags import TagsController
from api.http.tasks import TasksController
from api.http.vocabularies import VocabulariesController
from api.http.webhooks import WebhooksController
from api.http.what_if import WhatIfController
from api.http.workspace import KeysController, WorkspaceController
from api.runtime import Runtime

log = structlog.get_logger("leadledger.http")
PURGE_EVERY_S = 600.0

DESCRIPTION = """\
The HTTP API of leadledger, the event-sourced system of record for B2B leads.

* **Auth**: `Authorization: Bearer <key>`; each key belongs to one workspace and one role
  (admin, ops, marketing, sales, agent read and write; analyst reads only).
* **Errors**: RFC 9457 `application/problem+json`; `type` is stable (see `/problems`).
* **Writes** answer with the lead's `ETag` (its version) and an `X-Consistency-Token`; send the
  ETag as `If-Match` to write only over the version you read (412 otherwise), and the token on a
  read to see your own write (the read waits, bounded, or answers 503 with Retry-After).
* **Retries**: send an `Idempotency-Key` on POSTs that create (leads, batches, notes).
* **Pages**: opaque cursors (`next_cursor` → `cursor`), `limit` up to 1,000; no offsets.
* **Rate limits**: per key, announced in `RateLimit-Policy` and `RateLimit` headers; 429 with
  Retry-After past the quota.
"""


def create_app(runtime: Runtime, settings: HttpSettings | None = None) -> Litestar:
    settings = settings or load_http_settings()
    services = Services.build(runtime, settings)
    access = DefineMiddleware(
        AccessMiddleware, keys=services.keys, limiter=services.limiter,
        default_limit=settings.rate_limit_per_minute,
    )
    api = Router(
        path="/",
        route_handlers=[
            LeadController, HistoryController, NotesController, TagsController,
            EventsController, WorkspaceController, KeysController, HealthController,
            MergeController, DuplicatesController, BounceController, QualityController,
            VocabulariesController, AttributesController,
            ActivitiesController, ScoresController, ScoringController, WhatIfController,
            DeadLettersController, OutboundController,
            EnrichLeadController, EnrichmentController,
            RoutingController, TasksController,
            WebhooksController,
        ],
        request_max_body_size=settings.max_body_bytes,
    )
    batch = Router(
        path="/", route_handlers=[BatchController],
        request_max_body_size=settings.max_batch_body_bytes,
    )

    @contextlib.asynccontextmanager
    async def purge_idempotency_keys(_: Litestar) -> AsyncIterator[None]:
        task = asyncio.create_task(_purge_loop(services))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @contextlib.asynccontextmanager
    async def stop_rescores(_: Litestar) -> AsyncIterator[None]:
        # A job stopped here stays `running`; a worker process resumes it (processors/rescore.py).
        try:
            yield
        finally:
            await services.rescorer.close()

    app = Litestar(
        route_handlers=[api, batch],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        middleware=[access],
        exception_handlers={Exception: handle_exception},
        lifespan=[purge_idempotency_keys, stop_rescores],
        openapi_config=OpenAPIConfig(
            title="leadledger API",
            version="1.0.0",
            description=DESCRIPTION,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(security_schemes={
                "bearer": SecurityScheme(
                    type="http", scheme="bearer", bearer_format="llk_<key id>_<secret>",
                    description="An API key from `leadledger keys create`.",
                )
            }),
            security=[{"bearer": []}],
            tags=[
                Tag(name="leads", description="Create, read, change, archive and list leads."),
                Tag(name="history", description="The audit trail of a lead."),
                Tag(name="notes", description="Notes on a lead."),
                Tag(name="tags", description="Tags on a lead."),
                Tag(name="duplicates", description="Merging leads and the review queue of "
                    "likely duplicates."),
                Tag(name="quality", description="Data quality: the workspace's scores and "
                    "problems, and its ingestion policy (duplicates, unknown values, required "
                    "fields)."),
                Tag(name="vocabularies", description="Controlled vocabularies with synonyms, "
                    "built-in and the workspace's own."),
                Tag(name="attributes", description="Custom attributes: the workspace's "
                    "definitions of its leads' extra fields, versioned, and the stored values a "
                    "change no longer fits."),
                Tag(name="activities", description="Behavioural signals of a lead: page views, "
                    "form submits, email opens and clicks, demo requests, meetings..."),
                Tag(name="scoring", description="Scoring models (versioned, immutable once "
                    "saved), activation and background rescoring, and each lead's score with "
                    "its decomposition and history."),
                Tag(name="routing", description="Assignment rules (CEL, in order), teams with "
                    "round-robin or least-loaded and capacity, territories, the fallback queue "
                    "and the follow-up SLA."),
                Tag(name="tasks", description="Follow-up tasks: list, complete, reassign."),
                Tag(name="enrichment", description="Enrichment: re-enrich a lead on demand, "
                    "the workspace's HTTP providers and settings, and its firmographics table."),
                Tag(name="events", description="The ledger as a change feed."),
                Tag(name="webhooks", description="Standard Webhooks: endpoints with event-type "
                    "and CEL filters, signing secrets and their rotation, the delivery log and "
                    "redelivery."),
                Tag(name="workspace", description="The workspace's policy and API keys."),
                Tag(name="operations", description="Health, readiness, problem types."),
            ],
            use_handler_docstrings=False,
        ),
        logging_config=None,
    )
    app.state.services = services
    app.state.runtime = runtime
    finish_openapi(app)
    # Request ids and the request log wrap routing too, so unmatched routes get them as well.
    app.asgi_handler = RequestContextMiddleware(app.asgi_handler)
    return app


async def _purge_loop(services: Services) -> None:
    while True:
        await asyncio.sleep(PURGE_EVERY_S)
        try:
            purged = await services.idempotency.purge_expired()
            if purged:
                log.info("expired idempotency keys purged", count=purged)
        except Exception:
            log.warning("purging idempotency keys failed", exc_info=True)
