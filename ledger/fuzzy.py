"""Likely-duplicate scoring between two leads: pure, with rapidfuzz.

Exact identity (same canonical email, phone or external id) is the identity index's job; this
module finds the near misses people make: the same name at the same company written two ways,
the same name with the same phone, or the same name with the same email mailbox at another
domain. A pair scores the best of these rules, 0–100, and names the fields that matched.
"""

from __future__ import annotations

import msgspec
from rapidfuzz import fuzz

from ledger.normalize import company_match_key

NAME_SIMILARITY = 0.45
"""The trigram similarity (pg_trgm's, 0-1) of two whole names below which a lead is not even a
candidate (projections/candidates.py). Chosen with bench/bench_dedup.py: at 0.45 every true
pair of its corpus is still a candidate, with one candidate per record on average where the
last-name match at pg_trgm's default 0.3 gave eleven and missed 2% of the pairs; at 0.5 a few
pairs (typos in short names) drop out."""


class Person(msgspec.Struct, frozen=True, kw_only=True):
    lead_id: str
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    company: str | None = None


class Match(msgspec.Struct, frozen=True):
    lead_id: str
    score: float
    matched: tuple[str, ...]


def _name(p: Person) -> str:
    return " ".join(x for x in (p.first_name, p.last_name) if x).lower()


def full_name(p: Person) -> str:
    """The name the candidate index holds: "first last", lowercased, either part maybe empty
    ("" when both are)."""
    return f"{p.first_name or ''} {p.last_name or ''}".lower().strip()


def _local_part(email: str | None) -> str:
    return email.rsplit("@", 1)[0].lower().split("+", 1)[0] if email and "@" in email else ""


def score_pair(a: Person, b: Person, cutoff: float = 0.0) -> Match:
    """The pair's best rule. Every rule scores at most the names' similarity, so a pair whose
    names are less similar than `cutoff` scores 0 without the other fields being compared."""
    name_a, name_b = _name(a), _name(b)
    if not name_a or not name_b:
        return Match(b.lead_id, 0.0, ())
    name = fuzz.token_sort_ratio(name_a, name_b, score_cutoff=cutoff)
    if cutoff > 0 and name == 0.0:  # below the cutoff (rapidfuzz answers 0)
        return Match(b.lead_id, 0.0, ())
    rules: list[tuple[float, tuple[str, ...]]] = []
    if a.company and b.company:
        company = fuzz.ratio(company_match_key(a.company), company_match_key(b.company))
        rules.append((min(name, company), ("name", "company")))
    if a.phone and b.phone and a.phone == b.phone:
        rules.append((name, ("name", "phone")))
    local_a, local_b = _local_part(a.email), _local_part(b.email)
    if local_a and local_b:
        rules.append((min(name, fuzz.ratio(local_a, local_b)), ("name", "email_local_part")))
    if not rules:
        return Match(b.lead_id, 0.0, ())
    best, matched = max(rules, key=lambda r: r[0])
    return Match(b.lead_id, round(best, 1), matched)


def likely_duplicates(
    person: Person, candidates: list[Person], threshold: float = 88.0
) -> list[Match]:
    """Candidates at or above the threshold, best first (never the person itself)."""
    found = [score_pair(person, c, threshold) for c in candidates
             if c.lead_id != person.lead_id]
    return sorted((m for m in found if m.score >= threshold), key=lambda m: -m.score)
