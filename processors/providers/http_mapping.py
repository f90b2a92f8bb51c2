"""How a workspace describes an external enrichment API, and how its answers become findings.

Pure. A config names a URL template (placeholders from the lead: `{email}`, `{domain}`, ...,
URL-encoded when expanded), the header that carries the credential, and a mapping: each rule
takes a JSON path of the response (`$.company.name`, `$.tags[0]`) to an enrichment value name
or to a standard lead field it offers to fill. Timeout, rate limit, retries and the circuit
breaker's threshold and cool-down are per provider too. Validation reports every problem with
the field it concerns, for 422s that name them.
"""

from __future__ import annotations

import re
import string
from datetime import datetime
from typing import Any
from urllib.parse import quote

import msgspec

from processors.providers import Finding, LeadSnapshot
from schema.events import EnrichmentValue, LeadFields

BUILTIN_NAMES = ("email-domain", "phone", "firmographics")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
PLACEHOLDERS = ("lead_id", "email", "email_domain", "domain", "website_domain", "phone",
                "company", "country", "first_name", "last_name")
FILLABLE = ("company", "title", "website", "country", "city", "industry", "seniority",
            "department", "first_name", "last_name")
"""Fields a provider may fill. Identity fields (email, phone, external id) are never filled:
they pass normalization and the duplicate check only when a person or an import sets them."""
PERSONAL_FILLS = ("first_name", "last_name")
MAX_RULES = 100
_VALUE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_STEP = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


class MappingRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    """A JSON path into the response: `$.person.employment.title`, `$.tags[0]`."""
    value: str | None = None
    """The enrichment value it becomes (snake_case)."""
    field: str | None = None
    """Or the standard lead field it offers to fill."""
    personal: bool = False
    """The value is personal data (encrypted in the ledger)."""
    confidence: float = 1.0


class HttpProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    """e.g. https://api.example.com/v1/person?email={email}"""
    mapping: list[MappingRule]
    auth_header: str | None = None
    """The header that carries the secret (e.g. Authorization); the secret is stored apart."""
    timeout_s: float = 5.0
    rate_per_s: float = 5.0
    burst: int = 5
    retries: int = 3
    """Attempts per lead on timeouts, connection errors, 429 and 5xx (the first included)."""
    failure_threshold: int = 5
    """Consecutive failed leads that open the circuit breaker."""
    cooldown_s: float = 30.0


def placeholders(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def parse_path(path: str) -> tuple[str | int, ...]:
    """`$.a.b[0]` (or `a.b[0]`) as steps; raises ValueError."""
    text = path.strip()
    text = text[1:] if text.startswith("$") else "." + text
    steps: list[str | int] = []
    at = 0
    while at < len(text):
        match = _STEP.match(text, at)
        if match is None:
            raise ValueError(f"{path!r} is not a JSON path like $.company.name or $.tags[0]")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        at = match.end()
    if not steps:
        raise ValueError(f"{path!r} selects nothing")
    return tuple(steps)


def problems(config: HttpProviderConfig) -> list[tuple[str, str]]:
    """(field, message) for every problem; empty when the config is usable."""
    found: list[tuple[str, str]] = []
    if not config.url.startswith(("http://", "https://")):
        found.append(("url", "an http:// or https:// URL"))
    try:
        unknown = [p for p in placeholders(config.url) if p not in PLACEHOLDERS]
        if unknown:
            found.append(("url", f"unknown placeholder(s) {unknown}; known: {list(PLACEHOLDERS)}"))
    except ValueError as exc:
        found.append(("url", f"a bad template: {exc}"))
    if config.auth_header is not None and not re.fullmatch(r"[A-Za-z0-9-]{1,64}",
                                                           config.auth_header):
        found.append(("auth_header", "a header name (letters, digits, dashes)"))
    checks = (("timeout_s", 0.1 <= config.timeout_s <= 60, "between 0.1 and 60"),
              ("rate_per_s", 0.01 <= config.rate_per_s <= 1000, "between 0.01 and 1000"),
              ("burst", 1 <= config.burst <= 1000, "between 1 and 1000"),
              ("retries", 1 <= config.retries <= 10, "between 1 and 10"),
              ("failure_threshold", 1 <= config.failure_threshold <= 1000, "between 1 and 1000"),
              ("cooldown_s", 0.1 <= config.cooldown_s <= 3600, "between 0.1 and 3600"))
    found += [(name, message) for name, ok, message in checks if not ok]
    if not config.mapping or len(config.mapping) > MAX_RULES:
        found.append(("mapping", f"1 to {MAX_RULES} rules"))
    for i, rule in enumerate(config.mapping):
        where = f"mapping[{i}]"
        try:
            parse_path(rule.path)
        except ValueError as exc:
            found.append((f"{where}.path", str(exc)))
        if (rule.value is None) == (rule.field is None):
            found.append((where, "exactly one of value (an enrichment name) or field"))
        elif rule.value is not None and not _VALUE_NAME.match(rule.value):
            found.append((f"{where}.value", "snake_case, up to 64 characters"))
        elif rule.field is not None and rule.field not in FILLABLE:
            found.append((f"{where}.field", f"one of {', '.join(FILLABLE)}"))
        if not 0 <= rule.confidence <= 1:
            found.append((f"{where}.confidence", "between 0 and 1"))
    return found


def expand_url(template: str, snapshot: LeadSnapshot) -> str | None:
    """The template with the lead's values URL-encoded; None when the lead lacks one of them
    (the provider has nothing to look up)."""
    values: dict[str, str] = {}
    for name in placeholders(template):
        value = snapshot.lead_id if name == "lead_id" else getattr(snapshot, name)
        if not value:
            return None
        values[name] = quote(str(value), safe="")
    return template.format(**values)


def resolve(document: Any, steps: tuple[str | int, ...]) -> Any:
    for step in steps:
        if isinstance(step, int) and isinstance(document, list) and step < len(document):
            document = document[step]
        elif isinstance(step, str) and isinstance(document, dict):
            document = document.get(step)
        else:
            return None
    return document


def _plain(value: Any) -> str | int | float | bool | list[str] | None:
    """An answer's value as an enrichment value (objects do not map; lists become text)."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value.strip() or None if isinstance(value, str) else value
    if isinstance(value, list):
        items = [str(v) for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
        return items or None
    return None


def map_response(
    provider: str, config: HttpProviderConfig, document: Any, at: datetime
) -> Finding:
    """Pure: the provider's answer (decoded JSON) as a finding, per the mapping."""
    values: dict[str, EnrichmentValue] = {}
    personal: dict[str, EnrichmentValue] = {}
    fills: dict[str, str] = {}
    for rule in config.mapping:
        value = _plain(resolve(document, parse_path(rule.path)))
        if value is None:
            continue
        if rule.field is not None:
            if isinstance(value, (str, int, float)) and not isinstance(value, bool):
                fills[rule.field] = str(value)
            continue
        found = EnrichmentValue(value=value, provider=provider, fetched_at=at,
                                confidence=rule.confidence)
        (personal if rule.personal else values)[rule.value or ""] = found
    return Finding(values=values, personal_values=personal, fills=LeadFields(**fills))
