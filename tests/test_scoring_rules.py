"""Scoring rules, pure: every check a model must pass to be saved, evaluation (negative rules,
caps, bands, windows and decay at a fixed time, a failing rule contributing 0 and reported), and
properties: the contributions always add up to the total, and the same events at the same time
give the same result and digest."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidValue
from ledger.store import RecordedEvent
from processors.lead_facts import VARIABLES, activation, fold_facts
from processors.rule_checks import MAX_NESTING
from processors.rules import InvalidModel, compile_model, digest, evaluate, score_lead
from schema.attributes import AttributeDefinition
from schema.events import (
    Event,
    LeadActivityRecorded,
    LeadAttributesChanged,
    LeadCreated,
    LeadFields,
    LeadStageChanged,
    LeadTagged,
)
from schema.metadata import Actor, EventMetadata
from schema.scoring import MAX_EXPRESSION_LENGTH, ScoreBand, ScoringModelSpec, ScoringRule
from schema.vocabularies import ACTIVITY_KINDS

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
META = EventMetadata(actor=Actor(key_id="test", role="system"), source="api")
SEATS = AttributeDefinition(name="seats", type="integer")
REVENUE = AttributeDefinition(name="revenue", type="number")


def rules(*pairs: tuple[str, float], **spec: object) -> ScoringModelSpec:
    return ScoringModelSpec(
        rules=tuple(ScoringRule(name=f"r{i}", expression=e, points=p) for i, (e, p) in
                    enumerate(pairs)),
        **spec,  # type: ignore[arg-type]
    )


def problems_of(spec: ScoringModelSpec, attributes=()) -> list:
    with pytest.raises(InvalidModel) as caught:
        compile_model(spec, attributes)
    return caught.value.problems


def recorded(events: list[tuple[Event, datetime]], lead_id: str = "L1") -> list[RecordedEvent]:
    return [
        RecordedEvent(
            position=i + 1, transaction_id=i + 1, event_id=f"e{i}", workspace="ws",
            stream_id=lead_id, version=i + 1, event=event, metadata=META, recorded_at=at,
        )
        for i, (event, at) in enumerate(events)
    ]


def created(at: datetime = NOW - timedelta(days=10), **fields: str) -> tuple[Event, datetime]:
    return LeadCreated(lead_id="L1", fields=LeadFields(**fields), stage="lead"), at


def did(kind: str, days_ago: float, name: str | None = None, n: int = 0) -> tuple[Event, datetime]:
    when = NOW - timedelta(days=days_ago)
    return LeadActivityRecorded(activity_id=f"a{kind}{days_ago}{n}", kind=kind, occurred_at=when,
                                name=name), when


# ---- checks when a model is saved ----

def test_bad_syntax_is_refused_with_its_line_and_column():
    [problem] = problems_of(rules(('lead.country == "DE" &&\n  (lead.city == ', 5)))
    assert problem.rule == "r0" and problem.rule_index == 0
    assert (problem.line, problem.column) == (2, 17)  # the end of the text
    assert problem.message.startswith("syntax error")


def test_unknown_variables_and_fields_are_refused_where_they_stand():
    found = problems_of(rules(
        ('lead.country == "DE" && leed.city == "x"', 1), ("lead.employees > 10", 1),
        ("activity.fax.count > 0", 1), ("activity.form_submit.total > 0", 1),
        ('attributes.plan == "pro"', 1),
    ))
    assert [(p.rule_index, p.line, p.column) for p in found] == [
        (0, 1, 25), (1, 1, 1), (2, 1, 1), (3, 1, 1), (4, 1, 1)
    ]
    assert "leed" in found[0].message and "employees" in found[1].message
    assert "plan" in found[4].message


def test_comprehension_variables_and_string_contents_are_not_references():
    model = compile_model(rules(
        ('lead.tags.exists(t, t.startsWith("vip")) && "leed.x" != lead.city', 1),
    ))
    assert model.rules[0].paths == ("lead.tags", "lead.city")


def test_a_rule_must_give_a_boolean():
    [problem] = problems_of(rules(("lead.age_days + 1.0", 3)))
    assert "boolean" in problem.message


def test_a_type_mismatch_is_refused():
    found = problems_of(
        rules(('lead.age_days > "old"', 1), ("attributes.seats > 1.5 + lead.notes_count", 1),
              ("count(3, 30) > 1", 1), ('count("fax", 30) > 1', 1)),
        [SEATS],
    )
    assert [p.rule_index for p in found] == [0, 1, 2, 3]
    assert "type" in found[0].message and "fax" in found[3].message


def test_well_typed_attribute_rules_pass():
    model = compile_model(
        rules(("attributes.seats >= 10 && attributes.revenue > 1000.0", 5)), [SEATS, REVENUE]
    )
    assert model.rules[0].paths == ("attributes.seats", "attributes.revenue")


def test_names_unique_and_non_empty_and_limits():
    spec = ScoringModelSpec(rules=(
        ScoringRule(name="a", expression="lead.has_email", points=1),
        ScoringRule(name="a", expression="lead.has_phone", points=1),
        ScoringRule(name=" ", expression="lead.has_phone", points=1),
        ScoringRule(name="long", expression="lead.has_phone || " * 200 + "true", points=1),
        ScoringRule(name="deep", expression="(" * (MAX_NESTING + 1) + "true" +
                    ")" * (MAX_NESTING + 1), points=1),
        ScoringRule(name="many", expression="||".join(["true"] * 160), points=1),
    ))
    found = problems_of(spec)
    assert [p.rule_index for p in found] == [1, 2, 3, 4, 5]
    assert "already" in found[0].message and "name" in found[1].message
    assert str(MAX_EXPRESSION_LENGTH) in found[2].message
    assert "nested" in found[3].message and found[3].column == MAX_NESTING + 1
    assert "operators" in found[4].message


def test_bands_and_caps_must_be_well_formed():
    found = problems_of(rules(
        ("lead.has_email", 1),
        bands=(ScoreBand(name="A", min_score=50), ScoreBand(name="A", min_score=50)),
        min_score=10, max_score=5,
    ))
    assert {(p.rule_index, p.rule) for p in found} == {(-1, "bands"), (-1, "min_score")}


def test_an_invalid_model_is_an_invalid_value_with_every_problem():
    with pytest.raises(InvalidValue) as caught:
        compile_model(rules(("lead.nope", 1), ("lead.has_email", 1), ("1 +", 1)))
    assert caught.value.field == "rules"
    assert [p.rule_index for p in caught.value.problems] == [0, 2]  # type: ignore[attr-defined]


def test_the_catalogue_names_every_variable_once():
    names = [v.name for v in VARIABLES]
    assert len(names) == len(set(names))
    assert {"lead.country", "lead.age_days", "activity.form_submit.last_30d",
            "activity.custom_<name>.decayed", "count(kind, days)"} <= set(names)
    lead_keys = {n.removeprefix("lead.") for n in names if n.startswith("lead.")}
    facts = fold_facts(recorded([created()]))
    assert lead_keys == set(activation(facts, NOW)["lead"])  # type: ignore[arg-type]


# ---- evaluation ----

MODEL = compile_model(rules(
    ('lead.country == "DE"', 10),
    ('lead.email_domain == "gmail.com"', -15),
    ('count("form_submit", 30) >= 2', 20),
    ("activity.page_view.last_7d > 0 && activity.page_view.days_since_last < 3.0", 5),
    ("activity.demo_request.decayed > 0.9", 30),
    ("activity.custom_webinar_q3.count > 0", 4),
    ('count_named("Webinar: Q3", 90) > 0', 1),
    ("attributes.seats > 10", 3),
    bands=(ScoreBand(name="A", min_score=50), ScoreBand(name="B", min_score=20),
           ScoreBand(name="C", min_score=0)),
    min_score=0, max_score=60,
), [SEATS])


def lead_events() -> list[RecordedEvent]:
    return recorded([
        created(country="DE", email="ann@gmail.com"),
        did("form_submit", 1), did("form_submit", 29), did("form_submit", 31),
        did("page_view", 2), did("demo_request", 5), did("custom", 60, "Webinar: Q3"),
    ])


def test_windows_decay_negative_rules_and_observed_values():
    result = score_lead(MODEL, fold_facts(lead_events()), NOW)
    points = [c.points for c in result.contributions]
    # demo 5 days ago decays to 0.5^(5/30) = 0.89 < 0.9: no points.
    assert points == [10, -15, 20, 5, 0, 4, 1, 0]
    assert result.uncapped == 25 and result.total == 25 and result.band == "B"
    assert result.observed["r2"] == {'count("form_submit", 30)': 2}
    assert result.observed["r3"] == {
        "activity.page_view.last_7d": 1, "activity.page_view.days_since_last": 2.0
    }
    assert math.isclose(
        result.observed["r4"]["activity.demo_request.decayed"], 0.5 ** (5 / 30)  # type: ignore
    )
    assert result.observed["r6"] == {'count_named("Webinar: Q3", 90)': 1}


def test_a_failing_rule_contributes_nothing_and_is_reported():
    result = score_lead(MODEL, fold_facts(lead_events()), NOW)
    seats = result.contributions[7]
    assert (seats.points, seats.matched) == (0, False) and "seats" in (seats.error or "")
    assert all(c.error is None for c in result.contributions[:7])


def test_a_null_field_compared_fails_only_its_rule():
    model = compile_model(rules(("lead.age_days > 1.0", 1), ('lead.title.contains("VP")', 5)))
    result = score_lead(model, fold_facts(recorded([created(company="ACME")])), NOW)
    assert [c.points for c in result.contributions] == [1, 0]
    assert result.contributions[1].error is not None and result.total == 1


def test_caps_and_bands():
    spec = rules(("lead.has_email", 100), ("lead.has_phone", -300),
                 bands=(ScoreBand(name="MQL", min_score=80),), min_score=-50, max_score=90)
    model = compile_model(spec)
    high = score_lead(model, fold_facts(recorded([created(email="a@b.co")])), NOW)
    assert (high.uncapped, high.total, high.band) == (100, 90, "MQL")
    low = score_lead(model, fold_facts(recorded([created(phone="+4930123456")])), NOW)
    assert (low.uncapped, low.total, low.band) == (-300, -50, None)


def test_time_passing_moves_windows():
    facts = fold_facts(lead_events())
    later = score_lead(MODEL, facts, NOW + timedelta(days=5))
    assert [c.points for c in later.contributions][2:4] == [0, 0]


def test_attributes_and_tags_follow_the_events():
    events = recorded([
        created(), (LeadAttributesChanged(values={"seats": 40}), NOW),
        (LeadTagged(tag="vip"), NOW), (LeadStageChanged(stage="mql", previous="lead"), NOW),
    ])
    lead = activation(fold_facts(events), NOW)
    assert lead["attributes"] == {"seats": 40}
    assert lead["lead"]["tags"] == ["vip"] and lead["lead"]["stage"] == "mql"  # type: ignore
    assert score_lead(MODEL, fold_facts(events), NOW).contributions[7].points == 3


def test_digest_ignores_observed_values_but_not_points():
    facts = fold_facts(lead_events())
    first = score_lead(MODEL, facts, NOW)
    aged = score_lead(compile_model(rules(("lead.age_days >= 0.0", 1))), facts, NOW)
    aged_later = score_lead(
        compile_model(rules(("lead.age_days >= 0.0", 1))), facts, NOW + timedelta(days=3)
    )
    assert digest("m", 1, aged) == digest("m", 1, aged_later)
    assert digest("m", 1, first) != digest("m", 2, first) != digest("n", 1, first)


# ---- properties ----

KINDS = st.sampled_from([k for k in ACTIVITY_KINDS if k != "custom"])
ACTIVITIES = st.lists(st.tuples(KINDS, st.floats(0, 200)), max_size=25)


def _model(points: list[float], low: float | None, high: float | None):
    expressions = [
        "lead.has_email", 'count("form_submit", 30) > 1', "activity.page_view.decayed > 1.0",
        "activity.email_click.last_90d >= 2", "lead.age_days > 5.0", 'lead.title == "CTO"',
        "attributes.seats > 3",  # fails for leads without seats: contributes 0
    ]
    spec = ScoringModelSpec(
        rules=tuple(ScoringRule(name=f"r{i}", expression=e, points=p)
                    for i, (e, p) in enumerate(zip(expressions, points, strict=False))),
        min_score=low, max_score=high if low is None or high is None else max(low, high),
        bands=(ScoreBand(name="hot", min_score=20), ScoreBand(name="cold", min_score=-1e9)),
    )
    return compile_model(spec, [SEATS])


@settings(max_examples=60, deadline=None)
@given(
    points=st.lists(st.floats(-100, 100, allow_nan=False), min_size=7, max_size=7),
    low=st.none() | st.floats(-50, 0), high=st.none() | st.floats(0, 50),
    activities=ACTIVITIES, email=st.booleans(),
)
def test_contributions_add_up_to_the_total(points, low, high, activities, email):
    model = _model(points, low, high)
    events = recorded([created(email="a@b.co") if email else created(),
                       *(did(k, d, n=i) for i, (k, d) in enumerate(activities))])
    result = score_lead(model, fold_facts(events), NOW)
    assert sum(c.points for c in result.contributions) == result.uncapped
    capped = result.uncapped
    if model.spec.min_score is not None:
        capped = max(model.spec.min_score, capped)
    if model.spec.max_score is not None:
        capped = min(model.spec.max_score, capped)
    assert result.total == capped
    assert result.band == ("hot" if result.total >= 20 else "cold")
    assert [c.rule for c in result.contributions] == [r.name for r in model.spec.rules]


@settings(max_examples=40, deadline=None)
@given(activities=ACTIVITIES, data=st.data())
def test_same_events_same_time_same_result_in_any_order(activities, data):
    model = _model([5, 10, 7, 3, 2, 1, 4], None, None)
    first = [did(k, d, n=i) for i, (k, d) in enumerate(activities)]
    shuffled = data.draw(st.permutations(first))
    one = score_lead(model, fold_facts(recorded([created(), *first])), NOW)
    again = score_lead(model, fold_facts(recorded([created(), *first])), NOW)
    other_order = score_lead(model, fold_facts(recorded([created(), *shuffled])), NOW)
    assert one == again and digest("m", 1, one) == digest("m", 1, again)
    # The order activities are recorded in does not change what they count to.
    assert one.contributions == other_order.contributions
    assert evaluate(model, activation(fold_facts(recorded([created(), *first])), NOW)) == one


def test_paths_read_as_maps_agree_with_paths_read_directly():
    model = compile_model(rules(
        ("has(attributes.seats) && attributes.seats > 3", 1),
        ('activity["form_submit"].count >= 3', 2),
        ('lead . country == "DE"', 4),
        ("has(lead.title)", 8),  # standard fields are always there, null when not set
    ), [SEATS])
    result = score_lead(model, fold_facts(lead_events()), NOW)
    assert [c.points for c in result.contributions] == [0, 2, 4, 8]
    assert all(c.error is None for c in result.contributions)
    assert result.observed["r2"] == {"lead.country": "DE"}
    assert result.observed["r1"]["activity"]["form_submit"]["count"] == 3  # type: ignore
