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

Handing values to the CEL library costs far more per value inside a map than per top-level
variable, so a rule's dotted paths are compiled as flat variables (`lead.country` is run as
`lead__country`); paths read as maps (indexed, `has()`) are handed over as pruned maps. The
text a person wrote is what is checked and reported; only the program run differs.
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
    Reference,
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
    """The compiled CEL program (cel.Program) of the rewritten expression."""
    paths: tuple[str, ...]
    """The dotted references the rule reads, for `observed`."""
    reads: tuple[tuple[str, str | None, tuple[str, ...]], ...]
    """Per path: its flat variable (None if read as a map) and its parts."""


class Inputs(msgspec.Struct, frozen=True):
    """What of an activation some rules read: flat variables and pruned maps."""

    flat: dict[str, tuple[str, ...]]
    """Variable name -> the path it stands for."""
    maps: dict[str, Any]
    """Root -> None (all of it) or a nested plan of the keys read."""
    float_attributes: frozenset[str]


class CompiledModel(msgspec.Struct, frozen=True, kw_only=True):
    spec: ScoringModelSpec
    rules: tuple[CompiledRule, ...]
    inputs: Inputs
    functions: tuple[str, ...]


def compile_model(
    spec: ScoringModelSpec, attributes: Sequence[AttributeDefinition] = ()
) -> CompiledModel:
    problems = model_problems(spec)
    definitions = {d.name: d for d in attributes}
    floats = frozenset(n for n, d in definitions.items() if d.type == "number")
    rules: list[CompiledRule] = []
    every: list[Reference] = []
    functions: set[str] = set()
    seen: set[str] = set()
    for index, rule in enumerate(spec.rules):
        found = rule_problems(index, rule.name, rule.expression, rule.points, seen)
        seen.add(rule.name)
        if found:
            problems += found
            continue
        try:
            written = cel.compile(rule.expression)
        except ValueError as exc:
            problems.append(syntax_problem(index, rule.name, str(exc)))
            continue
        refs = references(strip(rule.expression))
        found = reference_problems(index, rule.name, rule.expression, refs, definitions)
        found += unknown_roots(index, rule.name, written.references()["variables"], refs)
        if found:
            problems += found
            continue
        program = cel.compile(_flattened(rule.expression, refs.paths))
        inputs = _inputs(refs.paths, floats)
        if not any(r.path.startswith("enrichment") for r in refs.paths):
            problem = type_problem(
                program, refs, definitions, lambda v, i=inputs: _context(i, v)  # type: ignore
            )
            if problem:
                problems.append(RuleProblem(rule_index=index, rule=rule.name, message=problem))
                continue
        functions |= set(written.references()["functions"]) & set(FUNCTION_NAMES)
        every += refs.paths
        paths = dict.fromkeys(r.path for r in refs.paths)
        rules.append(CompiledRule(
            name=rule.name, points=float(rule.points), program=program,
            paths=tuple(paths), reads=tuple(
                (p, _flat_name(p) if _flat_name(p) in inputs.flat else None,
                 tuple(p.split("."))) for p in paths
            ),
        ))
    if problems:
        raise InvalidModel(problems)
    return CompiledModel(spec=spec, rules=tuple(rules), inputs=_inputs(every, floats),
                         functions=tuple(sorted(functions)))


def evaluate(
    model: CompiledModel, variables: dict[str, object], *, observe: bool = True
) -> ScoreResult:
    """The score of one lead: every rule in order, each failure isolated and reported.
    `observe=False` leaves `observed` empty (a what-if needs only the points)."""
    calls: list[tuple[str, object]] = []
    functions: dict[str, Callable[..., object]] = {
        name: _recording(name, variables[name], calls)  # type: ignore[arg-type]
        for name in model.functions
    }
    given = _context(model.inputs, variables)
    context = cel.Context(given, functions or None)
    contributions = []
    observed: dict[str, dict[str, object]] = {}
    floats = model.inputs.float_attributes
    for rule in model.rules:
        calls.clear()
        error = None
        try:
            value = rule.program.execute(context)
            if not isinstance(value, bool):
                error = f"the rule gave {type(value).__name__}, not a boolean"
        except Exception as exc:  # noqa: BLE001 - one rule's failure never breaks the score
            error = _run_error(exc, model.inputs.flat)
            value = False
        matched = error is None and value is True
        contributions.append(RuleContribution(
            rule=rule.name, points=rule.points if matched else 0.0, matched=matched, error=error,
        ))
        if not observe:
            continue
        seen = {}
        for path, flat, parts in rule.reads:
            value = given.get(flat, _ABSENT) if flat else _lookup(variables, parts, floats)
            if value is not _ABSENT:
                seen[path] = value
        if calls:
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


def _flat_name(path: str) -> str:
    return path.replace(".", "__")


def _flattens(ref: Reference) -> bool:
    return not ref.whole and "." in ref.path


def _flattened(expression: str, refs: list[Reference]) -> str:
    """The expression with each flattened path replaced by its variable (from the end, so the
    offsets before stay right)."""
    for ref in sorted(refs, key=lambda r: r.start, reverse=True):
        if _flattens(ref):
            expression = expression[:ref.start] + _flat_name(ref.path) + expression[ref.end:]
    return expression


def _inputs(refs: list[Reference], floats: frozenset[str]) -> Inputs:
    flat: dict[str, tuple[str, ...]] = {}
    maps: dict[str, Any] = {}
    for ref in refs:
        if _flattens(ref):
            flat[_flat_name(ref.path)] = tuple(ref.path.split("."))
            continue
        *parents, last = ref.path.split(".")
        node: dict[str, Any] | None = maps
        for part in parents:
            if node is None:
                break
            node = node.setdefault(part, {})
        if node is not None:
            node[last] = None  # read whole: it may be a list or a map the rule indexes
    return Inputs(flat=flat, maps=maps, float_attributes=floats)


def _context(inputs: Inputs, variables: dict[str, object]) -> dict[str, object]:
    context: dict[str, object] = {}
    floats = inputs.float_attributes
    for name, parts in inputs.flat.items():
        value = _lookup(variables, parts, floats)
        if value is not _ABSENT:  # absent: the rule fails with "no value for ..."
            context[name] = value
    for root, plan in inputs.maps.items():
        value = variables.get(root)
        if root == "attributes" and floats and isinstance(value, dict):
            value = {k: _number(k, v, floats) for k, v in value.items()}
        context[root] = _prune(value, plan, root == "activity")
    return context


def _prune(value: object, plan: dict[str, Any] | None, activity: bool = False) -> object:
    if plan is None or not isinstance(value, dict):
        return value
    pruned = {}
    for key, sub in plan.items():
        if key in value:
            pruned[key] = _prune(value[key], sub)
        elif activity and key.startswith("custom_"):
            pruned[key] = _prune(_NO_ACTIVITY, sub)
    return pruned


_NO_ACTIVITY = {s: 0 for s in ACTIVITY_STATS} | {"days_since_last": math.inf, "decayed": 0.0}
"""A custom activity the lead never did reads as zeros, like the built-in kinds."""
_ABSENT = object()


def _lookup(variables: dict[str, object], parts: tuple[str, ...], floats: frozenset[str]) -> object:
    value: object = variables
    for i, part in enumerate(parts):
        if not isinstance(value, dict) or part not in value:
            if i == 1 and parts[0] == "activity" and part.startswith("custom_"):
                value = _NO_ACTIVITY
                continue
            return _ABSENT
        value = value[part]
    if parts[0] == "attributes" and len(parts) == 2:
        return _number(parts[1], value, floats)
    return value


def _number(name: str, value: object, floats: frozenset[str]) -> object:
    """A `number` attribute stored as 3 is the double 3.0 (CEL never mixes int and double)."""
    if name in floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
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


def _run_error(exc: Exception, flat: dict[str, tuple[str, ...]]) -> str:
    if isinstance(exc, KeyError):
        return f"no value for {exc.args[0]!r}"
    if isinstance(exc, TypeError):
        return "type mismatch (no such overload; a null where a value was expected?)"
    text = str(exc)
    if isinstance(exc, RuntimeError) and "Undefined variable" in text:
        name = text.split("'", 2)[1] if text.count("'") >= 2 else ""
        if name in flat:
            return f"no value for {'.'.join(flat[name])!r}"
    return f"{type(exc).__name__}: {first_sentence(text)}"[:MAX_ERROR_LENGTH]
