"""Errors as RFC 9457 problem details: one catalogue of problem types, one exception mapper.

Every error the API returns is `application/problem+json` with a stable `type` (a relative URI
that resolves to this catalogue at GET /problems/{slug}), a `title` that is the same for every
occurrence of the type, a human `detail`, and for validation errors the offending `errors`, each
naming its field and what was expected. Nothing a client sends can produce a 500: unexpected
exceptions are logged with the request id and answered with a generic 500 that leaks nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from psycopg_pool import PoolTimeout

from ledger.errors import (
    ConcurrencyError,
    DuplicateLead,
    InvalidValue,
    LeadAlreadyExists,
    LeadArchivedError,
    LeadGone,
    LeadNotFound,
    LedgerError,
)
from ledger.lead_input import UnknownTerm
from schema.scoring import RuleProblem

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("leadledger.http")


class ProblemType(msgspec.Struct, frozen=True):
    slug: str
    status: int
    title: str
    description: str


_CATALOGUE = (
    ProblemType("bad-request", 400, "Bad request",
                "The request is malformed: unparseable JSON, a malformed header or cursor."),
    ProblemType("unauthorized", 401, "Unauthorized",
                "No API key, or one that is unknown, wrong or revoked. Send "
                "`Authorization: Bearer <key>`."),
    ProblemType("forbidden", 403, "Forbidden",
                "The key's role may not do this (analyst keys are read-only)."),
    ProblemType("not-found", 404, "Not found",
                "No such resource in the key's workspace."),
    ProblemType("method-not-allowed", 405, "Method not allowed",
                "The resource does not support this method."),
    ProblemType("not-acceptable", 406, "Not acceptable",
                "The API answers in JSON only."),
    ProblemType("conflict", 409, "Conflict",
                "The request conflicts with the resource's current state."),
    ProblemType("duplicate-lead", 409, "Duplicate lead",
                "The lead's identity (email, phone or external id) or a likely match already "
                "belongs to another lead: `existing_id` names it, `matched` says what matched, "
                "`exact` whether it was an identity (true) or a likely match (false), and "
                "`score` how alike (0–100)."),
    ProblemType("lead-archived", 409, "Lead archived",
                "The lead is archived and takes no change until it is restored."),
    ProblemType("idempotency-in-flight", 409, "Request in flight",
                "A request with this Idempotency-Key is still being processed; retry later."),
    ProblemType("gone", 410, "Gone",
                "The lead was erased or merged into another lead."),
    ProblemType("precondition-failed", 412, "Precondition failed",
                "If-Match names a version that is no longer the lead's current version."),
    ProblemType("payload-too-large", 413, "Payload too large",
                "The request body exceeds the size limit of this endpoint."),
    ProblemType("unsupported-media-type", 415, "Unsupported media type",
                "Request bodies must be `application/json`."),
    ProblemType("validation-failed", 422, "Validation failed",
                "One or more fields are invalid; `errors` names each one and what was expected "
                "(for a value outside a controlled vocabulary, every `allowed` value and the "
                "closest `suggestion`)."),
    ProblemType("idempotency-key-reused", 422, "Idempotency-Key reused",
                "This Idempotency-Key was already used with a different request."),
    ProblemType("precondition-required", 428, "Precondition required",
                "This workspace requires If-Match (the lead's ETag) on PATCH."),
    ProblemType("rate-limited", 429, "Too many requests",
                "The key exceeded its request quota; see the RateLimit and Retry-After headers."),
    ProblemType("internal", 500, "Internal server error",
                "An unexpected error; the request id identifies it in the server's logs."),
    ProblemType("unavailable", 503, "Service unavailable",
                "A dependency is unavailable or the read model has not yet reached the "
                "requested consistency token; retry after the Retry-After delay."),
)
PROBLEM_TYPES: Mapping[str, ProblemType] = {p.slug: p for p in _CATALOGUE}
_DEFAULT_FOR_STATUS: Mapping[int, str] = {
    400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found",
    405: "method-not-allowed", 406: "not-acceptable", 409: "conflict", 410: "gone",
    412: "precondition-failed", 413: "payload-too-large", 415: "unsupported-media-type",
    422: "validation-failed", 428: "precondition-required", 429: "rate-limited",
    500: "internal", 503: "unavailable",
}


class FieldError(msgspec.Struct, frozen=True, omit_defaults=True):
    field: str
    """Where: a body field (`email`, `leads[3].stage`), a query parameter or a header."""
    message: str
    """What was expected."""
    allowed: list[str] | None = None
    """For a value outside a controlled vocabulary: every allowed code."""
    suggestion: str | None = None
    """For a value outside a controlled vocabulary: the closest allowed code, if any."""


class Problem(msgspec.Struct, frozen=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None
    current_version: int | None = None
    """On 412: the lead's current version (its ETag)."""
    existing_id: str | None = None
    """On a duplicate: the lead that already has this identity (or the likely match)."""
    matched: list[str] | None = None
    """On a duplicate: what matched (`email`, `phone`, `external`; for a likely duplicate,
    `name`, `company`, `email_local_part`...)."""
    exact: bool | None = None
    """On a duplicate: true for an identity (email, phone, external id) match, false for a
    likely (fuzzy) match."""
    score: float | None = None
    """On a duplicate: how alike, 0–100 (100 for an exact match)."""
    problems: list[RuleProblem] | None = None
    """On a refused scoring model: each rule that does not compile, by index and name, with
    the line and column (1-based, within its expression) of the error when known."""


class DuplicateDetail(msgspec.Struct, frozen=True):
    """What a duplicate-lead problem adds to its body."""

    existing_id: str
    matched: list[str]
    exact: bool
    score: float


def problem_type_uri(slug: str) -> str:
    return f"/problems/{slug}"


class ProblemError(Exception):
    """Raised anywhere in the HTTP layer to answer with a problem."""

    def __init__(
        self,
        slug: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        current_version: int | None = None,
        existing_id: str | None = None,
        duplicate: DuplicateDetail | None = None,
        problems: list[RuleProblem] | None = None,
    ) -> None:
        super().__init__(detail)
        self.type = PROBLEM_TYPES[slug]
        self.detail = detail
        self.errors = errors
        self.headers = dict(headers or {})
        self.current_version = current_version
        self.duplicate = duplicate
        self.existing_id = duplicate.existing_id if duplicate else existing_id
        self.problems = problems


def problem_response(
    request: Request | None, error: ProblemError
) -> Response[Problem]:
    request_id = request.scope.get("state", {}).get("request_id") if request else None
    body = Problem(
        type=problem_type_uri(error.type.slug),
        title=error.type.title,
        status=error.type.status,
        detail=error.detail,
        instance=request.url.path if request else None,
        request_id=request_id,
        errors=error.errors,
        current_version=error.current_version,
        existing_id=error.existing_id,
        matched=error.duplicate.matched if error.duplicate else None,
        exact=error.duplicate.exact if error.duplicate else None,
        score=error.duplicate.score if error.duplicate else None,
        problems=error.problems,
    )
    headers = dict(error.headers)
    if error.type.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="leadledger"')
    return Response(
        body, status_code=error.type.status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


# -- mapping exceptions to problems ------------------------------------------------------------

def field_errors_from_validation(extra: Any) -> list[FieldError]:
    """Litestar's ValidationException.extra (msgspec messages) as FieldErrors."""
    errors: list[FieldError] = []
    if not isinstance(extra, list):
        return errors
    for item in extra:
        if not isinstance(item, Mapping):
            continue
        message = str(item.get("message", "invalid value"))
        key = str(item.get("key") or "")
        source = item.get("source") or ""
        source = str(getattr(source, "value", source))
        field = key
        unknown = re.match(r"Object contains unknown field `([^`]+)`", message)
        if unknown:
            field = unknown.group(1) if key in ("", "data") else f"{key}.{unknown.group(1)}"
            message = f"unknown field `{unknown.group(1)}`: not part of this resource"
        elif key in ("", "data"):
            missing = re.match(r"Object missing required field `([^`]+)`", message)
            field = missing.group(1) if missing else "body"
        if source and source not in ("body",):
            field = f"{source}:{field}" if field else source
        errors.append(FieldError(field=field, message=message))
    return errors


def field_error(message: str) -> FieldError:
    """A msgspec validation message (`Expected ... - at `$.field``) as a FieldError."""
    unknown = re.match(r"Object contains unknown field `([^`]+)`(?: - at `\$\.?([^`]*)`)?$",
                       message)
    if unknown:
        name = ".".join(p for p in (unknown.group(2), unknown.group(1)) if p)
        return FieldError(field=name, message=f"unknown field `{unknown.group(1)}`: not part "
                          "of this resource")
    missing = re.match(r"Object missing required field `([^`]+)`", message)
    if missing:
        return FieldError(field=missing.group(1), message="required")
    located = re.match(r"^(.*) - at `\$\.?([^`]*)`$", message)
    if located:
        return FieldError(field=located.group(2) or "body", message=located.group(1))
    return FieldError(field="body", message=message)


def to_problem(exc: Exception) -> ProblemError:
    """The one table from exceptions to problems."""
    match exc:
        case ProblemError():
            return exc
        case ConcurrencyError():
            return ProblemError(
                "precondition-failed",
                f"the lead is at version {exc.current}, not {exc.expected}",
                current_version=exc.current,
            )
        case DuplicateLead():
            return ProblemError("duplicate-lead", str(exc), duplicate=duplicate_detail(exc))
        case LeadNotFound():
            return ProblemError("not-found", "no such lead in this workspace")
        case LeadGone():
            return ProblemError("gone", str(exc))
        case LeadArchivedError():
            return ProblemError("lead-archived", str(exc))
        case LeadAlreadyExists():
            return ProblemError("conflict", str(exc))
        case UnknownTerm():
            message = str(exc).split(": ", 1)[-1]
            return ProblemError("validation-failed", str(exc), errors=[FieldError(
                field=exc.field, message=message, allowed=list(exc.allowed),
                suggestion=exc.suggestion,
            )])
        case InvalidValue():
            message = str(exc).split(": ", 1)[-1]
            return ProblemError(
                "validation-failed", str(exc), errors=[FieldError(field=exc.field, message=message)]
            )
        case LedgerError():
            return ProblemError("validation-failed", str(exc))
        case psycopg.OperationalError() | PoolTimeout():
            return ProblemError(
                "unavailable", "the database is unavailable or overloaded; retry shortly",
                headers={"Retry-After": "1"},
            )
        case RecursionError():  # msgspec refuses JSON nested deeper than the stack allows
            return ProblemError("bad-request", "the body is nested too deeply")
        case ValidationException():
            errors = field_errors_from_validation(exc.extra)
            if not errors:  # unparseable body: msgspec could not even decode JSON
                return ProblemError("bad-request", f"the body is not valid JSON: {exc.detail}")
            return ProblemError(
                "validation-failed", "the request has invalid fields", errors=errors
            )
        case HTTPException() if exc.status_code < 500:
            slug = _DEFAULT_FOR_STATUS.get(exc.status_code, "bad-request")
            detail = exc.detail if isinstance(exc.detail, str) and exc.detail else slug
            if exc.status_code == 413:
                detail = "the request body is too large"
            headers = dict(exc.headers or {})
            return ProblemError(slug, detail, headers=headers)
        case _:
            return ProblemError(
                "internal", "an unexpected error occurred; quote the request id when reporting it"
            )


def duplicate_detail(exc: DuplicateLead) -> DuplicateDetail:
    return DuplicateDetail(
        existing_id=exc.existing_id, matched=list(exc.matched), exact=exc.exact, score=exc.score
    )


def handle_exception(request: Request, exc: Exception) -> Response[Problem]:
    """Litestar exception handler for every exception."""
    problem = to_problem(exc)
    if problem.type.status >= 500 and not isinstance(exc, ProblemError | HTTPException):
        try:
            log.error("unhandled error", exc_info=exc, path=request.url.path)
        except Exception:  # noqa: BLE001 - logging must never turn an answer into a crash
            pass
    return problem_response(request, problem)


def problem_responses(*statuses: int) -> dict[int, Any]:
    """OpenAPI `responses` documenting the problem statuses an operation can return."""
    from litestar.openapi.datastructures import ResponseSpec

    specs: dict[int, Any] = {}
    for status in statuses:
        types = [p for p in _CATALOGUE if p.status == status]
        description = "; ".join(f"`{problem_type_uri(p.slug)}`: {p.description}" for p in types)
        specs[status] = ResponseSpec(
            data_container=Problem,
            description=description or "Problem",
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
    return specs
