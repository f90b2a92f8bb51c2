"""The pure half of ingestion: a submitted lead's fields, normalized against the workspace's
vocabularies. Every creation path (single, batch, import, MCP, processors) goes through here.

Values outside a vocabulary are refused with the allowed values and the closest suggestion, or,
when the workspace says so, kept as entered and reported as unmapped.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from msgspec import UNSET

from ledger.errors import InvalidValue
from ledger.normalize import (
    InvalidEmailSyntax,
    normalize_email,
    normalize_phone,
    split_name,
    tidy_name,
)
from ledger.vocabulary import BUILTIN, Vocabulary, resolve
from schema.events import LeadFields
from schema.vocabularies import VOCABULARY_FIELDS

REJECT, FLAG = "reject", "flag"


class UnknownTerm(InvalidValue):
    code = "unknown-term"

    def __init__(self, field: str, value: str, allowed: tuple[str, ...], suggestion: str | None):
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        shown = ", ".join(allowed[:30]) + (", …" if len(allowed) > 30 else "")
        super().__init__(field, f"{value!r} is not an allowed value ({shown}){hint}")
        self.value = value
        self.allowed = allowed
        self.suggestion = suggestion


class NormalizedLead(msgspec.Struct, frozen=True):
    fields: LeadFields
    stage: str | None
    unmapped: tuple[str, ...] = ()
    """Fields whose value was kept as entered because no vocabulary term matched."""


def normalize_lead(
    fields: LeadFields,
    *,
    stage: str | None = None,
    full_name: str | None = None,
    vocabularies: Mapping[str, Vocabulary] = BUILTIN,
    on_unknown: str = REJECT,
) -> NormalizedLead:
    values = {n: v for n in LeadFields.__struct_fields__ if (v := getattr(fields, n)) is not UNSET}
    values = {n: (" ".join(v.split()) or None) if isinstance(v, str) and n != "address" else v
              for n, v in values.items()}
    _names(values, full_name)
    unmapped: list[str] = []
    for field, vocab_name in VOCABULARY_FIELDS.items():
        if field == "stage":
            continue
        raw = values.get(field)
        if isinstance(raw, str):
            values[field] = _controlled(field, raw, vocabularies[vocab_name], on_unknown, unmapped)
    if isinstance(values.get("email"), str):
        try:
            values["email"] = normalize_email(values["email"]).email
        except InvalidEmailSyntax:
            pass  # kept as entered: the email check marks it invalid and quarantines the lead
    if isinstance(values.get("phone"), str):
        country = values.get("country") if values.get("country") not in unmapped else None
        values["phone"] = normalize_phone(values["phone"], country).phone
    if stage is not None:
        stage = _controlled("stage", stage, vocabularies["lifecycle_stage"], REJECT, unmapped)
    return NormalizedLead(LeadFields(**values), stage, tuple(unmapped))


def _names(values: dict[str, object], full_name: str | None) -> None:
    if full_name and not values.get("first_name") and not values.get("last_name"):
        parts = split_name(full_name)
        values["first_name"], values["last_name"] = parts.first_name, parts.last_name
    for field in ("first_name", "last_name"):
        if isinstance(values.get(field), str):
            values[field] = tidy_name(values[field])


def _controlled(
    field: str, raw: str, vocabulary: Vocabulary, on_unknown: str, unmapped: list[str]
) -> str:
    resolution = resolve(vocabulary, raw)
    if resolution.code is not None:
        return resolution.code
    if on_unknown == FLAG:
        unmapped.append(field)
        return raw
    raise UnknownTerm(field, raw, vocabulary.codes, resolution.suggestion)
