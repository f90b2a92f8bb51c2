"""Finishing touches on the generated OpenAPI document, where Litestar's inference falls short.

* The batch endpoint decodes its items one by one (so a bad item cannot fail the whole batch);
  its body is typed `list[Any]` in code, documented here as a list of LeadCreate.
* Public routes (health, readiness, problem types) need no API key: `security: []`.
* Problems any authenticated operation can answer (a malformed header, no key, an invalid
  parameter, the rate limit, a body too large or not JSON) are documented on every one.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference, Schema

from api.http.problems import PROBLEM_MEDIA_TYPE, PROBLEM_TYPES, problem_type_uri

ANY_OPERATION = (400, 401, 422, 429)
WITH_BODY = (413, 415)
PUBLIC_PATHS = ("/health", "/ready", "/problems", "/problems/{slug}")


def finish_openapi(app: Litestar) -> OpenAPI:
    document = app.openapi_schema
    for path in PUBLIC_PATHS:
        item = (document.paths or {}).get(path)
        if item is not None and item.get is not None:
            item.get.security = []
    for path, item in (document.paths or {}).items():
        if path in PUBLIC_PATHS or path.startswith("/schema"):
            continue
        for operation in (item.get, item.post, item.put, item.patch, item.delete):
            if operation is None:
                continue
            statuses = ANY_OPERATION + (WITH_BODY if operation.request_body else ())
            responses = operation.responses if operation.responses is not None else {}
            for status in statuses:
                responses.setdefault(str(status), _problem_response(status))
            operation.responses = responses
    batch = (document.components.schemas or {}).get("BatchRequest")
    if isinstance(batch, Schema) and batch.properties and "leads" in batch.properties:
        leads = batch.properties["leads"]
        if isinstance(leads, Schema):
            leads.items = Reference(ref="#/components/schemas/LeadCreate")
    return document


def _problem_response(status: int) -> OpenAPIResponse:
    types = [p for p in PROBLEM_TYPES.values() if p.status == status]
    return OpenAPIResponse(
        description="; ".join(f"`{problem_type_uri(p.slug)}`: {p.description}" for p in types),
        content={PROBLEM_MEDIA_TYPE: OpenAPIMediaType(
            schema=Reference(ref="#/components/schemas/Problem"))},
    )
