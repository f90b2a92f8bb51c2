"""/v1/routing: the workspace's assignment rules (in order), teams, territories and SLA.

Each PUT replaces that part of the workspace's routing book as a whole; the routing reactor uses
it from its next event. Saving any part turns routing on for the workspace (until then leads are
not routed). Rules are compiled on save with every check a scoring rule gets (syntax with line
and column, unknown variables, types, a boolean result): a rule that does not compile is 422
with each problem by rule index. Targets must exist: a rule or territory naming an unknown team
is refused, and so is removing a team that a rule or territory names. Any key reads; admin and
ops keys write.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, get, put
from msgspec import Meta

from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.representations import SINGLE_LINE
from api.http.scoring import refused
from api.http.services import Services
from processors.assignment import InvalidRules, compile_rules
from schema.routing import (
    RoutingBook,
    RoutingRule,
    SlaSettings,
    Team,
    TeamMember,
    Territory,
)
from schema.scoring import MAX_EXPRESSION_LENGTH, MAX_RULES

ID = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$",
                         description="1-64 letters, digits or `_.:-`.")]
Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=SINGLE_LINE)]
Who = Annotated[str, Meta(min_length=1, max_length=200, pattern=SINGLE_LINE,
                          description="An owner's id (as a lead's `owner`) or a queue's name.")]
TargetKind = Literal["owner", "team", "queue"]
Minutes = Annotated[int, Meta(ge=0, le=525_600)]
WRITERS = ("admin", "ops")


def require_admin_or_ops(connection, _handler) -> None:  # type: ignore[no-untyped-def]
    """Guard for writes: routing is the sales operation's to configure."""
    if connection.method in ("GET", "HEAD"):
        return
    verified = connection.user
    if verified is None or verified.key.role not in WRITERS:
        raise ProblemError("forbidden", "only an admin or ops key may change routing")


class RuleBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: ID
    name: Annotated[Name, Meta(description="Unique; LeadAssigned names it.")]
    condition: Annotated[str, Meta(
        min_length=1, max_length=MAX_EXPRESSION_LENGTH,
        description="CEL over the lead's facts, like a scoring rule (`lead`, `attributes`, "
        "`enrichment`, `activity`, `count(kind, days)`).",
        examples=['lead.country == "DE" && lead.industry == "software"'])]
    target_kind: TargetKind
    target: Annotated[Who, Meta(description="The owner, team id or queue.")]
    reassign: Annotated[bool, Meta(description="Also move leads whose owner a person set.")] = (
        False)
    priority: Annotated[Annotated[str, Meta(max_length=64)] | None, Meta(
        description="Picks the follow-up's SLA (`sla.by_priority`).")] = None


class RulesBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    rules: Annotated[list[RuleBody], Meta(max_length=MAX_RULES, description="In order: the "
                                          "first whose condition holds decides.")]
    fallback_queue: Annotated[Who | None, Meta(description="Where leads go that no rule or "
                                               "territory takes (unchanged if omitted).")] = None


class Rules(msgspec.Struct, kw_only=True, frozen=True):
    rules: list[RoutingRule]
    fallback_queue: str
    enabled: Annotated[bool, Meta(description="Whether the workspace routes leads.")]
    updated_at: datetime | None


class MemberBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    owner: Who
    capacity: Annotated[Annotated[int, Meta(ge=1, le=1_000_000)] | None, Meta(
        description="Open follow-ups the owner may hold at once; null: no limit.")] = None


class TeamBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: ID
    name: Name
    strategy: Literal["round-robin", "least-loaded"] = "round-robin"
    members: Annotated[list[MemberBody], Meta(max_length=500)] = []
    escalation_owner: Annotated[Who | None, Meta(description="The team lead: overdue tasks "
                                                 "escalate to them.")] = None
    overflow_queue: Annotated[Who | None, Meta(description="Where leads wait when every "
                                               "member is at capacity (else the fallback).")] = (
        None)


class TeamsBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    teams: Annotated[list[TeamBody], Meta(max_length=500)]


class Teams(msgspec.Struct, frozen=True):
    teams: list[Team]


class TerritoryBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    id: ID
    name: Name
    countries: Annotated[list[Annotated[str, Meta(pattern=r"^[A-Za-z]{2}$")]],
                         Meta(max_length=300, description="ISO 3166-1 alpha-2 codes.")] = []
    regions: Annotated[list[Annotated[str, Meta(min_length=1, max_length=100)]], Meta(
        max_length=300, description="Matched (without case) against the lead's `region` "
        "attribute, else its enriched `region`.")] = []
    target_kind: TargetKind = "team"
    target: Who


class TerritoriesBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    territories: Annotated[list[TerritoryBody], Meta(max_length=1000, description="Country "
                           "matches first (in order), then region matches (in order).")]


class Territories(msgspec.Struct, frozen=True):
    territories: list[Territory]


class SlaBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    default_minutes: Minutes = 1440
    by_band: Annotated[dict[str, Minutes], Meta(description="Score band -> minutes.")] = {}
    by_priority: Annotated[dict[str, Minutes], Meta(description="Rule priority -> minutes.")] = (
        {})
    overdue_action: Literal["escalate", "reroute", "queue"] = "escalate"
    escalation_owner: Who | None = None
    overdue_queue: Who = "overdue"
    escalation_minutes: Minutes = 60


def _unique(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise ProblemError("validation-failed", f"two {what} have the id {value!r}", errors=[
                FieldError(field=f"{what}[{i}].id", message="ids must be unique")])
        seen.add(value)


def _teams_exist(book: RoutingBook, kinds_targets: list[tuple[str, str]], what: str) -> None:
    known = {t.id for t in book.teams}
    errors = [FieldError(field=f"{what}[{i}].target", message=f"no team {target!r}")
              for i, (kind, target) in enumerate(kinds_targets)
              if kind == "team" and target not in known]
    if errors:
        raise ProblemError("validation-failed", f"{len(errors)} target(s) name no team",
                           errors=errors)


async def _book(services: Services, workspace: str) -> RoutingBook:
    return await services.routing.book(workspace) or RoutingBook()


async def _rules(services: Services, workspace: str) -> Rules:
    book = await services.routing.book(workspace)
    found = book or RoutingBook()
    return Rules(rules=list(found.rules), fallback_queue=found.fallback_queue,
                 enabled=book is not None, updated_at=found.updated_at)


class RoutingController(Controller):
    path = "/v1/routing"
    tags = ("routing",)
    guards = (require_admin_or_ops,)

    @get("/rules", summary="The assignment rules, in order, and the fallback queue")
    async def get_rules(self, request: Request, services: Services) -> Rules:
        return await _rules(services, request.user.key.workspace)

    @put("/rules", summary="Replace the assignment rules (admin, ops)",
         description="Compiled on save: a rule that does not compile is refused (422) with "
         "its index, name, and the line and column of the error.",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def put_rules(self, request: Request, data: RulesBody, services: Services) -> Rules:
        key = request.user.key
        rules = [RoutingRule(**msgspec.structs.asdict(r)) for r in data.rules]
        _unique([r.id for r in rules], "rules")
        try:
            compile_rules(rules, list((await services.attributes.current(key.workspace))
                                      .values()))
        except InvalidRules as exc:
            raise refused(list(exc.problems)) from None
        _teams_exist(await _book(services, key.workspace),
                     [(r.target_kind, r.target) for r in rules], "rules")
        await services.routing.save_rules(key.workspace, rules, data.fallback_queue, key.key_id)
        return await _rules(services, key.workspace)

    @get("/teams", summary="The teams: members, capacity, strategy")
    async def get_teams(self, request: Request, services: Services) -> Teams:
        return Teams(list((await _book(services, request.user.key.workspace)).teams))

    @put("/teams", summary="Replace the teams (admin, ops)",
         description="A team that a rule or territory names cannot be removed (422).",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def put_teams(self, request: Request, data: TeamsBody, services: Services) -> Teams:
        key = request.user.key
        teams = [Team(id=t.id, name=t.name, strategy=t.strategy,
                      members=tuple(TeamMember(owner=m.owner, capacity=m.capacity)
                                    for m in t.members),
                      escalation_owner=t.escalation_owner, overflow_queue=t.overflow_queue)
                 for t in data.teams]
        _unique([t.id for t in teams], "teams")
        for i, team in enumerate(teams):
            owners = [m.owner for m in team.members]
            if len(set(owners)) != len(owners):
                raise ProblemError("validation-failed", f"team {team.id!r} lists an owner twice",
                                   errors=[FieldError(field=f"teams[{i}].members",
                                                      message="owners must be unique")])
        book = await _book(services, key.workspace)
        kept = {t.id for t in teams}
        users = [f"rule {r.name!r}" for r in book.rules
                 if r.target_kind == "team" and r.target not in kept]
        users += [f"territory {t.name!r}" for t in book.territories
                  if t.target_kind == "team" and t.target not in kept]
        if users:
            raise ProblemError("validation-failed", "removed teams are still in use by "
                               + ", ".join(users), errors=[FieldError(
                                   field="teams", message="keep the teams that rules or "
                                   "territories name, or change those first")])
        await services.routing.save_teams(key.workspace, teams, key.key_id)
        return Teams(teams)

    @get("/territories", summary="The territories: countries or regions -> a team or owner")
    async def get_territories(self, request: Request, services: Services) -> Territories:
        book = await _book(services, request.user.key.workspace)
        return Territories(list(book.territories))

    @put("/territories", summary="Replace the territories (admin, ops)",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def put_territories(self, request: Request, data: TerritoriesBody,
                              services: Services) -> Territories:
        key = request.user.key
        territories = [Territory(
            id=t.id, name=t.name, countries=tuple(c.upper() for c in t.countries),
            regions=tuple(t.regions), target_kind=t.target_kind, target=t.target,
        ) for t in data.territories]
        _unique([t.id for t in territories], "territories")
        _teams_exist(await _book(services, key.workspace),
                     [(t.target_kind, t.target) for t in territories], "territories")
        await services.routing.save_territories(key.workspace, territories, key.key_id)
        return Territories(territories)

    @get("/sla", summary="Follow-up due times and what happens when they go overdue")
    async def get_sla(self, request: Request, services: Services) -> SlaSettings:
        return (await _book(services, request.user.key.workspace)).sla

    @put("/sla", summary="Replace the SLA settings (admin, ops)",
         responses=problem_responses(400, 401, 403, 422, 429))
    async def put_sla(self, request: Request, data: SlaBody, services: Services) -> SlaSettings:
        key = request.user.key
        sla = SlaSettings(**msgspec.structs.asdict(data))
        await services.routing.save_sla(key.workspace, sla, key.key_id)
        return sla
