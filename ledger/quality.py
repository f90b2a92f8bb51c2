"""The data-quality score of a lead: 0–100, with its components and the problems behind it.

Pure: computed from the lead's folded state, the workspace's required fields and vocabularies,
and a clock passed in. The lead read model recomputes it on every change of the lead.

  completeness (40) — share of the workspace's required fields that are present;
  validity     (35) — email status, a parseable phone, values inside their vocabularies;
  consistency  (15) — phone country matches the lead's country, a business email's domain
                      matches the website;
  freshness    (10) — full for a year after the last change, then decaying to zero at three.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache

import msgspec
import phonenumbers

from ledger.lead import LeadState
from ledger.normalize import website_domain
from ledger.vocabulary import BUILTIN, Vocabulary
from schema.vocabularies import VOCABULARY_FIELDS

DEFAULT_REQUIRED: tuple[str, ...] = ("email", "first_name", "last_name", "company", "country")
WEIGHTS = {"completeness": 40, "validity": 35, "consistency": 15, "freshness": 10}
EMAIL_VALIDITY = {"valid": 1.0, "risky": 0.6, "invalid": 0.0}
FRESH_DAYS = 365
"""A lead is fully fresh this long after its last change..."""
DECAY_DAYS = 730
"""...and its freshness then falls linearly to zero over this many days."""


class QualityScore(msgspec.Struct, frozen=True, kw_only=True):
    score: int
    completeness: float
    validity: float
    consistency: float
    freshness: float
    problems: tuple[str, ...]


def score_quality(
    state: LeadState,
    *,
    updated_at: datetime,
    now: datetime,
    required: Sequence[str] = DEFAULT_REQUIRED,
    vocabularies: Mapping[str, Vocabulary] = BUILTIN,
) -> QualityScore:
    problems: list[str] = []
    completeness = _completeness(state, required, problems)
    validity = _validity(state, vocabularies, problems)
    consistency = _consistency(state, problems)
    freshness = _freshness(updated_at, now, problems)
    parts = {"completeness": completeness, "validity": validity,
             "consistency": consistency, "freshness": freshness}
    total = sum(WEIGHTS[k] * v for k, v in parts.items())
    # Half up (not Python's half to even), as SQL's floor(x + 0.5) does: the same score here
    # and in the read model's queries (api/http/quality_queries.py).
    return QualityScore(score=math.floor(total + 0.5), problems=tuple(problems),
                        **{k: round(v, 3) for k, v in parts.items()})


def _value(state: LeadState, field: str) -> str | None:
    value = getattr(state.fields, field, None)
    return value if isinstance(value, str) and value else None


def _completeness(state: LeadState, required: Sequence[str], problems: list[str]) -> float:
    if not required:
        return 1.0
    missing = [f for f in required if _value(state, f) is None]
    problems.extend(f"missing:{f}" for f in missing)
    return 1 - len(missing) / len(required)


def _validity(state: LeadState, vocabularies: Mapping[str, Vocabulary], problems: list[str]) -> float:
    checks: list[float] = []
    if _value(state, "email"):
        status = state.email_status or "valid"
        checks.append(EMAIL_VALIDITY.get(status, 0.0))
        if status != "valid":
            problems.append(f"email-{status}")
    phone = _value(state, "phone")
    if phone:
        ok = phone_region(phone) is not None
        checks.append(1.0 if ok else 0.0)
        if not ok:
            problems.append("phone-unparseable")
    for field, vocab_name in VOCABULARY_FIELDS.items():
        value = state.stage if field == "stage" else _value(state, field)
        vocabulary = vocabularies.get(vocab_name)
        if value is None or vocabulary is None:
            continue
        ok = value in _codes(vocabulary)
        checks.append(1.0 if ok else 0.0)
        if not ok:
            problems.append(f"unmapped:{field}")
    return sum(checks) / len(checks) if checks else 1.0


_CODES: dict[int, tuple[Vocabulary, frozenset[str]]] = {}


def _codes(vocabulary: Vocabulary) -> frozenset[str]:
    """The vocabulary's codes as a set, kept per vocabulary object: every score checks six
    vocabularies (countries alone have 249 codes), and a replay scores every lead."""
    entry = _CODES.get(id(vocabulary))
    if entry is None or entry[0] is not vocabulary:
        if len(_CODES) >= 256:  # workspaces' own vocabularies come and go: stay bounded
            _CODES.clear()
        entry = _CODES[id(vocabulary)] = (vocabulary, frozenset(vocabulary.codes))
    return entry[1]


def _consistency(state: LeadState, problems: list[str]) -> float:
    checks: list[float] = []
    phone, country = _value(state, "phone"), _value(state, "country")
    region = phone_region(phone) if phone and country else None
    if region is not None:
        checks.append(1.0 if region == country else 0.0)
        if region != country:
            problems.append("phone-country-mismatch")
    email, website = _value(state, "email"), _value(state, "website")
    if email and website and "free-mail" not in state.email_reasons and "@" in email:
        email_domain = email.rsplit("@", 1)[1].lower()
        site = _website_domain(website) or ""
        ok = email_domain == site or email_domain.endswith("." + site)
        checks.append(1.0 if ok else 0.0)
        if not ok:
            problems.append("email-domain-mismatch")
    return sum(checks) / len(checks) if checks else 1.0


def _freshness(updated_at: datetime, now: datetime, problems: list[str]) -> float:
    age_days = max((now - updated_at).total_seconds() / 86_400, 0.0)
    if age_days <= FRESH_DAYS:
        return 1.0
    problems.append("stale")
    return max(0.0, 1 - (age_days - FRESH_DAYS) / DECAY_DAYS)


_website_domain = lru_cache(maxsize=65_536)(website_domain)
"""Cached: a company's leads share its website, and parsing a URL costs more than the rest of
the consistency check."""


@lru_cache(maxsize=65_536)
def phone_region(phone: str) -> str | None:
    """The region of a valid E.164 number, else None. Cached: the read model rescores a lead
    on every change, and parsing is most of a score's cost."""
    if not phone.startswith("+"):
        return None
    try:
        number = phonenumbers.parse(phone)
    except phonenumbers.NumberParseException:
        return None
    # What is_valid_number does, keeping the region it finds.
    region = phonenumbers.region_code_for_number(number)
    return region if phonenumbers.is_valid_number_for_region(number, region) else None
