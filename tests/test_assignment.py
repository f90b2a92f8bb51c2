"""Assignment (pure): rules in order, territories, the fallback queue, people's owners kept,
round-robin cycling, least-loaded choosing, capacity never exceeded while anyone has room, and
the SLA's due times. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.lead import LeadState
from processors.assignment import (
    InvalidRules,
    assign,
    compile_rules,
    due_at,
    due_minutes,
    needs_loads,
    pick_member,
    region_of,
    settle,
)
from processors.lead_facts import LeadFacts
from schema.events import EnrichmentValue, LeadFields
from schema.routing import (
    FALLBACK_RULE,
    LEAST_LOADED,
    ROUND_ROBIN,
    RoutingBook,
    RoutingRule,
    SlaSettings,
    Target,
    Team,
    TeamMember,
    Territory,
)

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)


def facts(**fields: object) -> LeadFacts:
    attributes = fields.pop("attributes", {})
    enrichment = fields.pop("enrichment", {})
    state = LeadState(lead_id="L1", version=1, status="active", stage="lead",
                      fields=LeadFields(**fields), attributes=attributes,  # type: ignore[arg-type]
                      enrichment=enrichment)  # type: ignore[arg-type]
    return LeadFacts(state=state, created_at=NOW)


def rule(rule_id: str, condition: str, kind: str, target: str, **kw: object) -> RoutingRule:
    return RoutingRule(id=rule_id, name=f"rule {rule_id}", condition=condition,
                       target_kind=kind, target=target, **kw)  # type: ignore[arg-type]


TEAM_A = Team(id="a", name="Team A", members=(TeamMember(owner="ann"), TeamMember(owner="bob"),
                                              TeamMember(owner="cy")))
BOOK = RoutingBook(
    rules=(
        rule("de", 'lead.country == "DE"', "owner", "dora"),
        rule("big", 'lead.company == "Big Co"', "team", "a"),
        rule("de-big", 'lead.country == "DE" && lead.company == "Big Co"', "queue", "never"),
    ),
    teams=(TEAM_A,),
    territories=(
        Territory(id="fr", name="France", countries=("FR",), target_kind="owner", target="fay"),
        Territory(id="emea", name="EMEA", regions=("EMEA",), target_kind="queue",
                  target="emea-queue"),
    ),
    fallback_queue="inbox",
)
COMPILED = compile_rules(BOOK.rules)


def decide(f: LeadFacts, *, loads=None, cursors=None, owned_by_person=False):
    return assign(COMPILED, BOOK, f, NOW, loads or {}, cursors or {},
                  owned_by_person=owned_by_person)


def test_the_first_matching_rule_decides_and_is_named():
    decision, _ = decide(facts(country="DE", company="Big Co"))
    assert decision is not None
    assert (decision.owner, decision.rule_id, decision.rule_name) == ("dora", "de", "rule de")
    decision, cursors = decide(facts(country="US", company="Big Co"))
    assert (decision.owner, decision.team, decision.rule_id) == ("ann", "a", "big")
    assert cursors == {"a": 1}


def test_territories_by_country_then_region_then_the_fallback_queue():
    decision, _ = decide(facts(country="FR"))
    assert (decision.owner, decision.rule_id, decision.rule_name) == ("fay", "territory:fr",
                                                                      "France")
    by_region = facts(country="IT", attributes={"region": "emea"})
    assert decide(by_region)[0].queue == "emea-queue"
    enriched = facts(country="IT", enrichment={"region": EnrichmentValue(
        value="EMEA", provider="phone", fetched_at=NOW)})
    assert region_of(enriched) == "emea" and decide(enriched)[0].queue == "emea-queue"
    fallback, _ = decide(facts(country="US"))
    assert (fallback.queue, fallback.owner, fallback.rule_id) == ("inbox", None, FALLBACK_RULE)


def test_a_person_set_owner_is_kept_unless_the_rule_says_reassign():
    assert decide(facts(country="DE"), owned_by_person=True)[0] is None
    assert decide(facts(country="US"), owned_by_person=True)[0] is None  # fallback neither
    book = RoutingBook(rules=(rule("vip", 'lead.title == "CEO"', "owner", "vera",
                                   reassign=True),), fallback_queue="inbox")
    decision, _ = assign(compile_rules(book.rules), book, facts(title="CEO"), NOW, {}, {},
                         owned_by_person=True)
    assert decision is not None and decision.owner == "vera"


def test_a_rule_that_fails_at_run_time_does_not_match():
    book = RoutingBook(rules=(
        rule("plan", 'attributes.plan == "pro"', "owner", "pat"),
        rule("any", "true", "owner", "any"),
    ))
    from schema.attributes import AttributeDefinition
    compiled = compile_rules(book.rules, [AttributeDefinition(name="plan", type="string")])
    decision, _ = assign(compiled, book, facts(), NOW, {}, {})
    assert decision.owner == "any"  # attributes.plan is absent: rule "plan" fails, no match


def test_invalid_rules_are_refused_with_their_positions():
    with pytest.raises(InvalidRules) as refused:
        compile_rules([
            rule("ok", "true", "owner", "x"),
            rule("syntax", 'lead.country == "DE" &&', "owner", "x"),
            rule("unknown", "lead.colour == 1", "owner", "x"),
            rule("ok", "1 + 1", "owner", "x"),
        ])
    problems = refused.value.problems
    assert {p.rule_index for p in problems} == {1, 2, 3}
    syntax = next(p for p in problems if p.rule_index == 1)
    assert syntax.line == 1 and syntax.column is not None


def test_round_robin_skips_full_members_and_overflows_when_all_are_full():
    team = Team(id="t", name="T", members=(TeamMember(owner="a", capacity=1),
                                           TeamMember(owner="b", capacity=1)))
    book = RoutingBook(teams=(team,), fallback_queue="inbox")
    target = Target(kind="team", value="t", rule_id="r", rule_name="r", reason="why")
    decision, cursor = settle(target, book, {"a": 1}, 0)
    assert (decision.owner, cursor) == ("b", 0)
    decision, cursor = settle(target, book, {"a": 1, "b": 1}, 0)
    assert (decision.owner, decision.team, decision.queue, cursor) == (None, "t", "inbox", 0)


def test_sla_takes_the_tightest_of_priority_and_band():
    sla = SlaSettings(default_minutes=600, by_band={"hot": 30, "cold": 2000},
                      by_priority={"p1": 10})
    assert due_minutes(sla, None, None) == 600
    assert due_minutes(sla, "hot", None) == 30
    assert due_minutes(sla, "cold", None) == 2000  # a band's SLA replaces the default
    assert due_minutes(sla, "hot", "p1") == 10
    assert due_minutes(sla, "warm", "p9") == 600
    assert due_at(NOW, sla, "hot", None) == NOW + timedelta(minutes=30)


# -- properties -------------------------------------------------------------------------------

owners = st.lists(st.text("abcdefgh", min_size=1, max_size=3), min_size=1, max_size=6,
                  unique=True)


@st.composite
def teams(draw: st.DrawFn) -> tuple[Team, dict[str, int]]:
    names = draw(owners)
    members = tuple(TeamMember(owner=n, capacity=draw(st.none() | st.integers(1, 5)))
                    for n in names)
    strategy = draw(st.sampled_from([ROUND_ROBIN, LEAST_LOADED]))
    loads = {n: draw(st.integers(0, 6)) for n in names}
    return Team(id="t", name="T", strategy=strategy, members=members), loads


@settings(max_examples=300, deadline=None)
@given(teams(), st.integers(0, 20), st.integers(1, 30))
def test_capacity_is_never_exceeded_while_anyone_has_room(team_and_loads, cursor, leads):
    team, loads = team_and_loads
    loads = dict(loads)
    for _ in range(leads):
        index, cursor = pick_member(team, loads, cursor)
        room = [m for m in team.members
                if m.capacity is None or loads[m.owner] < m.capacity]
        if index is None:
            assert not room  # nobody was left out who had room
            break
        member = team.members[index]
        assert member in room
        loads[member.owner] += 1
        assert member.capacity is None or loads[member.owner] <= member.capacity


@settings(max_examples=300, deadline=None)
@given(teams(), st.integers(0, 20))
def test_a_team_that_needs_no_loads_chooses_the_same_without_them(team_and_loads, cursor):
    """Routing skips counting open follow-ups when `needs_loads` says so: that must never
    change whom a team chooses."""
    team, loads = team_and_loads
    if needs_loads(team):
        return
    assert pick_member(team, loads, cursor) == pick_member(team, {}, cursor)


def test_only_least_loaded_teams_and_capacities_need_loads():
    plain = Team(id="t", name="T", members=(TeamMember(owner="a"), TeamMember(owner="b")))
    assert not needs_loads(plain)
    assert needs_loads(Team(id="t", name="T", strategy=LEAST_LOADED, members=plain.members))
    assert needs_loads(Team(id="t", name="T", members=(TeamMember(owner="a", capacity=3),)))


@settings(max_examples=200, deadline=None)
@given(owners, st.integers(0, 50), st.integers(1, 4))
def test_round_robin_cycles_the_members_in_order(names, cursor, rounds):
    team = Team(id="t", name="T", members=tuple(TeamMember(owner=n) for n in names))
    chosen = []
    for _ in range(rounds * len(names)):
        index, cursor = pick_member(team, {}, cursor)
        chosen.append(team.members[index].owner)
    first = chosen[0]
    start = names.index(first)
    assert chosen == [names[(start + i) % len(names)] for i in range(len(chosen))]


@settings(max_examples=200, deadline=None)
@given(teams())
def test_least_loaded_takes_a_member_with_the_fewest_open_tasks(team_and_loads):
    team, loads = team_and_loads
    team = Team(id="t", name="T", strategy=LEAST_LOADED, members=team.members)
    index, _ = pick_member(team, loads, 0)
    room = [m for m in team.members if m.capacity is None or loads[m.owner] < m.capacity]
    if index is None:
        assert not room
    else:
        assert loads[team.members[index].owner] == min(loads[m.owner] for m in room)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["US", "JP", "BR", None]), st.text("xyz", max_size=3))
def test_the_fallback_queue_takes_what_nothing_else_matches(country, region):
    f = facts(country=country, attributes={"region": region} if region else {})
    decision, cursors = decide(f)
    assert decision is not None
    assert (decision.queue, decision.owner, decision.team) == ("inbox", None, None)
    assert decision.rule_id == FALLBACK_RULE and cursors == {}
