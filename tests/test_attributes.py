"""Custom attribute values against their definitions, purely: types, normal forms, bounds,
required on create, clearing on patch, what no longer fits a changed definition; and, as
properties, that validation fails only with InvalidValue and settles on its own output."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.attributes import check_definition, fits, parse_text, validate
from ledger.errors import InvalidValue
from schema.attributes import AttributeDefinition

D = AttributeDefinition
DEFS = {d.name: d for d in (
    D(name="plan", type="enum", values=("free", "pro", "enterprise"), required=True),
    D(name="seats", type="integer", minimum=1, maximum=1000),
    D(name="arr", type="number", minimum=0),
    D(name="trial", type="boolean"),
    D(name="renewal", type="date"),
    D(name="signed_at", type="datetime"),
    D(name="code", type="string", pattern=r"^[A-Z]{3}-\d+$", max_length=12),
    D(name="interests", type="list", values=("ai", "data", "security")),
    D(name="birthday", type="date", personal=True),
)}


def field_of(raw: dict[str, Any], *, create: bool = True) -> str:
    with pytest.raises(InvalidValue) as error:
        validate(DEFS, raw, create=create)
    return error.value.field


def test_values_are_normalized_and_split_by_personal_data() -> None:
    checked = validate(DEFS, {
        "plan": "pro", "seats": 25.0, "arr": 1200, "trial": False, "renewal": "2026-03-01",
        "signed_at": "2025-06-01T14:30:00+02:00", "code": "ABC-12",
        "interests": ["ai", "data", "ai"], "birthday": "1815-12-10",
    }, create=True)
    assert checked.values == {
        "plan": "pro", "seats": 25, "arr": 1200.0, "trial": False, "renewal": "2026-03-01",
        "signed_at": "2025-06-01T12:30:00.000000Z", "code": "ABC-12",
        "interests": ["ai", "data"],
    }
    assert type(checked.values["seats"]) is int and type(checked.values["arr"]) is float
    assert checked.personal == {"birthday": "1815-12-10"}


@pytest.mark.parametrize(("raw", "field"), [
    ({"plan": "gold"}, "attributes.plan"),
    ({"plan": "pro", "seats": 0}, "attributes.seats"),
    ({"plan": "pro", "seats": 2.5}, "attributes.seats"),
    ({"plan": "pro", "seats": True}, "attributes.seats"),
    ({"plan": "pro", "seats": "3"}, "attributes.seats"),
    ({"plan": "pro", "arr": -1}, "attributes.arr"),
    ({"plan": "pro", "trial": "yes"}, "attributes.trial"),
    ({"plan": "pro", "renewal": "01/03/2026"}, "attributes.renewal"),
    ({"plan": "pro", "signed_at": "2025-06-01T14:30:00"}, "attributes.signed_at"),
    ({"plan": "pro", "code": "abc-12"}, "attributes.code"),
    ({"plan": "pro", "code": "ABC-1234567890"}, "attributes.code"),
    ({"plan": "pro", "interests": ["ai", "crypto"]}, "attributes.interests[1]"),
    ({"plan": "pro", "interests": "ai"}, "attributes.interests"),
    ({"plan": "pro", "colour": "red"}, "attributes.colour"),
    ({"seats": 3}, "attributes.plan"),
    ({"plan": None}, "attributes.plan"),
])
def test_each_problem_names_its_attribute(raw: dict[str, Any], field: str) -> None:
    assert field_of(raw) == field


def test_a_patch_needs_no_required_attribute_and_null_clears() -> None:
    checked = validate(DEFS, {"seats": None, "birthday": None}, create=False)
    assert checked.values == {"seats": None} and checked.personal == {"birthday": None}
    assert field_of({"plan": None}, create=False) == "attributes.plan"
    assert validate(DEFS, {"plan": "pro", "seats": None}, create=True).values == {"plan": "pro"}


def test_what_no_longer_fits_a_changed_definition() -> None:
    seats = DEFS["seats"]
    assert fits(seats, 25) is None and fits(seats, None) is None
    assert "at most 1000" in (fits(seats, 5000) or "")
    assert "integer" in (fits(seats, "many") or "")
    as_enum = D(name="seats", type="enum", values=("small", "large"))
    assert fits(as_enum, 25) is not None and fits(as_enum, "small") is None
    assert fits(D(name="seats", type="integer", required=True), None) is not None
    assert fits(D(name="seats", type="number"), 25) is None  # the same number
    assert fits(D(name="at", type="datetime"), "2025-01-01T00:00:00+00:00") is not None


def test_query_text_parses_to_the_attribute_type() -> None:
    assert parse_text(DEFS["seats"], "10", "q") == 10
    assert parse_text(DEFS["seats"], "5000", "q") == 5000  # bounds are for stored values
    assert parse_text(DEFS["arr"], "1.5", "q") == 1.5
    assert parse_text(DEFS["trial"], "true", "q") is True
    assert parse_text(DEFS["interests"], "ai", "q") == "ai"
    with pytest.raises(InvalidValue) as error:
        parse_text(DEFS["seats"], "ten", "query:attr.seats")
    assert error.value.field == "query:attr.seats"


@pytest.mark.parametrize("definition", [
    D(name="Bad", type="string"),
    D(name="x", type="string", minimum=1),
    D(name="x", type="integer", minimum=5, maximum=1),
    D(name="x", type="number", pattern="a"),
    D(name="x", type="string", pattern="("),
    D(name="x", type="enum"),
    D(name="x", type="boolean", values=("a",)),
    D(name="x", type="enum", values=("a", "a")),
])
def test_definitions_that_make_no_sense_are_refused(definition: AttributeDefinition) -> None:
    with pytest.raises(InvalidValue):
        check_definition(definition)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.dates().map(str) | st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)
raws = st.dictionaries(st.sampled_from([*DEFS, "unknown"]) | st.text(max_size=8), json_values,
                       max_size=6)


@settings(max_examples=400, deadline=None)
@given(raw=raws, create=st.booleans())
def test_validation_fails_only_with_invalid_value_and_settles(
    raw: dict[str, Any], create: bool
) -> None:
    try:
        checked = validate(DEFS, raw, create=create)
    except InvalidValue as exc:
        assert exc.field.startswith("attributes")
        return
    again = validate(DEFS, {**checked.values, **checked.personal}, create=create)
    assert again == checked
    for name, value in {**checked.values, **checked.personal}.items():
        assert fits(DEFS[name], value) is None or value is None


@settings(max_examples=300, deadline=None)
@given(value=json_values, definition=st.sampled_from(list(DEFS.values())))
def test_fits_never_raises(value: Any, definition: AttributeDefinition) -> None:
    assert fits(definition, value) is None or isinstance(fits(definition, value), str)
