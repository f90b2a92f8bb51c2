"""Custom attributes: the definitions a workspace gives the extra fields of its leads.

A definition is versioned: changing it makes a new version and never rewrites stored values;
values that no longer fit the new version are reported, not dropped.
"""

from __future__ import annotations

from typing import Literal

import msgspec

AttributeType = Literal[
    "string", "number", "integer", "boolean", "date", "datetime", "enum", "list"
]
"""`list` is a list of strings; dates and datetimes are ISO 8601 text."""

ATTRIBUTE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class AttributeDefinition(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    type: AttributeType
    description: str = ""
    required: bool = False
    personal: bool = False
    """Personal data: encrypted in the ledger like the standard personal fields."""
    queryable: bool = False
    """Filterable and sortable in GET /v1/leads, and indexed for it."""
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None
    max_length: int | None = None
    values: tuple[str, ...] = ()
    """The allowed values of an enum (and of a list's items, when given)."""
    version: int = 1
