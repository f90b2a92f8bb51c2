"""Controlled vocabularies: resolve a submitted value to its code, or refuse it with the allowed
values and the closest suggestion. Pure: the vocabulary arrives as plain data.

Built-in vocabularies (country as ISO 3166-1 alpha-2, lifecycle stage, lead source, industry,
seniority, department) apply until a workspace defines its own list of the same name.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec
import pycountry
from rapidfuzz import fuzz, process

from ledger.normalize import COUNTRY_SYNONYMS, country_code
from schema.vocabularies import (
    DEFAULT_SYNONYMS,
    DEPARTMENTS,
    INDUSTRIES,
    LEAD_SOURCES,
    LIFECYCLE_STAGES,
    SENIORITIES,
)


class Term(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    label: str | None = None
    synonyms: tuple[str, ...] = ()


class Vocabulary(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    terms: tuple[Term, ...]

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(t.code for t in self.terms)


class Resolution(msgspec.Struct, frozen=True, kw_only=True):
    code: str | None
    """The controlled value, or None when the input matches nothing."""
    suggestion: str | None = None


def resolve(vocabulary: Vocabulary, raw: str) -> Resolution:
    text = " ".join(raw.split())
    if vocabulary.name == "country" and vocabulary is COUNTRY:
        code = country_code(text)
        if code is not None:
            return Resolution(code=code)
    index = _index(vocabulary)
    code = index.get(text.lower())
    if code is not None:
        return Resolution(code=code)
    return Resolution(code=None, suggestion=suggest(vocabulary, text))


def suggest(vocabulary: Vocabulary, text: str) -> str | None:
    choices = _index(vocabulary)
    match = process.extractOne(text.lower(), list(choices), scorer=fuzz.WRatio, score_cutoff=70)
    return choices[match[0]] if match else None


@lru_cache(maxsize=256)
def _index(vocabulary: Vocabulary) -> dict[str, str]:
    """Every spelling that names a code (code, label, synonyms), lowercased → code."""
    index: dict[str, str] = {}
    for term in vocabulary.terms:
        for spelling in (term.code, term.label, *term.synonyms):
            if spelling:
                index.setdefault(spelling.lower(), term.code)
    return index


def _builtin(name: str, codes: tuple[str, ...]) -> Vocabulary:
    synonyms = DEFAULT_SYNONYMS.get(name, {})
    return Vocabulary(name=name, terms=tuple(
        Term(code=c, label=c.replace("_", " "),
             synonyms=tuple(s for s, target in synonyms.items() if target == c))
        for c in codes
    ))


def _countries() -> Vocabulary:
    by_code: dict[str, list[str]] = {}
    for synonym, code in COUNTRY_SYNONYMS.items():
        by_code.setdefault(code, []).append(synonym)
    return Vocabulary(name="country", terms=tuple(
        Term(code=c.alpha_2, label=c.name,
             synonyms=(c.alpha_3, *by_code.get(c.alpha_2, ())))
        for c in pycountry.countries
    ))


COUNTRY = _countries()
BUILTIN: dict[str, Vocabulary] = {
    "country": COUNTRY,
    "lifecycle_stage": _builtin("lifecycle_stage", LIFECYCLE_STAGES),
    "lead_source": _builtin("lead_source", LEAD_SOURCES),
    "industry": _builtin("industry", INDUSTRIES),
    "seniority": _builtin("seniority", SENIORITIES),
    "department": _builtin("department", DEPARTMENTS),
}
