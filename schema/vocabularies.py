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

ACTIVITY_KINDS: Final = (
    "page_view",
    "form_submit",
    "email_open",
    "email_click",
    "demo_request",
    "meeting",
    "call",
    "product_signup",
    "custom",
)
"""Behavioural signals a lead's activities are recorded as (`custom` carries its own name)."""

CHANNELS: Final = ("api", "import", "processor", "mcp", "cli")
"""Through what a change entered the ledger (the `source` of an event's metadata)."""

ROLES: Final = ("admin", "ops", "marketing", "sales", "analyst", "agent", "system")

INDUSTRIES: Final = (
    "software", "financial_services", "healthcare", "manufacturing", "retail", "education",
    "government", "media", "telecommunications", "energy", "transportation", "real_estate",
    "professional_services", "nonprofit", "hospitality", "construction", "agriculture", "other",
)

SENIORITIES: Final = (
    "c_level", "vp", "director", "manager", "senior", "individual_contributor", "intern", "owner",
)

DEPARTMENTS: Final = (
    "executive", "engineering", "it", "sales", "marketing", "finance", "operations",
    "human_resources", "legal", "customer_success", "product", "design", "procurement", "other",
)

DEFAULT_SYNONYMS: Final = {
    "industry": {
        "saas": "software", "tech": "software", "technology": "software", "fintech":
        "financial_services", "banking": "financial_services", "insurance": "financial_services",
        "pharma": "healthcare", "biotech": "healthcare", "ecommerce": "retail",
        "e-commerce": "retail", "telecom": "telecommunications", "logistics": "transportation",
        "consulting": "professional_services", "legal services": "professional_services",
    },
    "seniority": {
        "ceo": "c_level", "cto": "c_level", "cfo": "c_level", "coo": "c_level", "cmo": "c_level",
        "chief": "c_level", "vice president": "vp", "head": "director", "lead": "manager",
        "ic": "individual_contributor", "founder": "owner", "partner": "owner",
    },
    "department": {
        "r&d": "engineering", "dev": "engineering", "development": "engineering",
        "hr": "human_resources", "people": "human_resources", "cs": "customer_success",
        "support": "customer_success", "ops": "operations", "c-suite": "executive",
        "accounting": "finance", "purchasing": "procurement",
    },
    "lifecycle_stage": {
        "marketing qualified": "mql", "marketing qualified lead": "mql",
        "sales qualified": "sql", "sales qualified lead": "sql", "opp": "opportunity",
        "won": "customer", "closed won": "customer", "unqualified": "disqualified",
    },
    "lead_source": {
        "form": "web_form", "website": "web_form", "signup": "product_signup",
        "trial": "product_signup", "csv": "csv_import", "import": "csv_import",
        "sdr": "outbound", "cold email": "outbound", "agent": "ai_agent", "ads": "paid_ads",
        "ppc": "paid_ads", "seo": "organic", "webinar": "event", "conference": "event",
    },
}

VOCABULARY_FIELDS: Final = {
    "country": "country",
    "stage": "lifecycle_stage",
    "source": "lead_source",
    "industry": "industry",
    "seniority": "seniority",
    "department": "department",
}
"""Which lead field each built-in vocabulary controls."""
