"""Scoring rules: compiling a model (with every check a saved model must pass) and evaluating it.

`compile_model(spec, attributes)` refuses a model with `InvalidModel`, listing one RuleProblem
per defect: names (unique, non-empty), limits (rule count, expression length, nesting depth,
operator count: checked before the parser sees the text, so no expression can exhaust it),
syntax (with the parser's line and column), unknown variables and fields (against the
catalogue in processors/lead_facts.py and the workspace's attribute definitions), and a type
check: the rule runs against typed placeholder facts (two variants); "no such overload", an
unknown function, or a result that is not a boolean rejects it. Problems of the model as a whole
use `rule_index` -1 and `rule` "bands", "min_score"/"max_score" or "mql_threshold".

`evaluate(model, activation)` runs every rule; one that fails at run time (a missing attribute,
a null compared with `<`) contributes 0 with its error and never breaks the score. `observed`
holds, per rule, the values of the references it read (dotted paths, and calls of `count` /
`count_named` with their results). Rules that read `enrichment` skip the type check: that map is
untyped, so their type errors surface at run time.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import cel
import msgspec

from ledger.errors import InvalidValue
from processors.lead_facts import ACTIVITY_STATS, FUNCTION_NAMES, LeadFacts, activation
from processors.rule_checks import (
    first_sentence,
    model_problems,
    reference_problems,
    references,
    rule_problems,
    strip,
    syntax_problem,
    type_problem,
    unknown_roots,
)
from schema.attributes import AttributeDefinition
from schema.events import RuleContribution
from schema.scoring import RuleProblem, ScoreResult, ScoringModelSpec

MAX_ERROR_LENGTH = 200

# A failing rule is reported in its contribution; the library's own warning per failed Python
# function call would only repeat it, once per lead.
logging.getLogger("cel").setLevel(logging.ERROR)


class InvalidModel(InvalidValue):
    """A scoring model that cannot be saved; `problems` lists every defect (`field` is "rules",
    so the HTTP layer's InvalidValue mapping already answers 422)."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        first = problems[0]
        where = f"rule {first.rule!r}" if first.rule_index >= 0 else first.rule
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__("rules", f"{where}: {first.message}{more}")
        self.problems = problems


class CompiledRule(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    points: float
    program: Any
    """The compiled CEL program (cel.Program)."""
    paths: tuple[str, ...]
    """The dotted references the rule reads, for `observed`."""


class CompiledModel(msgspec.Struct, frozen=True, kw_only=True):
    spec: ScoringModelSpec
    rules: tuple[CompiledRule, ...]
    plan: dict[str, Any]
    """What of the activation the rules read: root -> None (all of it) or a nested plan.
    Converting values into CEL dominates the cost, so only these are handed over."""
    functions: tuple[str, ...]
    float_attributes: frozenset[str]


def compile_model(
    spec: ScoringModelSpec, attributes: Sequence[AttributeDefinition] = ()
) -> CompiledModel:
    problems = model_problems(spec)
    definitions = {d.name: d for d in attributes}
    rules: list[CompiledRule] = []
    plan: dict[str, Any] = {}
    functions: set[str] = set()
    seen: set[str] = set()
    for index, rule in enumerate(spec.rules):
        found = rule_problems(index, rule.name, rule.expression, rule.points, seen)
        seen.add(rule.name)
        if found:
            problems += found
            continue
        try:
            program = cel.compile(rule.expression)
        except ValueError as exc:
            problems.append(syntax_problem(index, rule.name, str(exc)))
            continue
        refs = references(strip(rule.expression))
        found = reference_problems(index, rule.name, rule.expression, refs, definitions)
        found += unknown_roots(index, rule.name, program.references()["variables"], refs)
        if found:
            problems += found
            continue
        used = set(program.references()["functions"]) & set(FUNCTION_NAMES)
        if not any(p.startswith("enrichment") for p, _, _ in refs.paths):
            problem = type_problem(program, refs, definitions)
            if problem:
                problems.append(RuleProblem(rule_index=index, rule=rule.name, message=problem))
                continue
        functions |= used
        for path, _, _ in refs.paths:
            _add_to_plan(plan, path)
        rules.append(CompiledRule(
            name=rule.name, points=float(rule.points), program=program,
            paths=tuple(dict.fromkeys(p for p, _, _ in refs.paths)),
        ))
    if problems:
        raise InvalidModel(problems)
    floats = frozenset(n for n, d in definitions.items() if d.type == "number")
    return CompiledModel(
        spec=spec, rules=tuple(rules), plan=plan, functions=tuple(sorted(functions)),
        float_attributes=floats,
    )


def evaluate(model: CompiledModel, variables: dict[str, object]) -> ScoreResult:
    """The score of one lead: every rule in order, each failure isolated and reported."""
    context = _context(model, variables)
    calls: list[tuple[str, object]] = []
    functions: dict[str, Callable[..., object]] = {
        name: _recording(name, variables[name], calls)  # type: ignore[arg-type]
        for name in model.functions
    }
    if functions:
        context = cel.Context(context, functions)
    contributions = []
    observed: dict[str, dict[str, object]] = {}
    for rule in model.rules:
        calls.clear()
        error = None
        try:
            value = rule.program.execute(context)
            if not isinstance(value, bool):
                error = f"the rule gave {type(value).__name__}, not a boolean"
        except Exception as exc:  # noqa: BLE001 - one rule's failure never breaks the score
            error = _run_error(exc)
            value = False
        matched = error is None and value is True
        contributions.append(RuleContribution(
            rule=rule.name, points=rule.points if matched else 0.0, matched=matched, error=error,
        ))
        seen = {p: v for p in rule.paths if (v := _resolve(variables, p)) is not _ABSENT}
        seen.update(calls)
        observed[rule.name] = seen
    uncapped = float(sum(c.points for c in contributions))
    total = _clamp(model.spec, uncapped)
    return ScoreResult(
        total=total, band=band_of(model.spec, total), contributions=tuple(contributions),
        observed=observed, uncapped=uncapped,
    )


def score_lead(model: CompiledModel, facts: LeadFacts, now: datetime) -> ScoreResult:
    return evaluate(model, activation(facts, now))


def digest(model_id: str, version: int, result: ScoreResult) -> str:
    """A fingerprint of (model, total, band, contributions): observed values are left out, so
    a lead that merely ages does not get a new score event."""
    payload = msgspec.json.encode(
        [model_id, version, result.total, result.band, result.contributions]
    )
    return hashlib.sha256(payload).hexdigest()[:32]


def band_of(spec: ScoringModelSpec, total: float) -> str | None:
    for band in sorted(spec.bands, key=lambda b: b.min_score, reverse=True):
        if total >= band.min_score:
            return band.name
    return None


def _clamp(spec: ScoringModelSpec, value: float) -> float:
    if spec.min_score is not None:
        value = max(spec.min_score, value)
    if spec.max_score is not None:
        value = min(spec.max_score, value)
    return value


def _context(model: CompiledModel, variables: dict[str, object]) -> dict[str, object]:
    pruned: dict[str, object] = {}
    for root, plan in model.plan.items():
        value = variables.get(root)
        if root == "attributes" and model.float_attributes:
            value = {
                k: float(v) if k in model.float_attributes and isinstance(v, int)
                and not isinstance(v, bool) else v
                for k, v in value.items()  # type: ignore[union-attr]
            }
        pruned[root] = _prune(value, plan, root == "activity")
    return pruned


def _prune(value: object, plan: dict[str, Any] | None, activity: bool = False) -> object:
    if plan is None or not isinstance(value, dict):
        return value
    pruned = {}
    for key, sub in plan.items():
        if key in value:
            pruned[key] = _prune(value[key], sub)
        elif activity and key.startswith("custom_"):
            # A custom activity the lead never did reads as zeros, like the built-in kinds.
            pruned[key] = _prune(_NO_ACTIVITY, sub)
    return pruned


_NO_ACTIVITY = {s: 0 for s in ACTIVITY_STATS} | {"days_since_last": math.inf, "decayed": 0.0}


def _add_to_plan(plan: dict[str, Any], path: str) -> None:
    """A path read is handed over whole (it may be a list or a map the rule indexes)."""
    *parents, last = path.split(".")
    node = plan
    for part in parents:
        if part in node and node[part] is None:
            return
        node = node.setdefault(part, {})
    node[last] = None


_ABSENT = object()


def _resolve(variables: dict[str, object], path: str) -> object:
    value: object = variables
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            if part.startswith("custom_") and value is variables.get("activity"):
                value = _NO_ACTIVITY
                continue
            return _ABSENT
        value = value[part]
    return value


def _recording(
    name: str, function: Callable[..., object], calls: list[tuple[str, object]]
) -> Callable[..., object]:
    def call(*args: object) -> object:
        result = function(*args)
        calls.append((f"{name}({', '.join(msgspec.json.encode(a).decode() for a in args)})",
                      result))
        return result
    return call


def _run_error(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no value for {exc.args[0]!r}"
    if isinstance(exc, TypeError):
        return "type mismatch (no such overload; a null where a value was expected?)"
    return f"{type(exc).__name__}: {first_sentence(str(exc))}"[:MAX_ERROR_LENGTH]


