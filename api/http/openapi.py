"""Finishing touches on the generated OpenAPI document, where Litestar's inference falls short.

* The batch endpoint decodes its items one by one (so a bad item cannot fail the whole batch);
  its body is typed `list[Any]` in code, documented here as a list of LeadCreate.
* Public routes (health, readiness, problem types) need no API key: `security: []`.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPI, Reference, Schema

PUBLIC_PATHS = ("/health", "/ready", "/problems", "/problems/{slug}")
BATCH_PATH = "/v1/leads/batch"


def finish_openapi(app: Litestar) -> OpenAPI:
    document = app.openapi_schema
    for path in PUBLIC_PATHS:
        item = (document.paths or {}).get(path)
        if item is not None and item.get is not None:
            item.get.security = []
    batch = (document.paths or {}).get(BATCH_PATH)
    if batch is not None and batch.post is not None and batch.post.request_body is not None:
        body = batch.post.request_body
        content = body.content.get("application/json") if not isinstance(body, Reference) else None
        schema = content.schema if content is not None else None
        components = document.components.schemas or {}
        if isinstance(schema, Reference):
            schema = components.get(schema.ref.rsplit("/", 1)[-1])
        if isinstance(schema, Schema) and schema.properties and "leads" in schema.properties:
            leads = schema.properties["leads"]
            if isinstance(leads, Schema):
                leads.items = Reference(ref="#/components/schemas/LeadCreate")
    return document
