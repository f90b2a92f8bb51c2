"""Request headers and response headers the API documents on its operations (OpenAPI)."""

from __future__ import annotations

from typing import Annotated

from litestar.datastructures import ResponseHeader
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter

IdempotencyKeyHeader = Annotated[
    str | None,
    Parameter(
        header="Idempotency-Key", required=False, max_length=257,
        description="Makes a retry safe (draft-ietf-httpapi-idempotency-key): the same key with "
        "the same request returns the stored response; with a different request, 422; while "
        "the first is in flight, 409. Keys are scoped to the API key and kept 24 hours.",
        examples=[],
    ),
]
ReasonHeader = Annotated[
    str | None,
    Parameter(
        header="X-Reason", required=False, max_length=1000,
        description="Why this change is made; recorded in the lead's history (a `reason` "
        "field in the body takes precedence).",
    ),
]
IfMatchHeader = Annotated[
    str | None,
    Parameter(
        header="If-Match", required=False,
        description='The lead\'s ETag (its version, e.g. `"3"`); the write applies only if the '
        "lead is still at that version, else 412. `*` matches any version.",
    ),
]
IfNoneMatchHeader = Annotated[
    str | None,
    Parameter(
        header="If-None-Match", required=False,
        description="An ETag you hold: 304 Not Modified if the lead is still at that version.",
    ),
]
ConsistencyTokenHeader = Annotated[
    str | None,
    Parameter(
        header="X-Consistency-Token", required=False,
        description="The X-Consistency-Token of a write: the read waits (bounded) until the read "
        "model includes that write, else 503 with Retry-After.",
    ),
]

ETAG = ResponseHeader(
    name="ETag", documentation_only=True, description='The lead\'s version, e.g. `"3"`.'
)
CONSISTENCY = ResponseHeader(
    name="X-Consistency-Token", documentation_only=True,
    description="The ledger position of the lead's latest event; send it on a read to read "
    "your own write.",
)
LOCATION = ResponseHeader(
    name="Location", documentation_only=True, description="The new resource's URL."
)
WRITE_HEADERS = [ETAG, CONSISTENCY]


LEAD_EXAMPLE = {
    "first_name": "Ada", "last_name": "Lovelace", "email": "ada@analytical.example",
    "phone": "+442071838750", "company": "Analytical Engines Ltd",
    "title": "Head of Engineering", "website": "https://analytical.example", "country": "GB",
    "city": "London", "source": "web_form", "external_id": "crm-00042", "stage": "lead",
    "owner": "owner@seller.example", "tags": ["webinar-2025"],
    "reason": "Requested a demo at the webinar",
}
CREATE_BODY = Body(
    title="A new lead",
    examples=[Example(summary="A lead from a web form", value=LEAD_EXAMPLE)],
)
PATCH_BODY = Body(
    title="Changes to a lead",
    examples=[
        Example(summary="Qualify and reassign",
                value={"stage": "mql", "owner": "sam@seller.example", "title": "CTO",
                       "reason": "Qualified on a discovery call"}),
        Example(summary="Clear a field, replace the tags",
                value={"phone": None, "tags": ["enterprise", "hot"]}),
    ],
)
BATCH_BODY = Body(
    title="Up to 1,000 leads",
    examples=[Example(summary="Two leads from an import",
                      value={"leads": [LEAD_EXAMPLE, {**LEAD_EXAMPLE, "first_name": "Grace",
                                                      "last_name": "Hopper",
                                                      "email": "grace@navy.example",
                                                      "phone": None, "external_id": None}],
                             "reason": "Trade-show import"})],
)
