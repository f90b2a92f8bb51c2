"""/v1/leads/{id}/tags/{tag}: tag and untag a lead. Both are idempotent: tagging a tagged lead
or untagging an untagged one changes nothing and answers with the lead as it is."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from api.http.docs import WRITE_HEADERS, IfMatchHeader, ReasonHeader
from api.http.leads import WRITE_PROBLEMS, LeadId, single_command
from api.http.problems import problem_responses
from api.http.representations import Lead
from api.http.services import Services
from schema.commands import TagLead, UntagLead

TagPath = Annotated[
    str,
    Parameter(description="1-64 lowercase letters, digits or `_:.-`, starting alphanumeric.",
              max_length=64),
]


class TagsController(Controller):
    path = "/v1/leads/{lead_id:str}/tags"
    tags = ["tags"]

    @put(
        "/{tag:str}",
        summary="Tag a lead",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def tag(
        self,
        request: Request,
        lead_id: LeadId,
        tag: TagPath,
        services: Services,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        return await single_command(request, services, lead_id, TagLead(tag=tag))

    @delete(
        "/{tag:str}",
        status_code=HTTP_200_OK,
        summary="Untag a lead",
        response_headers=WRITE_HEADERS,
        responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def untag(
        self,
        request: Request,
        lead_id: LeadId,
        tag: TagPath,
        services: Services,
        if_match_: IfMatchHeader = None,
        x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        return await single_command(request, services, lead_id, UntagLead(tag=tag))
