"""A lead's facts as scoring rules see them: state folded from its events, and the CEL activation.

`fold_facts(events)` / `next_facts(facts, recorded)` fold a lead's RecordedEvents into
`LeadFacts`: the lead's own state (through `ledger.lead.evolve`, so fields, attributes, tags,
stage, owner and email status mean exactly what they mean everywhere else), when it was created,
and its activity history. `activation(facts, now)` turns the facts into the plain data a CEL
rule reads. Time is an argument: the scoring processor passes the causing event's `recorded_at`,
so the same events and the same `now` always give the same activation.

Variables (also published as data: `VARIABLES`, a list of `Variable`):

  lead.id                    string   the lead's id
  lead.<field>               string|null  every standard field: first_name, last_name, email,
                             phone, company, title, website, country (ISO 3166 alpha-2), city,
                             address, ip_address, source, external_id, industry, seniority,
                             department; null when not set
  lead.stage                 string|null  lifecycle stage
  lead.owner                 string|null
  lead.tags                  list(string)
  lead.status                string   active, archived, merged or erased
  lead.email_domain          string|null  the part after @ of the email, lowercased
  lead.email_status          string|null  valid, risky or invalid (offline check, bounces)
  lead.quarantined           bool     invalid or hard-bounced email
  lead.has_email, lead.has_phone   bool
  lead.age_days              double   days since the lead was created (at `now`)
  lead.notes_count           int
  attributes.<name>          the custom attribute's value (string, int, double, bool, or
                             list(string); dates as ISO 8601 text); absent when not set, so
                             guard with `has(attributes.plan) && ...` (a rule that reads an
                             absent one fails: it contributes 0 and says so)
  enrichment.<name>          an enriched value (LeadEnriched), untyped: rules that read it
                             are not type-checked when saved; absent when not enriched
  activity.<kind>.count      int      all activities of that kind, for every kind in
                             ACTIVITY_KINDS (page_view, form_submit, email_open, email_click,
                             demo_request, meeting, call, product_signup, custom)
  activity.<kind>.last_7d / last_30d / last_90d   int   those in the last 7/30/90 days
  activity.<kind>.days_since_last   double  days since the latest one; +infinity if none
  activity.<kind>.decayed    double   sum over activities of 0.5^(age_days / 30): recency-
                             weighted count with a 30-day half-life
  activity.custom_<name>.*   the same six numbers for the custom activities named <name>
                             (name lowercased, every run of other characters than a-z0-9 as
                             `_`: "Webinar: Q3" -> activity.custom_webinar_q3); all zero (and
                             days_since_last infinite) when the lead has none
  count(kind, days)          int      activities of `kind` in the last `days` days (int or double)
  count_named(name, days)    int      custom activities called `name` in the last `days` days

An activity's age is `now - occurred_at`, never negative (one stamped after `now` counts as
happening at `now`); "in the last N days" means an age below N days.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime

import msgspec
from msgspec import UNSET

from ledger.lead import INITIAL, LeadState, evolve
from ledger.store import RecordedEvent
from schema.events import FIELD_NAMES, LeadActivityRecorded, LeadCreated
from schema.vocabularies import ACTIVITY_KINDS

HALF_LIFE_DAYS = 30.0
WINDOWS = (7, 30, 90)
_DAY = 86_400.0
NEVER = math.inf
"""`days_since_last` of a kind the lead has never done."""


class Activity(msgspec.Struct, frozen=True):
    kind: str
    name: str | None
    occurred_at: datetime


class LeadFacts(msgspec.Struct, frozen=True, kw_only=True):
    state: LeadState = INITIAL
    created_at: datetime | None = None
    """`recorded_at` of the LeadCreated event."""
    activities: tuple[Activity, ...] = ()
    last_event_id: str | None = None
    last_recorded_at: datetime | None = None


class Variable(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the variable catalogue: what a rule may read, its CEL type, its meaning."""

    name: str
    type: str
    description: str


EMPTY = LeadFacts()


def next_facts(facts: LeadFacts, recorded: RecordedEvent) -> LeadFacts:
    event = recorded.event
    state = evolve(facts.state, event)
    created_at = facts.created_at
    if isinstance(event, LeadCreated):
        created_at = recorded.recorded_at
    activities = facts.activities
    if isinstance(event, LeadActivityRecorded):
        activities = (*activities, Activity(event.kind, event.name, event.occurred_at))
    return LeadFacts(
        state=state, created_at=created_at, activities=activities,
        last_event_id=recorded.event_id, last_recorded_at=recorded.recorded_at,
    )


def fold_facts(events: Iterable[RecordedEvent], facts: LeadFacts = EMPTY) -> LeadFacts:
    for recorded in events:
        facts = next_facts(facts, recorded)
    return facts


def custom_key(name: str) -> str:
    """The `activity.<key>` under which custom activities called `name` are counted."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return f"custom_{slug}"


def activation(facts: LeadFacts, now: datetime) -> dict[str, object]:
    """The CEL variables (and the `count` / `count_named` functions) for `facts` at `now`.

    A dict because that is what CEL takes; it does not leave the scoring modules."""
    ages = [
        (a, max(0.0, (now - a.occurred_at).total_seconds() / _DAY)) for a in facts.activities
    ]
    activity: dict[str, object] = {kind: _stats([]) for kind in ACTIVITY_KINDS}
    by_key: dict[str, list[float]] = {}
    for a, age in ages:
        by_key.setdefault(a.kind, []).append(age)
        if a.kind == "custom" and a.name:
            by_key.setdefault(custom_key(a.name), []).append(age)
    for key, key_ages in by_key.items():
        activity[key] = _stats(key_ages)

    def count(kind: str, days: float) -> int:
        _check_window(days)
        if kind not in ACTIVITY_KINDS:
            raise ValueError(f"{kind!r} is not an activity kind")
        return sum(1 for a, age in ages if a.kind == kind and age < days)

    def count_named(name: str, days: float) -> int:
        _check_window(days)
        return sum(1 for a, age in ages if a.kind == "custom" and a.name == name and age < days)

    return {
        "lead": lead_variables(facts, now),
        "attributes": dict(facts.state.attributes),
        "enrichment": {name: v.value for name, v in facts.state.enrichment.items()},
        "activity": activity,
        "count": count,
        "count_named": count_named,
    }


def lead_variables(facts: LeadFacts, now: datetime) -> dict[str, object]:
    state = facts.state
    lead: dict[str, object] = {"id": state.lead_id}
    for name in FIELD_NAMES:
        value = getattr(state.fields, name)
        lead[name] = None if value is UNSET or value == "" else value
    email = lead["email"]
    created = facts.created_at
    lead.update(
        stage=state.stage, owner=state.owner, tags=list(state.tags), status=state.status,
        email_domain=email.rsplit("@", 1)[-1].lower() if isinstance(email, str) else None,
        email_status=state.email_status, quarantined=state.quarantined,
        has_email=isinstance(email, str), has_phone=isinstance(lead["phone"], str),
        age_days=max(0.0, (now - created).total_seconds() / _DAY) if created else 0.0,
        notes_count=state.notes_count,
    )
    return lead


def _stats(ages: list[float]) -> dict[str, object]:
    # One pass: this runs for every kind of every lead scored.
    week = month = quarter = 0
    decayed = 0.0
    for age in ages:
        if age < 90:
            quarter += 1
            if age < 30:
                month += 1
                if age < 7:
                    week += 1
        decayed += 0.5 ** (age / HALF_LIFE_DAYS)
    return {
        "count": len(ages), "last_7d": week, "last_30d": month, "last_90d": quarter,
        "days_since_last": min(ages) if ages else NEVER, "decayed": decayed,
    }


def _check_window(days: object) -> None:
    # CEL passes its int and double as Python int and float; anything else is a type error the
    # model's type check catches when the rule is saved.
    if isinstance(days, bool) or not isinstance(days, int | float):
        raise TypeError("the window (days) must be a number")


ACTIVITY_STATS = ("count", "last_7d", "last_30d", "last_90d", "days_since_last", "decayed")

_LEAD_EXTRA = (
    Variable(name="lead.id", type="string", description="the lead's id"),
    Variable(name="lead.stage", type="string|null", description="lifecycle stage"),
    Variable(name="lead.owner", type="string|null", description="the owner's id"),
    Variable(name="lead.tags", type="list(string)", description="the lead's tags"),
    Variable(name="lead.status", type="string",
             description="active, archived, merged or erased"),
    Variable(name="lead.email_domain", type="string|null",
             description="the email's domain, lowercased"),
    Variable(name="lead.email_status", type="string|null",
             description="valid, risky or invalid (offline check and bounces)"),
    Variable(name="lead.quarantined", type="bool",
             description="the email is invalid or hard-bounced"),
    Variable(name="lead.has_email", type="bool", description="an email is set"),
    Variable(name="lead.has_phone", type="bool", description="a phone number is set"),
    Variable(name="lead.age_days", type="double", description="days since the lead was created"),
    Variable(name="lead.notes_count", type="int", description="notes added to the lead"),
)
_STAT_DESCRIPTIONS = {
    "count": ("int", "all {what}"),
    "last_7d": ("int", "{what} in the last 7 days"),
    "last_30d": ("int", "{what} in the last 30 days"),
    "last_90d": ("int", "{what} in the last 90 days"),
    "days_since_last": ("double", "days since the latest of {what} (infinity if none)"),
    "decayed": ("double", "{what}, each weighted 0.5^(age_days/30) (30-day half-life)"),
}


def _catalogue() -> list[Variable]:
    variables = [
        Variable(name=f"lead.{n}", type="string|null", description=f"the lead's {n}, or null")
        for n in FIELD_NAMES
    ]
    variables += _LEAD_EXTRA
    variables.append(Variable(
        name="attributes.<name>", type="attribute",
        description="a custom attribute's value, typed by its definition; absent when not set",
    ))
    variables.append(Variable(
        name="enrichment.<name>", type="dyn",
        description="an enriched value (untyped; absent when not enriched)",
    ))
    for kind in (*ACTIVITY_KINDS, "custom_<name>"):
        what = f"{kind} activities" if kind != "custom_<name>" else "custom activities <name>"
        for stat, (cel_type, text) in _STAT_DESCRIPTIONS.items():
            variables.append(Variable(
                name=f"activity.{kind}.{stat}", type=cel_type, description=text.format(what=what)
            ))
    variables.append(Variable(
        name="count(kind, days)", type="function(string, int|double) -> int",
        description="activities of a kind in the last `days` days",
    ))
    variables.append(Variable(
        name="count_named(name, days)", type="function(string, int|double) -> int",
        description="custom activities with this name in the last `days` days",
    ))
    return variables


VARIABLES: list[Variable] = _catalogue()
ROOTS = ("lead", "attributes", "enrichment", "activity")
FUNCTION_NAMES = ("count", "count_named")
"""The functions an activation carries (built per activation, over that lead's activities)."""
