"""/v1/attributes: the workspace's custom attribute definitions, their versions, and the
stored values a definition no longer fits.

Any key reads; only an admin key (the role that changes workspace settings) defines, changes or
retires an attribute. A change is a new version: stored values are never rewritten, and the
answer counts the live leads whose value no longer fits (listed by .../violations). Retiring
keeps the values in the ledger and the read model; writes stop accepting the attribute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED
from msgspec import Meta

from api.http.access import require_admin
from api.http.context import reason_from
from api.http.cursors import decode_cursor, encode_cursor
from api.http.docs import ReasonHeader
from api.http.problems import ProblemError, problem_responses
from api.http.representations import MAX_PAGE, SINGLE_LINE, Reason
from api.http.services import Services
from ledger.attribute_definitions import DefinitionVersion, Violation
from ledger.attributes import MAX_STRING, check_definition
from schema.attributes import ATTRIBUTE_NAME_PATTERN, AttributeDefinition, AttributeType

AttributeName = Annotated[str, Parameter(
    description="The attribute's name: lowercase letters, digits and `_`.",
    pattern=ATTRIBUTE_NAME_PATTERN, max_length=63,
)]
WRITE_PROBLEMS = (400, 401, 403, 413, 415, 422, 429)


class AttributeBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An attribute's definition. On PUT `name` may be left out (the path names it)."""

    type: Annotated[AttributeType, Meta(description="string, number, integer, boolean, date "
                                        "(YYYY-MM-DD), datetime (ISO 8601 with a time zone; "
                                        "stored in UTC), enum, or list (of strings).")]
    name: Annotated[str, Meta(pattern=ATTRIBUTE_NAME_PATTERN)] | None = None
    description: Annotated[str, Meta(max_length=1000, pattern=SINGLE_LINE)] = ""
    required: Annotated[bool, Meta(description="Every new lead must give it.")] = False
    personal: Annotated[bool, Meta(description="Personal data: encrypted in the ledger, "
                                   "erased with the lead.")] = False
    queryable: Annotated[bool, Meta(description="Filterable and sortable in GET /v1/leads "
                                    "(`attr.<name>`), and indexed for it.")] = False
    minimum: Annotated[float, Meta(description="Numbers and integers.")] | None = None
    maximum: Annotated[float, Meta(description="Numbers and integers.")] | None = None
    pattern: Annotated[str, Meta(max_length=500, description="A regular expression (Python "
                                 "syntax) strings and list items must contain a match of; "
                                 "anchor it with ^ and $ for a whole-value match.")] | None = None
    max_length: Annotated[int, Meta(ge=1, le=MAX_STRING, description="Strings and list "
                                    "items.")] | None = None
    values: Annotated[list[Annotated[str, Meta(min_length=1, max_length=MAX_STRING)]], Meta(
        max_length=500, description="An enum's values (required), or the values a list's "
        "items may take (optional).")] = []
    reason: Reason | None = None

    def definition(self, name: str) -> AttributeDefinition:
        definition = AttributeDefinition(
            name=name, type=self.type, description=self.description, required=self.required,
            personal=self.personal, queryable=self.queryable, minimum=self.minimum,
            maximum=self.maximum, pattern=self.pattern, max_length=self.max_length,
            values=tuple(self.values),
        )
        check_definition(definition)
        return definition


class AttributeView(msgspec.Struct, kw_only=True, frozen=True):
    name: str
    type: str
    description: str
    required: bool
    personal: bool
    queryable: bool
    minimum: float | None
    maximum: float | None
    pattern: str | None
    max_length: int | None
    values: list[str]
    version: Annotated[int, Meta(description="Each change makes a new version.")]
    retired: Annotated[bool, Meta(description="No longer accepted on writes; stored values "
                                  "stay.")]
    created_at: Annotated[datetime, Meta(description="When this version was made.")]
    created_by: Annotated[str, Meta(description="The API key that made it.")]
    reason: str | None


class AttributeSaved(msgspec.Struct, kw_only=True, frozen=True):
    attribute: AttributeView
    changed: Annotated[bool, Meta(description="False when the definition was already current "
                                  "(no version was added).")]
    violations: Annotated[int, Meta(description="Live leads whose stored value does not fit "
                                    "this version (GET .../violations lists them).")]


class AttributeList(msgspec.Struct, frozen=True):
    data: list[AttributeView]


class ViolationView(msgspec.Struct, frozen=True):
    lead_id: str
    value: Any
    why: str


class ViolationPage(msgspec.Struct, frozen=True):
    data: list[ViolationView]
    next_cursor: str | None = None


class _ViolationCursor(msgspec.Struct, frozen=True, array_like=True):
    version: int
    after: str


ATTRIBUTE_BODY = Body(title="An attribute's definition", examples=[
    Example(summary="A queryable integer", value={
        "name": "seats", "type": "integer", "minimum": 1, "maximum": 100000,
        "queryable": True, "reason": "Seat count drives the enterprise score"}),
    Example(summary="An enum", value={"name": "plan", "type": "enum",
                                      "values": ["free", "pro", "enterprise"], "queryable": True}),
])


def _view(version: DefinitionVersion) -> AttributeView:
    d = version.definition
    return AttributeView(
        name=d.name, type=d.type, description=d.description, required=d.required,
        personal=d.personal, queryable=d.queryable, minimum=d.minimum, maximum=d.maximum,
        pattern=d.pattern, max_length=d.max_length, values=list(d.values), version=d.version,
        retired=version.retired, created_at=version.created_at, created_by=version.created_by,
        reason=version.reason,
    )


class AttributesController(Controller):
    path = "/v1/attributes"
    tags = ("attributes",)

    @get("/", summary="The workspace's custom attributes",
         description="The current version of each attribute (retired ones too with "
         "`retired=true`).", responses=problem_responses(401, 429))
    async def index(self, request: Request, services: Services,
                    retired: Annotated[bool, Parameter(
                        description="Include retired attributes.")] = False) -> AttributeList:
        latest = await services.attributes.latest(request.user.key.workspace)
        return AttributeList(data=[_view(v) for _, v in sorted(latest.items())
                                   if retired or not v.retired])

    @post("/", status_code=HTTP_201_CREATED, summary="Define an attribute (admin)",
          description="A new attribute (409 if one of that name is current; a retired one "
          "comes back as a new version). A queryable attribute's index is built before the "
          "answer.", guards=[require_admin],
          responses=problem_responses(*WRITE_PROBLEMS, 409))
    async def create(self, request: Request, services: Services,
                     data: Annotated[AttributeBody, ATTRIBUTE_BODY],
                     x_reason: ReasonHeader = None) -> AttributeSaved:
        if data.name is None:
            raise ProblemError("validation-failed", "name: required")
        workspace = request.user.key.workspace
        current = (await services.attributes.latest(workspace)).get(data.name)
        if current is not None and not current.retired:
            raise ProblemError("conflict", f"the attribute {data.name!r} exists; change it "
                               f"with PUT /v1/attributes/{data.name}")
        return await _save(request, services, data.definition(data.name), data.reason)

    @get("/{name:str}", summary="One attribute", responses=problem_responses(401, 404, 429))
    async def one(self, request: Request, name: AttributeName, services: Services
                  ) -> AttributeView:
        return _view(await _latest(request, services, name))

    @put("/{name:str}", status_code=HTTP_200_OK, summary="Define or change an attribute (admin)",
         description="Makes this definition current: a new version (unless it already is "
         "current). Stored values are never rewritten; `violations` counts the live leads "
         "whose value does not fit the new version. Making it queryable builds its index.",
         guards=[require_admin], responses=problem_responses(*WRITE_PROBLEMS))
    async def replace(self, request: Request, name: AttributeName, services: Services,
                      data: Annotated[AttributeBody, ATTRIBUTE_BODY],
                      x_reason: ReasonHeader = None) -> AttributeSaved:
        if data.name is not None and data.name != name:
            raise ProblemError("validation-failed", "name: differs from the path's name")
        return await _save(request, services, data.definition(name), data.reason)

    @delete("/{name:str}", status_code=HTTP_200_OK, summary="Retire an attribute (admin)",
            description="A new version that ends the attribute: writes no longer accept it, "
            "stored values stay (in the ledger, the read model and the leads' history). "
            "Defining it again (POST or PUT) brings it back. Retiring a retired attribute "
            "changes nothing.", guards=[require_admin],
            responses=problem_responses(401, 403, 404, 429))
    async def retire(self, request: Request, name: AttributeName, services: Services,
                     x_reason: ReasonHeader = None) -> AttributeView:
        latest = await _latest(request, services, name)
        if latest.retired:
            return _view(latest)
        key = request.user.key
        retired = await services.attributes.retire(
            key.workspace, latest.definition, key.key_id, reason_from(request))
        return _view(retired)

    @get("/{name:str}/versions", summary="Every version of an attribute",
         responses=problem_responses(401, 404, 429))
    async def versions(self, request: Request, name: AttributeName, services: Services
                       ) -> AttributeList:
        found = await services.attributes.versions(request.user.key.workspace, name)
        if not found:
            raise ProblemError("not-found", f"no attribute {name!r} in this workspace")
        return AttributeList(data=[_view(v) for v in found])

    @get("/{name:str}/violations", summary="Stored values the current version does not fit",
         description="Live leads (by id) whose stored value does not fit the attribute's "
         "current version, with the value and why. A page at a time; the cursor is bound to "
         "the version it was issued for.", responses=problem_responses(400, 401, 404, 429))
    async def violations(
        self, request: Request, name: AttributeName, services: Services,
        limit: Annotated[int, Parameter(ge=1, le=MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Parameter(max_length=512)] = None,
    ) -> ViolationPage:
        latest = await _latest(request, services, name)
        after = ""
        if cursor:
            at = decode_cursor(cursor, _ViolationCursor)
            if at.version != latest.definition.version:
                raise ProblemError("bad-request", "the attribute changed since this cursor "
                                   "was issued; start again without it")
            after = at.after
        found, last = await services.attributes.violations(
            request.user.key.workspace, latest.definition, after=after, limit=limit)
        next_cursor = None if last is None else encode_cursor(
            _ViolationCursor(latest.definition.version, last))
        return ViolationPage(data=[_violation(v) for v in found], next_cursor=next_cursor)


def _violation(v: Violation) -> ViolationView:
    return ViolationView(v.lead_id, v.value, v.why)


async def _latest(request: Request, services: Services, name: str) -> DefinitionVersion:
    found = (await services.attributes.latest(request.user.key.workspace)).get(name)
    if found is None:
        raise ProblemError("not-found", f"no attribute {name!r} in this workspace")
    return found


async def _save(request: Request, services: Services, definition: AttributeDefinition,
                body_reason: str | None) -> AttributeSaved:
    key = request.user.key
    store = services.attributes
    saved = await store.save(key.workspace, definition, key.key_id,
                             reason_from(request, body_reason))
    current = saved.version.definition
    count = await store.count_violations(key.workspace, current)
    return AttributeSaved(attribute=_view(saved.version), changed=saved.changed,
                          violations=count)
