"""Custom attribute values checked against a workspace's definitions, purely.

Owns what a valid value is: its type, its normal form (integers as int, numbers as float, dates
as `YYYY-MM-DD`, datetimes in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ` — one fixed width, so that
stored text sorts in time order, which the leads list's index relies on), and its bounds. Writes
validate through `validate`; a changed definition reports the stored values that no longer fit
through `fits`; queries parse their text through `parse_text`. Also `check_definition`: whether
a definition itself makes sense (bounds only where they apply, a pattern that compiles).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import msgspec

from ledger.errors import InvalidValue
from schema.attributes import ATTRIBUTE_NAME_PATTERN, AttributeDefinition
from schema.events import AttributeValue

MAX_STRING = 2000
"""A string (or list item) without its own `max_length` is at most this long."""
MAX_ITEMS = 100
"""Items in a list value."""
INT_BOUND = 2**63
"""Integers stay within 64 bits, as every JSON reader downstream can hold them."""
_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
NUMERIC = ("number", "integer")
RANGED = ("number", "integer", "date", "datetime", "string")
"""Types whose values order meaningfully (text lexically, dates by their fixed-width form)."""


class AttributeValues(msgspec.Struct, frozen=True, kw_only=True):
    """A request's attribute values, normalized and split by personal data (None clears)."""

    values: dict[str, AttributeValue] = {}
    personal: dict[str, AttributeValue] = {}


def validate(
    definitions: Mapping[str, AttributeDefinition],
    raw: Mapping[str, Any] | None,
    *,
    create: bool,
) -> AttributeValues:
    """`raw` checked against the current (not retired) `definitions`.

    On create every required attribute must be given and a null is the same as absent; on a
    patch an absent attribute is left alone and null clears one (a required one cannot be
    cleared). Raises InvalidValue naming `attributes.<name>` for the first problem."""
    raw = raw or {}
    if not isinstance(raw, Mapping):
        raise InvalidValue("attributes", "an object of attribute names to values")
    values: dict[str, AttributeValue] = {}
    personal: dict[str, AttributeValue] = {}
    for name in sorted(raw, key=str):
        field = f"attributes.{name}"
        definition = definitions.get(name) if isinstance(name, str) else None
        if definition is None:
            raise InvalidValue(field, "no such attribute in this workspace (see /v1/attributes)")
        value = raw[name]
        if value is None:
            if create:
                continue
            if definition.required:
                raise InvalidValue(field, "a required attribute cannot be cleared")
            normalized: AttributeValue = None
        else:
            normalized = normalize(definition, value)
        (personal if definition.personal else values)[name] = normalized
    if create:
        for name, definition in sorted(definitions.items()):
            if definition.required and (values.get(name) is None and personal.get(name) is None):
                raise InvalidValue(f"attributes.{name}", "required")
    return AttributeValues(values=values, personal=personal)


def fits(definition: AttributeDefinition, value: Any) -> str | None:
    """Why a stored value no longer fits `definition` (None when it does). A missing value
    (None) fits unless the attribute is required."""
    if value is None:
        return "missing, and the attribute is required" if definition.required else None
    try:
        normalized = normalize(definition, value)
    except InvalidValue as exc:
        return str(exc).split(": ", 1)[-1]
    if normalized != value:
        # e.g. a datetime stored in another form: right in substance, not in the stored one.
        return f"stored as {value!r}, whose {definition.type} form is {normalized!r}"
    return None


def normalize(definition: AttributeDefinition, value: Any) -> AttributeValue:
    """The value in its stored form, or InvalidValue naming `attributes.<name>`."""
    field = f"attributes.{definition.name}"
    match definition.type:
        case "string":
            return _text(definition, field, value)
        case "enum":
            if not isinstance(value, str):
                raise InvalidValue(field, "expected one of " + ", ".join(definition.values))
            if value not in definition.values:
                raise InvalidValue(field, f"{_short(value)!r} is not one of "
                                   + ", ".join(definition.values))
            return value
        case "number":
            number = _number(field, value, "a number")
            _bounds(definition, field, number)
            return float(number)
        case "integer":
            number = _number(field, value, "an integer")
            if isinstance(number, float):
                if not number.is_integer():
                    raise InvalidValue(field, f"expected an integer, got {number!r}")
                number = int(number)
            if not -INT_BOUND < number < INT_BOUND:
                raise InvalidValue(field, "an integer of at most 64 bits")
            _bounds(definition, field, number)
            return number
        case "boolean":
            if not isinstance(value, bool):
                raise InvalidValue(field, "expected true or false")
            return value
        case "date":
            return _date(field, value)
        case "datetime":
            return _datetime(field, value)
        case "list":
            if not isinstance(value, list | tuple):
                raise InvalidValue(field, "expected a list of strings")
            if len(value) > MAX_ITEMS:
                raise InvalidValue(field, f"at most {MAX_ITEMS} items")
            items = [_text(definition, f"{field}[{i}]", item) for i, item in enumerate(value)]
            if definition.values:
                for i, item in enumerate(items):
                    if item not in definition.values:
                        raise InvalidValue(f"{field}[{i}]", f"{_short(item)!r} is not one of "
                                           + ", ".join(definition.values))
            return list(dict.fromkeys(items))  # a set of labels: repeats say nothing more
    raise InvalidValue(field, f"unknown attribute type {definition.type!r}")


def parse_text(definition: AttributeDefinition, text: str, field: str) -> AttributeValue:
    """A query parameter's text as a value of the attribute's type (for filters)."""
    value: Any = text
    if definition.type in NUMERIC:
        try:
            value = int(text) if definition.type == "integer" else float(text)
        except ValueError:
            kind = "an integer" if definition.type == "integer" else "a number"
            raise InvalidValue(field, f"expected {kind}, got {_short(text)!r}") from None
    elif definition.type == "boolean":
        if text not in ("true", "false"):
            raise InvalidValue(field, "expected true or false")
        value = text == "true"
    probe = definition if definition.type != "list" else msgspec.structs.replace(
        definition, type="string", pattern=None, max_length=None)
    # Bounds describe stored values, not the edges of a query's range.
    probe = msgspec.structs.replace(probe, minimum=None, maximum=None, required=False)
    try:
        return normalize(probe, value)
    except InvalidValue as exc:
        raise InvalidValue(field, str(exc).split(": ", 1)[-1]) from None


def check_definition(definition: AttributeDefinition) -> None:
    """Raises InvalidValue naming the part of a definition that makes no sense."""
    if not _NAME.match(definition.name):
        raise InvalidValue("name", "lowercase letters, digits and _, starting with a letter, "
                           "at most 63")
    kind = definition.type
    if definition.minimum is not None or definition.maximum is not None:
        if kind not in NUMERIC:
            raise InvalidValue("minimum", "minimum and maximum apply to numbers and integers")
        for part in ("minimum", "maximum"):
            bound = getattr(definition, part)
            if bound is not None and not math.isfinite(bound):
                raise InvalidValue(part, "a finite number")
        if (definition.minimum is not None and definition.maximum is not None
                and definition.minimum > definition.maximum):
            raise InvalidValue("maximum", "below minimum")
    if (definition.pattern is not None or definition.max_length is not None) and kind not in (
        "string", "list"
    ):
        raise InvalidValue("pattern", "pattern and max_length apply to strings and lists")
    if definition.max_length is not None and not 1 <= definition.max_length <= MAX_STRING:
        raise InvalidValue("max_length", f"between 1 and {MAX_STRING}")
    if definition.pattern is not None:
        try:
            _compiled(definition.pattern)
        except re.error as exc:
            raise InvalidValue("pattern", f"not a regular expression: {exc}") from None
    if kind == "enum" and not definition.values:
        raise InvalidValue("values", "an enum needs its values")
    if definition.values:
        if kind not in ("enum", "list"):
            raise InvalidValue("values", "values apply to enums and lists")
        if len(set(definition.values)) != len(definition.values):
            raise InvalidValue("values", "a value appears twice")
        for i, allowed in enumerate(definition.values):
            if not allowed or len(allowed) > MAX_STRING or _CONTROL.search(allowed):
                raise InvalidValue(f"values[{i}]", "1 to 2000 characters, no control ones")


def _text(definition: AttributeDefinition, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(field, "expected a string")
    if _CONTROL.search(value):
        raise InvalidValue(field, "control characters are not allowed")
    limit = definition.max_length or MAX_STRING
    if len(value) > limit:
        raise InvalidValue(field, f"at most {limit} characters")
    if definition.pattern is not None and not _compiled(definition.pattern).search(value):
        raise InvalidValue(field, f"does not match the pattern {definition.pattern!r}")
    return value


def _number(field: str, value: Any, kind: str) -> int | float:
    # bool is an int to Python, never a number to a person.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(field, f"expected {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue(field, "a finite number")
    return value


def _bounds(definition: AttributeDefinition, field: str, number: float) -> None:
    if definition.minimum is not None and number < definition.minimum:
        raise InvalidValue(field, f"at least {definition.minimum:g}")
    if definition.maximum is not None and number > definition.maximum:
        raise InvalidValue(field, f"at most {definition.maximum:g}")


def _date(field: str, value: Any) -> str:
    if isinstance(value, str) and len(value) == 10:
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError:
            pass
    raise InvalidValue(field, "expected a date as YYYY-MM-DD")


def _datetime(field: str, value: Any) -> str:
    if isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            raise InvalidValue(field, "a datetime needs a time zone (e.g. Z or +02:00)")
        if parsed is not None:
            try:
                utc = parsed.astimezone(UTC).replace(tzinfo=None)
            except OverflowError:
                raise InvalidValue(field, "out of the range of years 1 to 9999") from None
            return utc.isoformat(timespec="microseconds") + "Z"
    raise InvalidValue(field, "expected an ISO 8601 datetime with a time zone")


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."
