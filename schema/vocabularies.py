"""Controlled vocabularies that the lead's own shape depends on.

Workspace-managed vocabularies (industry, seniority, custom lists) arrive with the data-quality
work; the lifecycle stage and the lead source are part of the lead contract itself.
"""

from typing import Final

LIFECYCLE_STAGES: Final = (
    "subscriber",
    "lead",
    "mql",
    "sql",
    "opportunity",
    "customer",
    "disqualified",
)
DEFAULT_STAGE: Final = "lead"

LEAD_SOURCES: Final = (
    "web_form",
    "product_signup",
    "partner",
    "csv_import",
    "outbound",
    "ai_agent",
    "event",
    "referral",
    "paid_ads",
    "organic",
    "other",
)

CHANNELS: Final = ("api", "import", "processor", "mcp", "cli")
"""Through what a change entered the ledger (the `source` of an event's metadata)."""

ROLES: Final = ("admin", "ops", "marketing", "sales", "analyst", "agent", "system")
