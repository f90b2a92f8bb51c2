"""The shapes of routing: a workspace's assignment rules, teams, territories and SLA settings
(together its `RoutingBook`), and the decision routing makes for one lead.

How they are used is processors/assignment.py's business (pure) and processors/routing.py's
(the reactor); these are only the contract shared by them, the store and the HTTP API.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

OWNER, TEAM, QUEUE = "owner", "team", "queue"
TARGET_KINDS = (OWNER, TEAM, QUEUE)
ROUND_ROBIN, LEAST_LOADED = "round-robin", "least-loaded"
STRATEGIES = (ROUND_ROBIN, LEAST_LOADED)
ESCALATE, REROUTE = "escalate", "reroute"
OVERDUE_ACTIONS = (ESCALATE, REROUTE, QUEUE)
FALLBACK_RULE = "fallback"
TERRITORY_RULE = "territory:"
"""Prefix of the `rule_id` of an assignment a territory decided (`territory:<id>`)."""
FOLLOW_UP = "follow-up"
SCORE_BAND = "score-band"
"""Task kinds: the follow-up of an assignment; the follow-up of a lead crossing a score band."""


class RoutingRule(msgspec.Struct, frozen=True, kw_only=True):
    """When `condition` (CEL over the lead's facts, like a scoring rule) holds, the lead goes
    to `target` (an owner, a team's member or a queue). A lead whose owner a person set is left
    alone unless `reassign`. `priority` picks the SLA of its follow-up (SlaSettings)."""

    id: str
    name: str
    condition: str
    target_kind: str
    target: str
    reassign: bool = False
    priority: str | None = None


class TeamMember(msgspec.Struct, frozen=True, kw_only=True):
    owner: str
    capacity: int | None = None
    """Open follow-up tasks the owner may hold at once; None: no limit."""


class Team(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    strategy: str = ROUND_ROBIN
    members: tuple[TeamMember, ...] = ()
    escalation_owner: str | None = None
    """The team lead: overdue tasks of the team escalate to them."""
    overflow_queue: str | None = None
    """Where the team's leads wait when every member is at capacity (else the fallback)."""


class Territory(msgspec.Struct, frozen=True, kw_only=True):
    """Leads from these countries (ISO 3166-1 alpha-2) or regions go to `target`."""

    id: str
    name: str
    countries: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    target_kind: str = TEAM
    target: str = ""


class SlaSettings(msgspec.Struct, frozen=True, kw_only=True):
    """When follow-ups fall due and what happens when they go overdue. A task is due in the
    tightest of: `by_priority[rule priority]`, `by_band[score band]`, else `default_minutes`."""

    default_minutes: int = 1440
    by_band: dict[str, int] = {}
    by_priority: dict[str, int] = {}
    overdue_action: str = ESCALATE
    """escalate (to the team's escalation owner, else `escalation_owner`), reroute (to another
    member of the lead's team) or queue (back to `overdue_queue`)."""
    escalation_owner: str | None = None
    overdue_queue: str = "overdue"
    escalation_minutes: int = 60
    """The escalated task is due this long after its first due time."""


class RoutingBook(msgspec.Struct, frozen=True, kw_only=True):
    """Everything routing reads of a workspace's configuration."""

    rules: tuple[RoutingRule, ...] = ()
    teams: tuple[Team, ...] = ()
    territories: tuple[Territory, ...] = ()
    sla: SlaSettings = SlaSettings()
    fallback_queue: str = "unassigned"
    updated_at: datetime | None = None

    def team(self, team_id: str | None) -> Team | None:
        return next((t for t in self.teams if t.id == team_id), None)


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """Where a lead should go, before a team's member is chosen: what matched and why."""

    kind: str
    value: str
    rule_id: str
    rule_name: str | None
    reason: str
    priority: str | None = None


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """Who works the lead: an owner (with their team, if chosen from one), or a queue."""

    owner: str | None = None
    team: str | None = None
    queue: str | None = None
    rule_id: str
    rule_name: str | None = None
    reason: str
    priority: str | None = None
