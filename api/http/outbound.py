"""/v1/outbound/allowlist: the non-public networks the workspace's webhooks and enrichment
providers may call (everything else non-public is refused: processors/outbound.py). Admin only.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, get, put
from msgspec import Meta

from api.http.access import require_admin
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.services import Services
from processors.outbound import MAX_NETWORKS, parse_networks


class Allowlist(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    networks: Annotated[list[Annotated[str, Meta(max_length=64)]], Meta(
        max_length=MAX_NETWORKS,
        description="CIDRs or addresses, e.g. `10.20.0.0/16`, `127.0.0.1`, `::1`.",
        examples=[["10.20.0.0/16"]])]


class OutboundController(Controller):
    path = "/v1/outbound/allowlist"
    tags = ("workspace",)
    guards = (require_admin,)

    @get("/", summary="Non-public networks processors may call (admin)",
         responses=problem_responses(401, 403, 429))
    async def show(self, request: Request, services: Services) -> Allowlist:
        networks = await services.outbound.allowlist(request.user.key.workspace)
        return Allowlist(networks=[str(n) for n in networks])

    @put("/", summary="Replace the allow-list (admin)",
         description="Webhooks and enrichment providers never call private, loopback or "
         "link-local addresses unless their network is listed here.",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def replace(self, request: Request, data: Allowlist, services: Services) -> Allowlist:
        try:
            parse_networks(data.networks)
        except ValueError as exc:
            raise ProblemError("validation-failed", str(exc), errors=[
                FieldError(field="networks", message=str(exc))]) from None
        saved = await services.outbound.set_allowlist(request.user.key.workspace, data.networks)
        return Allowlist(networks=[str(n) for n in saved])
