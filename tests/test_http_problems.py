"""The one exception-to-problem table (pure)."""

from __future__ import annotations

import psycopg
from litestar.exceptions import NotFoundException, ValidationException
from psycopg_pool import PoolTimeout

from api.http.problems import field_error, to_problem
from ledger.errors import (
    ConcurrencyError,
    DuplicateLead,
    InvalidValue,
    LeadArchivedError,
    LeadGone,
    LeadNotFound,
)


def test_exceptions_map_to_stable_problem_types() -> None:
    cases = [
        (ConcurrencyError("l1", 3, 4), 412, "precondition-failed"),
        (LeadNotFound("x"), 404, "not-found"),
        (LeadGone("x"), 410, "gone"),
        (LeadArchivedError("x"), 409, "lead-archived"),
        (DuplicateLead("l2", ("email",)), 409, "duplicate-lead"),
        (InvalidValue("stage", "nope"), 422, "validation-failed"),
        (ValidationException(extra=[{"message": "Expected `int`", "key": "limit",
                                     "source": "query"}]), 422, "validation-failed"),
        (ValidationException("Input data was truncated"), 400, "bad-request"),
        (RecursionError("maximum recursion depth exceeded while deserializing"), 400,
         "bad-request"),
        (NotFoundException(), 404, "not-found"),
        (PoolTimeout("no connection"), 503, "unavailable"),
        (psycopg.OperationalError("server closed the connection"), 503, "unavailable"),
        (ZeroDivisionError(), 500, "internal"),
    ]
    for exc, status, slug in cases:
        problem = to_problem(exc)
        assert (problem.type.status, problem.type.slug) == (status, slug), exc
    assert to_problem(ConcurrencyError("l1", 3, 4)).current_version == 4
    assert to_problem(DuplicateLead("l2", ("email",))).existing_id == "l2"
    assert to_problem(PoolTimeout("x")).headers["Retry-After"] == "1"
    assert "ZeroDivision" not in to_problem(ZeroDivisionError("secret")).detail


def test_msgspec_messages_name_the_field() -> None:
    assert field_error("Expected `str` of length <= 200 - at `$.first_name`").field == "first_name"
    assert field_error("Object contains unknown field `x`").field == "x"
    assert field_error("Object contains unknown field `x` - at `$.leads[2]`").field == "leads[2].x"
    assert field_error("Object missing required field `text`").field == "text"
    assert field_error("Expected `object`, got `str`").field == "body"
