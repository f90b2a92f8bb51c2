"""The shapes of scoring: a model (rules in CEL, caps, bands), and a lead's computed score.

A model is versioned and immutable once active: a change is a new version. Rules are CEL
expressions that evaluate to a boolean over the lead's facts (see processors/lead_facts.py for
the variables); a matching rule adds its points (negative points subtract).
"""

from __future__ import annotations

import msgspec

from schema.events import RuleContribution

MAX_RULES = 200
MAX_EXPRESSION_LENGTH = 2_000


class ScoringRule(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    expression: str
    """CEL, evaluating to a boolean, e.g. `lead.country == "DE" && lead.employees >= 200`."""
    points: float
    description: str = ""


class ScoreBand(msgspec.Struct, frozen=True, kw_only=True):
    """A lead is in the first band (highest `min_score` first) whose `min_score` it reaches."""

    name: str
    min_score: float


class ScoringModelSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a person writes: the rules, optional caps on the total, the bands, and the score at
    which a lead counts as marketing-qualified."""

    rules: tuple[ScoringRule, ...]
    bands: tuple[ScoreBand, ...] = ()
    min_score: float | None = None
    max_score: float | None = None
    mql_threshold: float | None = None
    description: str = ""


class RuleProblem(msgspec.Struct, frozen=True, kw_only=True):
    """Why a rule was refused when its model was saved: where (1-based line and column in the
    expression, when known) and what."""

    rule_index: int
    rule: str
    message: str
    line: int | None = None
    column: int | None = None


class ScoreResult(msgspec.Struct, frozen=True, kw_only=True):
    """A lead's score under one model: `total` is the sum of the contributions' points, capped;
    `observed` maps each rule's name to the values it read."""

    total: float
    band: str | None
    contributions: tuple[RuleContribution, ...]
    observed: dict[str, dict[str, object]]
    uncapped: float
