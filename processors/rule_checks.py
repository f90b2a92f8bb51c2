"""The checks a scoring rule passes before its model is saved (see processors/rules.py).

Limits first, on the raw text (length, nesting depth, operator count), so no expression reaches
the CEL parser that could exhaust it; then the references a rule reads, found by scanning the
text with its string literals and comments blanked (the CEL library only names the root
variables), checked against the catalogue of processors/lead_facts.py and the workspace's
attribute definitions; then a type check that runs the compiled rule against typed placeholder
facts in two variants (every field set, one activity of each kind, each attribute a value of
its defined type).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cel
import msgspec

from ledger.lead import LeadState
from processors.lead_facts import (
    ACTIVITY_STATS,
    FUNCTION_NAMES,
    ROOTS,
    Activity,
    LeadFacts,
    activation,
    lead_variables,
)
from schema.attributes import AttributeDefinition
from schema.events import FIELD_NAMES, LeadFields
from schema.scoring import MAX_EXPRESSION_LENGTH, MAX_RULES, RuleProblem, ScoringModelSpec
from schema.vocabularies import ACTIVITY_KINDS

MAX_NESTING = 12
MAX_OPERATORS = 150
MAX_MESSAGE_LENGTH = 200

_STRING = re.compile(
    r"""[rRbB]{0,2}(\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*')"""
    r"|//[^\n]*"
)
_CHAIN = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\s*\.\s*[A-Za-z_]\w*)*)(\s*[(\[]|\s*\.\s*\?)?")
_MACRO_VAR = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")
_OPERATOR = re.compile(r"&&|\|\||[=!<>]=|[<>+\-*/%!?]|\w\s*\(")
_NAME = re.compile(r"[A-Za-z_]\w*")
_HAS = re.compile(r"(?<![\w.])has\s*\(\s*\Z")
_POSITION = re.compile(r"<input>:(\d+):(\d+)")
_KEYWORDS = frozenset((
    "true", "false", "null", "in", "int", "uint", "double", "string", "bool", "bytes", "list",
    "map", "type", "null_type", "dyn",
))
_LEAD_KEYS = frozenset(lead_variables(LeadFacts(), datetime(2000, 1, 1, tzinfo=UTC)))


class Reference(msgspec.Struct, frozen=True):
    path: str
    """Dotted, e.g. `activity.page_view.last_7d`."""
    start: int
    end: int
    """Where the path stands in the expression (a method call's name excluded)."""
    whole: bool
    """Read as a map: indexed (`x[...]`), optional (`x.?y`) or tested with `has()`."""


class References(msgspec.Struct):
    paths: list[Reference]
    bound: set[str]
    """Comprehension variables (the `t` of `lead.tags.exists(t, ...)`)."""


def model_problems(spec: ScoringModelSpec) -> list[RuleProblem]:
    problems: list[RuleProblem] = []

    def model(what: str, message: str) -> None:
        problems.append(RuleProblem(rule_index=-1, rule=what, message=message))

    if not spec.rules:
        model("rules", "a model needs at least one rule")
    if len(spec.rules) > MAX_RULES:
        model("rules", f"a model has at most {MAX_RULES} rules")
    names = [b.name for b in spec.bands]
    if any(not n.strip() for n in names):
        model("bands", "every band needs a name")
    if len(set(names)) != len(names):
        model("bands", "band names must be unique")
    mins = [b.min_score for b in spec.bands]
    if not all(math.isfinite(m) for m in mins):
        model("bands", "a band's min_score must be a finite number")
    elif len(set(mins)) != len(mins):
        model("bands", "two bands cannot start at the same min_score")
    for what in ("min_score", "max_score", "mql_threshold"):
        value = getattr(spec, what)
        if value is not None and not math.isfinite(value):
            model(what, f"{what} must be a finite number")
    if spec.min_score is not None and spec.max_score is not None and (
        spec.min_score > spec.max_score
    ):
        model("min_score", "min_score must not exceed max_score")
    return problems


def rule_problems(
    index: int, name: str, expression: str, points: float, seen: set[str]
) -> list[RuleProblem]:
    messages = []
    if not name.strip():
        messages.append("a rule needs a name")
    elif name in seen:
        messages.append(f"another rule is already called {name!r}")
    if not math.isfinite(points):
        messages.append("points must be a finite number")
    if not expression.strip():
        messages.append("the expression is empty")
    if len(expression) > MAX_EXPRESSION_LENGTH:
        messages.append(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    problems = [RuleProblem(rule_index=index, rule=name, message=m) for m in messages]
    if messages:
        return problems
    stripped = strip(expression)
    depth = 0
    for offset, char in enumerate(stripped):
        depth += char in "([{"
        depth -= char in ")]}"
        if depth > MAX_NESTING:
            line, column = _line_column(expression, offset)
            return [RuleProblem(
                rule_index=index, rule=name, line=line, column=column,
                message=f"nested more than {MAX_NESTING} levels deep",
            )]
    if len(_OPERATOR.findall(stripped)) > MAX_OPERATORS:
        problems.append(RuleProblem(
            rule_index=index, rule=name,
            message=f"more than {MAX_OPERATORS} operators and calls; split the rule",
        ))
    return problems


def strip(expression: str) -> str:
    """The expression with string literals and comments blanked, offsets kept."""
    def blank(match: re.Match[str]) -> str:
        text = match.group(0)
        if text.startswith("//"):
            return " " * len(text)
        return '"' + " " * (len(text) - 2) + '"'
    return _STRING.sub(blank, expression)


def references(stripped: str) -> References:
    bound = set(_MACRO_VAR.findall(stripped))
    paths: list[Reference] = []
    for match in _CHAIN.finditer(stripped):
        parts = [(m.group(0), m.start(), m.end())
                 for m in _NAME.finditer(match.group(1), 0)]
        after = (match.group(2) or "").strip()
        if after == "(":
            if len(parts) == 1:
                continue  # a global function: the type check finds an unknown one
            parts = parts[:-1]  # a method call: its receiver is what the rule reads
        if parts[0][0] in _KEYWORDS or parts[0][0] in bound:
            continue
        start = match.start(1)
        guarded = _HAS.search(stripped, 0, start) is not None
        paths.append(Reference(
            path=".".join(p for p, _, _ in parts), start=start, end=start + parts[-1][2],
            whole=after in ("[", ".?") or guarded,
        ))
    return References(paths=paths, bound=bound)


def reference_problems(
    index: int, name: str, expression: str, refs: References,
    definitions: dict[str, AttributeDefinition],
) -> list[RuleProblem]:
    problems = []
    for ref in refs.paths:
        message = _unknown(ref.path.split("."), definitions)
        if message:
            line, column = _line_column(expression, ref.start)
            problems.append(RuleProblem(
                rule_index=index, rule=name, message=message, line=line, column=column
            ))
    return problems


def unknown_roots(
    index: int, name: str, variables: list[str], refs: References
) -> list[RuleProblem]:
    """What the library saw as variables, in case the text scan missed one."""
    seen = {r.path.split(".")[0] for r in refs.paths}
    return [
        RuleProblem(rule_index=index, rule=name, message=f"unknown variable {v!r}")
        for v in variables if v not in ROOTS and v not in refs.bound and v not in seen
    ]


def _unknown(parts: list[str], definitions: dict[str, AttributeDefinition]) -> str | None:
    root, rest = parts[0], parts[1:]
    if root not in ROOTS:
        return f"unknown variable {root!r} (there are {', '.join(ROOTS)})"
    if not rest:
        return None
    key = rest[0]
    if root == "lead" and key not in _LEAD_KEYS:
        return f"lead has no field {key!r}"
    if root == "attributes" and key not in definitions:
        return f"no custom attribute is called {key!r}"
    if root == "activity":
        if key not in ACTIVITY_KINDS and not key.startswith("custom_"):
            return f"{key!r} is not an activity kind (nor custom_<name>)"
        if len(rest) > 1 and rest[1] not in ACTIVITY_STATS:
            return f"activity.{key} has no {rest[1]!r} (it has {', '.join(ACTIVITY_STATS)})"
    return None


def syntax_problem(index: int, name: str, text: str) -> RuleProblem:
    position = _POSITION.search(text)
    detail = text.split("ERROR:", 1)[-1].split("\n", 1)[0].strip()
    detail = _POSITION.sub("", detail).lstrip(": ").strip().split(" expecting ", 1)[0]
    detail = detail.removeprefix("Syntax error:").strip()
    return RuleProblem(
        rule_index=index, rule=name, message=f"syntax error: {detail}",
        line=int(position.group(1)) if position else None,
        column=int(position.group(2)) if position else None,
    )


def type_problem(
    program: Any, refs: References, definitions: dict[str, AttributeDefinition],
    context_of: Callable[[dict[str, object]], dict[str, object]],
) -> str | None:
    """Runs the rule on placeholder facts; `context_of` turns an activation into what the
    rule's program reads (the same function evaluation uses)."""
    customs = {
        r.path.split(".")[1] for r in refs.paths if r.path.startswith("activity.custom_")
    }
    for variant in (0, 1):
        try:
            variables, functions = _probe(variant, customs, definitions)
            value = program.execute(cel.Context(context_of(variables), functions))
        except TypeError:
            return "does not type-check: an operator or function got operands of the wrong " \
                "type (CEL does not convert: compare int with int, use double(x) or string(x))"
        except KeyError as exc:
            return f"unknown field {exc.args[0]!r}"
        except RuntimeError as exc:
            text = str(exc)
            if "Undefined variable or function" in text:
                return first_sentence(text)
            if "Python function call failed:" in text:
                name = text.split("'", 2)[1]
                detail = text.split("Python function call failed:", 1)[1]
                return f"{name}(): {first_sentence(detail.split(':', 1)[-1].strip())}"
            # Anything else (a bad regex, a parse of text) depends on the data: reported at
            # run time.
            continue
        except (ArithmeticError, IndexError, ValueError):  # data-dependent, e.g. x / 0
            continue
        if not isinstance(value, bool):
            return f"must evaluate to a boolean, not {type(value).__name__}"
    return None


def _probe(
    variant: int, customs: set[str], definitions: dict[str, AttributeDefinition]
) -> tuple[dict[str, object], dict[str, Callable[..., object]]]:
    """Placeholder facts of the right types: every field set, one activity of each kind."""
    text = ("x", "y")[variant]  # never "" (that reads as null: null safety is a run-time matter)
    when = datetime(2026, 1, 1, tzinfo=UTC)
    state = LeadState(
        lead_id="probe", status="active", stage="lead", owner=text, tags=(text,),
        fields=LeadFields(**{n: text for n in FIELD_NAMES}), email_status="valid",
        attributes={n: _placeholder(d, variant) for n, d in definitions.items()},
    )
    names = [c.removeprefix("custom_") for c in customs]
    facts = LeadFacts(
        state=state, created_at=when,
        activities=tuple(Activity(k, names[0] if names and k == "custom" else None, when)
                         for k in ACTIVITY_KINDS),
    )
    variables = activation(facts, when)
    stats = variables["activity"]["page_view"]  # type: ignore[index]
    for key in customs:
        variables["activity"].setdefault(key, stats)  # type: ignore[union-attr]
    functions = {n: _strict(variables.pop(n)) for n in FUNCTION_NAMES}  # type: ignore[arg-type]
    return variables, functions


def _strict(function: Callable[..., object]) -> Callable[..., object]:
    def probe(first: object, days: object) -> object:
        if not isinstance(first, str):
            raise TypeError("the first argument must be a string")
        return function(first, days)
    return probe


def _placeholder(definition: AttributeDefinition, variant: int) -> object:
    match definition.type:
        case "number":
            return (1.5, 2.5)[variant]
        case "integer":
            return (1, 2)[variant]
        case "boolean":
            return (True, False)[variant]
        case "date":
            return "2026-01-01"
        case "datetime":
            return "2026-01-01T00:00:00Z"
        case "enum":
            values = definition.values or ("x",)
            return values[0] if variant == 0 else values[-1]
        case "list":
            return (["x"], [])[variant]
        case _:
            return ("x", "")[variant]


def first_sentence(text: str) -> str:
    return text.split("\n", 1)[0].split(". ", 1)[0][:MAX_MESSAGE_LENGTH]


def _line_column(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
