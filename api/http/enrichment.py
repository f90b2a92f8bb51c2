"""Enrichment over HTTP: enrich a lead on demand, the workspace's HTTP providers and settings,
and its firmographics table.

- `POST /v1/leads/{id}/enrich` appends `LeadEnrichmentRequested` through the lead writer (202:
  the enrichment processor acts on it within moments; the consistency token lets a read wait
  for the request, and the lead's history shows the results as they land).
- `/v1/enrichment/providers[/{name}]` (admin): external providers; the auth header's value is
  write-only (stored encrypted, answered as `has_secret`).
- `/v1/enrichment/settings` (admin): whether enrichment may overwrite what a person entered.
- `/v1/enrichment/firmographics`: load a CSV (`text/csv`; admin or ops), look a domain up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.params import Parameter
from litestar.status_codes import HTTP_202_ACCEPTED, HTTP_204_NO_CONTENT
from msgspec import UNSET, Meta, UnsetType

from api.http.access import require_admin
from api.http.context import write_metadata
from api.http.docs import WRITE_HEADERS, ReasonHeader
from api.http.lead_views import lead_reply
from api.http.leads import WRITE_PROBLEMS, LeadId, require_lead_id
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.representations import Lead
from api.http.services import Services
from ledger.normalize import website_domain
from processors.providers.firmographics import LoadReport, StoredFirmographic
from processors.providers.firmographics_csv import InvalidCsv
from processors.providers.http_configs import StoredProvider
from processors.providers.http_mapping import (
    BUILTIN_NAMES,
    NAME_PATTERN,
    HttpProviderConfig,
    problems,
)
from schema.commands import RequestEnrichment

MAX_CSV_BYTES = 16 * 1024 * 1024
NAME_RULE = ("lowercase letters, digits, - or _, starting with a letter, up to 40, and not a "
             "built-in provider's name")
ProviderName = Annotated[str, Parameter(description="The provider's name.", max_length=40)]


class EnrichRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    providers: Annotated[list[str], Meta(
        max_length=50, description="Only these providers (default: all of them).")] = []


class ProviderSpec(HttpProviderConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A provider's configuration as sent; `auth_secret` is write-only."""

    auth_secret: Annotated[str, Meta(
        max_length=4096, description="The auth header's value (an API key). Omit it to keep the "
        "stored one; null removes it. Stored encrypted, never returned.")] | None | UnsetType = (
        UNSET)
    enabled: bool = True


class ProviderView(HttpProviderConfig, frozen=True, kw_only=True):
    name: str
    enabled: bool
    has_secret: Annotated[bool, Meta(description="Whether an auth secret is stored.")]
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None


class ProviderList(msgspec.Struct, frozen=True):
    data: list[ProviderView]
    builtin: Annotated[list[str], Meta(description="Built-in providers: always on.")]


class EnrichmentSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    overwrite: Annotated[bool, Meta(description="Enrichment may replace values a person "
                                    "entered (default false: it only fills empty fields).")]


def _view(stored: StoredProvider) -> ProviderView:
    config = msgspec.structs.asdict(stored.config)
    return ProviderView(
        name=stored.name, enabled=stored.enabled, has_secret=stored.has_secret,
        created_at=stored.created_at, updated_at=stored.updated_at,
        updated_by=stored.updated_by, **config,
    )


def _config_of(spec: ProviderSpec) -> HttpProviderConfig:
    return HttpProviderConfig(**{
        name: getattr(spec, name) for name in HttpProviderConfig.__struct_fields__})


def _invalid(found: list[tuple[str, str]]) -> ProblemError:
    return ProblemError("validation-failed", "the provider's configuration is not usable",
                        errors=[FieldError(field=f, message=m) for f, m in found])


def require_admin_or_ops(connection, _handler) -> None:  # type: ignore[no-untyped-def]
    verified = connection.user
    if verified is None or verified.key.role not in ("admin", "ops"):
        raise ProblemError("forbidden", "only an admin or ops key may load firmographics")


class EnrichLeadController(Controller):
    path = "/v1/leads/{lead_id:str}/enrich"
    tags = ("enrichment",)

    @post(
        "/", status_code=HTTP_202_ACCEPTED, summary="Enrich a lead again",
        description="Asks the enrichment processor to run the lead's providers again (all, or "
        "those named): appends `LeadEnrichmentRequested` and answers 202 with the lead, its "
        "ETag and the X-Consistency-Token of the request. The findings follow as "
        "`LeadEnriched` events (the lead's `enrichment` and history).",
        response_headers=WRITE_HEADERS, responses=problem_responses(*WRITE_PROBLEMS),
    )
    async def enrich(
        self, request: Request, lead_id: LeadId, services: Services,
        data: EnrichRequest | None = None, x_reason: ReasonHeader = None,
    ) -> Response[Lead]:  # type: ignore[valid-type]
        require_lead_id(lead_id)
        wanted = tuple(dict.fromkeys(data.providers)) if data else ()
        if wanted:
            known = {*BUILTIN_NAMES, *(p.name for p in await services.enrichment.list(
                request.user.key.workspace))}
            unknown = [p for p in wanted if p not in known]
            if unknown:
                raise ProblemError("validation-failed", f"no provider named {unknown[0]!r}",
                                   errors=[FieldError(field="providers", message="known: "
                                                      + ", ".join(sorted(known)))])
        result = await services.writer.execute(
            request.user.key.workspace, lead_id, RequestEnrichment(providers=wanted),
            write_metadata(request),
        )
        return lead_reply(result, HTTP_202_ACCEPTED).response()


class EnrichmentController(Controller):
    path = "/v1/enrichment"
    tags = ("enrichment",)

    @get("/providers", guards=[require_admin], summary="The workspace's HTTP providers (admin)",
         responses=problem_responses(401, 403, 429))
    async def providers(self, request: Request, services: Services) -> ProviderList:
        stored = await services.enrichment.list(request.user.key.workspace)
        return ProviderList(data=[_view(p) for p in stored], builtin=list(BUILTIN_NAMES))

    @get("/providers/{name:str}", guards=[require_admin], summary="One HTTP provider (admin)",
         responses=problem_responses(401, 403, 404, 429))
    async def provider(self, request: Request, name: ProviderName,
                       services: Services) -> ProviderView:
        stored = await services.enrichment.get(request.user.key.workspace, name)
        if stored is None:
            raise ProblemError("not-found", f"no HTTP provider named {name!r}")
        return _view(stored)

    @put("/providers/{name:str}", guards=[require_admin],
         summary="Create or replace an HTTP provider (admin)",
         description="`url` is a template with the lead's values: `{email}`, `{domain}`, "
         "`{email_domain}`, `{website_domain}`, `{phone}`, `{company}`, `{country}`, "
         "`{first_name}`, `{last_name}`, `{lead_id}`. `mapping` takes JSON paths of the answer "
         "to enrichment values (`value`) or lead fields to fill (`field`). Calls go through the "
         "outbound guard (private addresses need `PUT /v1/outbound/allowlist`).",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def save(self, request: Request, name: ProviderName, data: ProviderSpec,
                   services: Services) -> ProviderView:
        found: list[tuple[str, str]] = []
        if not NAME_PATTERN.match(name) or name in BUILTIN_NAMES:
            found.append(("path:name", NAME_RULE))
        config = _config_of(data)
        found += problems(config)
        if found:
            raise _invalid(found)
        stored = await services.enrichment.save(
            request.user.key.workspace, name, config, enabled=data.enabled,
            secret=data.auth_secret if isinstance(data.auth_secret, str) else None,
            keep_secret=data.auth_secret is UNSET, actor=request.user.key.key_id,
        )
        return _view(stored)

    @delete("/providers/{name:str}", guards=[require_admin], status_code=HTTP_204_NO_CONTENT,
            summary="Remove an HTTP provider (admin)",
            responses=problem_responses(401, 403, 404, 429))
    async def remove(self, request: Request, name: ProviderName, services: Services) -> None:
        if not await services.enrichment.delete(request.user.key.workspace, name):
            raise ProblemError("not-found", f"no HTTP provider named {name!r}")

    @get("/settings", guards=[require_admin], summary="Enrichment settings (admin)",
         responses=problem_responses(401, 403, 429))
    async def settings(self, request: Request, services: Services) -> EnrichmentSettings:
        return EnrichmentSettings(
            overwrite=await services.enrichment.overwrite(request.user.key.workspace))

    @put("/settings", guards=[require_admin], summary="Change enrichment settings (admin)",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def save_settings(self, request: Request, data: EnrichmentSettings,
                            services: Services) -> EnrichmentSettings:
        await services.enrichment.set_overwrite(
            request.user.key.workspace, data.overwrite, request.user.key.key_id)
        return data

    @post("/firmographics", guards=[require_admin_or_ops], status_code=200,
          request_max_body_size=MAX_CSV_BYTES,
          summary="Load firmographics from CSV (admin, ops)",
          description="A `text/csv` body with a header: `domain` (required), `company_name`, "
          "`industry`, `employee_range`, `revenue_range`, `country`, `technologies` (`;` or "
          "`|` separated). Rows upsert by domain and are stamped `loaded_at`; the answer counts "
          "inserted and updated rows and lists rejected ones with their line numbers. Larger "
          "files: `leadledger firmographics load FILE.csv`.",
          responses=problem_responses(400, 401, 403, 413, 415, 422, 429))
    async def load(self, request: Request, services: Services) -> LoadReport:
        try:
            text = (await request.body()).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ProblemError("bad-request", "the CSV is not UTF-8") from None
        try:
            return await services.firmographics.load(
                request.user.key.workspace, text.splitlines(), request.user.key.key_id)
        except InvalidCsv as exc:
            raise ProblemError("validation-failed", str(exc), errors=[
                FieldError(field="body", message=str(exc))]) from None

    @get("/firmographics/{domain:str}", summary="A domain's firmographics",
         description="The row of the domain (a URL works too) or of its nearest parent domain.",
         responses=problem_responses(401, 404, 429))
    async def firmographic(self, request: Request, domain: str,
                           services: Services) -> StoredFirmographic:
        normalized = website_domain(domain)
        found = await services.firmographics.find(request.user.key.workspace, normalized) if (
            normalized) else None
        if found is None:
            raise ProblemError("not-found", f"no firmographics for {domain!r}")
        return found
