"""Assignment (pure): which owner, team or queue a lead goes to, and which rule decided.

In order, the first that applies decides:

  1. the workspace's rules, in their order: the first whose CEL condition holds for the lead
     (the variables of scoring rules: `lead`, `attributes`, `enrichment`, `activity`, built by
     processors/lead_facts.py) names an owner, a team or a queue;
  2. the territories: the first whose `countries` hold the lead's country, else the first whose
     `regions` hold its region (the custom attribute `region`, else the enriched value
     `region`, compared without case);
  3. the fallback queue.

A lead whose owner a person set (`owned_by_person`) keeps it: only a matching rule with
`reassign` moves it. Within a team (`settle`), round-robin takes the next member in the team's
rotation who has room (the cursor then points past them); least-loaded takes the member with the
fewest open follow-ups who has room (ties: the earlier member). Room means fewer open follow-ups
than the member's capacity. When no member has room the lead waits in the team's overflow
queue, else the fallback queue, with the team recorded.

Rules compile once per book (`compile_rules`, with every check a scoring rule gets: syntax with
line and column, unknown references, types, a boolean result). A rule that fails at run time
(an absent attribute, say) does not match. Nothing here does I/O: the caller passes the
owners' loads and the team's cursor, and stores the new cursor with the decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import msgspec

from processors.lead_facts import LeadFacts, activation
from processors.rules import CompiledModel, InvalidModel, compile_model, evaluate
from schema.attributes import AttributeDefinition
from schema.routing import (
    FALLBACK_RULE,
    LEAST_LOADED,
    OWNER,
    QUEUE,
    TEAM,
    TERRITORY_RULE,
    Decision,
    RoutingBook,
    RoutingRule,
    SlaSettings,
    Target,
    Team,
)
from schema.scoring import RuleProblem, ScoringModelSpec, ScoringRule

REGION = "region"
"""The attribute (else enriched value) territories read as the lead's region."""


class InvalidRules(InvalidModel):
    """Routing rules that cannot be saved; `problems` as for scoring rules (by rule index)."""


class CompiledRules(msgspec.Struct, frozen=True):
    rules: tuple[RoutingRule, ...]
    model: CompiledModel | None
    """The conditions compiled as a scoring model of zero-point rules (None: no rules)."""


def compile_rules(
    rules: Sequence[RoutingRule], attributes: Sequence[AttributeDefinition] = ()
) -> CompiledRules:
    """Compiles the conditions with the scoring engine's checks; raises InvalidRules."""
    if not rules:
        return CompiledRules((), None)
    problems: list[RuleProblem] = []
    ids = [r.id for r in rules]
    for index, rule in enumerate(rules):
        if ids.index(rule.id) != index:
            problems.append(RuleProblem(rule_index=index, rule=rule.name,
                                        message=f"another rule has the id {rule.id!r}"))
    spec = ScoringModelSpec(rules=tuple(
        ScoringRule(name=r.name, expression=r.condition, points=0.0) for r in rules
    ))
    try:
        model = compile_model(spec, attributes)
    except InvalidModel as exc:
        problems += [p for p in exc.problems if p.rule_index >= 0]
        model = None
    if problems:
        raise InvalidRules(sorted(problems, key=lambda p: p.rule_index))
    return CompiledRules(tuple(rules), model)


def first_match(compiled: CompiledRules, facts: LeadFacts, now: datetime) -> RoutingRule | None:
    """The first rule whose condition holds (failing rules do not match)."""
    if compiled.model is None:
        return None
    result = evaluate(compiled.model, activation(facts, now))
    for rule, contribution in zip(compiled.rules, result.contributions, strict=True):
        if contribution.matched:
            return rule
    return None


def region_of(facts: LeadFacts) -> str | None:
    value = facts.state.attributes.get(REGION)
    if not isinstance(value, str):
        enriched = facts.state.enrichment.get(REGION)
        value = enriched.value if enriched is not None else None
    return value.casefold() if isinstance(value, str) and value else None


def target_for(
    matched: RoutingRule | None, book: RoutingBook, country: str | None, region: str | None,
    *, owned_by_person: bool,
) -> Target | None:
    """Where the lead goes (before a team member is chosen); None: leave it as it is."""
    if matched is not None:
        if owned_by_person and not matched.reassign:
            return None
        return Target(kind=matched.target_kind, value=matched.target, rule_id=matched.id,
                      rule_name=matched.name, reason=f"rule {matched.name!r} matched",
                      priority=matched.priority)
    if owned_by_person:
        return None
    code = country.upper() if country else None
    found = next((t for t in book.territories if code and code in
                  {c.upper() for c in t.countries}), None)
    why = f"country {code}"
    if found is None and region:
        found = next((t for t in book.territories
                      if region in {r.casefold() for r in t.regions}), None)
        why = f"region {region}"
    if found is not None:
        return Target(kind=found.target_kind, value=found.target,
                      rule_id=TERRITORY_RULE + found.id, rule_name=found.name,
                      reason=f"territory {found.name!r} ({why})")
    return Target(kind=QUEUE, value=book.fallback_queue, rule_id=FALLBACK_RULE, rule_name=None,
                  reason="no rule or territory matched: fallback queue")


def needs_loads(team: Team) -> bool:
    """Whether choosing a member of `team` looks at open follow-ups: a least-loaded team, or
    one with a capacity. A plain round-robin does not, and is spared counting them."""
    return team.strategy == LEAST_LOADED or any(m.capacity is not None for m in team.members)


def has_room(team: Team, index: int, loads: Mapping[str, int]) -> bool:
    member = team.members[index]
    return member.capacity is None or loads.get(member.owner, 0) < member.capacity


def pick_member(
    team: Team, loads: Mapping[str, int], cursor: int, exclude: str | None = None
) -> tuple[int | None, int]:
    """(index of the member chosen or None if nobody has room, the team's next cursor)."""
    n = len(team.members)
    if n == 0:
        return None, cursor
    room = [i for i in range(n) if has_room(team, i, loads) and team.members[i].owner != exclude]
    if not room:
        return None, cursor
    if team.strategy == LEAST_LOADED:
        return min(room, key=lambda i: (loads.get(team.members[i].owner, 0), i)), cursor
    start = cursor % n
    chosen = next((start + step) % n for step in range(n) if (start + step) % n in room)
    return chosen, (chosen + 1) % n


def settle(
    target: Target, book: RoutingBook, loads: Mapping[str, int], cursor: int,
    exclude: str | None = None,
) -> tuple[Decision, int]:
    """The decision for `target` and the team's next cursor (unchanged unless a team's
    round-robin chose a member). `loads`: open follow-ups per owner; `cursor`: the team's."""
    base = {"rule_id": target.rule_id, "rule_name": target.rule_name,
            "priority": target.priority}
    if target.kind == OWNER:
        return Decision(owner=target.value, reason=target.reason, **base), cursor
    if target.kind == QUEUE:
        return Decision(queue=target.value, reason=target.reason, **base), cursor
    assert target.kind == TEAM, target.kind
    team = book.team(target.value)
    if team is None:
        return Decision(queue=book.fallback_queue, reason=f"{target.reason}, but team "
                        f"{target.value!r} does not exist: fallback queue", **base), cursor
    index, after = pick_member(team, loads, cursor, exclude)
    if index is None:
        queue = team.overflow_queue or book.fallback_queue
        return Decision(team=team.id, queue=queue, reason=f"{target.reason}; every member of "
                        f"team {team.name!r} is at capacity: queue {queue!r}", **base), cursor
    owner = team.members[index].owner
    return Decision(owner=owner, team=team.id, reason=f"{target.reason}; team {team.name!r} "
                    f"{team.strategy}: {owner}", **base), after


def assign(
    compiled: CompiledRules, book: RoutingBook, facts: LeadFacts, now: datetime,
    loads: Mapping[str, int], cursors: Mapping[str, int], *, owned_by_person: bool = False,
) -> tuple[Decision | None, dict[str, int]]:
    """The whole decision at once (for callers that hold every team's cursor): the decision
    (None: leave the lead alone) and the cursors after it."""
    country = facts.state.fields.country
    target = target_for(
        first_match(compiled, facts, now), book,
        country if isinstance(country, str) else None, region_of(facts),
        owned_by_person=owned_by_person,
    )
    if target is None:
        return None, dict(cursors)
    decision, cursor = settle(target, book, loads, cursors.get(target.value, 0))
    after = dict(cursors)
    if target.kind == TEAM:
        after[target.value] = cursor
    return decision, after


def due_minutes(sla: SlaSettings, band: str | None, priority: str | None) -> int:
    """The tightest SLA that applies: the rule's priority, the score band, else the default."""
    applicable = []
    if priority is not None and priority in sla.by_priority:
        applicable.append(sla.by_priority[priority])
    if band is not None and band in sla.by_band:
        applicable.append(sla.by_band[band])
    return min(applicable) if applicable else sla.default_minutes


def due_at(start: datetime, sla: SlaSettings, band: str | None, priority: str | None) -> datetime:
    return start + timedelta(minutes=due_minutes(sla, band, priority))
