"""Enrichment providers: what each knows about a lead, with provenance.

A provider has a `name` and `async enrich(workspace, snapshot) -> Finding`. It sees the lead as
a `LeadSnapshot` (the fields enrichment keys on) and answers with a `Finding`: enrichment values
by name (each an `EnrichmentValue`: the value, the provider, when it was fetched and how sure it
is), personal values (a name guessed from the email: encrypted in the ledger like every personal
field), and the standard fields it offers to fill. Whether a fill lands is the lead decider's
call (ledger/lead.py: only empty fields, unless the workspace lets enrichment overwrite).

Built-in providers need no network (email_domain, phone, firmographics); HTTP providers call a
workspace's external API (http.py). A provider that cannot answer now raises ProviderFailed;
one whose circuit breaker is open raises ProviderSkipped without calling anything.

Enrichment names are snake_case (no dots) so scoring rules can read them as
`enrichment.company_industry`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

import msgspec

from ledger.lead import LeadState
from ledger.normalize import InvalidEmailSyntax, normalize_email, website_domain
from schema.events import EnrichmentValue, LeadFields

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class LeadSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The lead as enrichment sees it (plaintext: it never leaves the process but for the
    requests a workspace's own HTTP providers make)."""

    lead_id: str
    email: str | None = None
    email_domain: str | None = None
    website_domain: str | None = None
    phone: str | None = None
    company: str | None = None
    country: str | None = None
    first_name: str | None = None
    last_name: str | None = None

    @property
    def domain(self) -> str | None:
        """The company's domain: the website's, else the email's."""
        return self.website_domain or self.email_domain


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    values: dict[str, EnrichmentValue] = {}
    personal_values: dict[str, EnrichmentValue] = {}
    fills: LeadFields = LeadFields()

    @property
    def empty(self) -> bool:
        return not self.values and not self.personal_values and self.fills == LeadFields()


class Provider(Protocol):
    name: str

    async def enrich(self, workspace: str, snapshot: LeadSnapshot) -> Finding: ...


class ProviderFailed(RuntimeError):
    """The provider could not answer (after its own retries); enrichment is incomplete."""

    def __init__(self, provider: str, reason: str) -> None:
        super().__init__(f"{provider}: {reason}")
        self.provider = provider


class ProviderSkipped(ProviderFailed):
    """The provider was not called (its circuit breaker is open)."""


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def snapshot_of(state: LeadState) -> LeadSnapshot:
    """What enrichment keys on, from the lead's folded state."""
    fields = state.fields
    email = _text(fields.email)
    email_domain = None
    if email is not None:
        try:
            email_domain = normalize_email(email).domain
        except InvalidEmailSyntax:
            email_domain = None
    website = _text(fields.website)
    return LeadSnapshot(
        lead_id=state.lead_id or "", email=email, email_domain=email_domain,
        website_domain=website_domain(website) if website else None, phone=_text(fields.phone),
        company=_text(fields.company), country=_text(fields.country),
        first_name=_text(fields.first_name), last_name=_text(fields.last_name),
    )


def valued(
    provider: str, at: datetime, values: dict[str, object], confidence: float = 1.0
) -> dict[str, EnrichmentValue]:
    """EnrichmentValues of the given ones that are not None (an unknown is no finding)."""
    return {
        name: EnrichmentValue(value=value, provider=provider, fetched_at=at,  # type: ignore[arg-type]
                              confidence=confidence)
        for name, value in values.items() if value is not None
    }
