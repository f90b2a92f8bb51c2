"""Normalization of incoming lead fields: pure functions, no I/O, built on the field's libraries.

  * email: trimmed, domain lowercased and IDNA-encoded (email-validator, syntax only);
  * a canonical email key for matching (provider rules: Gmail dots, `+tags`), never displayed;
  * phone: E.164 with the lead's country as default region (phonenumbers); unparseable numbers
    are kept as entered and flagged, never dropped;
  * country: ISO 3166-1 alpha-2 from codes, names and common synonyms (pycountry);
  * names split and cased (nameparser); company names cleaned for matching (cleanco);
  * a company domain from the website or a business email address.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

import msgspec
import phonenumbers
import pycountry
from cleanco import basename
from email_validator import EmailNotValidError, validate_email
from nameparser import HumanName

# Providers whose mailboxes ignore dots in the local part and/or deliver `user+tag` to `user`.
_DOTS_IGNORED = frozenset({"gmail.com", "googlemail.com"})
_PLUS_TAGS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "icloud.com",
    "me.com", "fastmail.com", "proton.me", "protonmail.com", "yahoo.com",
})
_DOMAIN_ALIASES = {"googlemail.com": "gmail.com"}

COUNTRY_SYNONYMS = {
    "usa": "US", "u.s.": "US", "u.s.a.": "US", "united states of america": "US", "america": "US",
    "uk": "GB", "u.k.": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "britain": "GB",
    "south korea": "KR", "korea": "KR", "north korea": "KP", "russia": "RU", "vietnam": "VN",
    "iran": "IR", "syria": "SY", "taiwan": "TW", "bolivia": "BO", "venezuela": "VE",
    "tanzania": "TZ", "moldova": "MD", "laos": "LA", "czech republic": "CZ", "holland": "NL",
    "the netherlands": "NL", "uae": "AE", "ivory coast": "CI", "turkey": "TR",
}


class EmailNormalized(msgspec.Struct, frozen=True):
    email: str
    """As shown: local part as entered, domain lowercased and IDNA-encoded."""
    identity: str
    """For matching only: provider rules applied (dots, +tags), all lowercase."""
    domain: str


class InvalidEmailSyntax(ValueError):
    pass


@lru_cache(maxsize=65_536)
def normalize_email(raw: str) -> EmailNormalized:
    """Cached: one create normalizes its email, derives its identity key from it and checks it,
    and email-validator's IDNA checks are a create's largest pure cost."""
    text = raw.strip()
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=True)
    except EmailNotValidError as exc:
        raise InvalidEmailSyntax(str(exc)) from None
    domain = result.ascii_domain.lower()
    local = result.local_part
    return EmailNormalized(
        email=f"{local}@{domain}", identity=email_identity(local, domain), domain=domain
    )


def email_identity(local: str, domain: str) -> str:
    domain = _DOMAIN_ALIASES.get(domain, domain)
    local = local.lower()
    if domain in _PLUS_TAGS:
        local = local.split("+", 1)[0]
    if domain in _DOTS_IGNORED:
        local = local.replace(".", "")
    return f"{local}@{domain}"


class PhoneNormalized(msgspec.Struct, frozen=True):
    phone: str
    """E.164 when parseable and valid, else the input as entered (trimmed)."""
    valid: bool
    country: str | None = None


def normalize_phone(raw: str, default_country: str | None = None) -> PhoneNormalized:
    text = raw.strip()
    try:
        number = phonenumbers.parse(text, default_country)
    except phonenumbers.NumberParseException:
        return PhoneNormalized(text, valid=False)
    if not phonenumbers.is_valid_number(number):
        return PhoneNormalized(text, valid=False)
    return PhoneNormalized(
        phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        valid=True,
        country=phonenumbers.region_code_for_number(number),
    )


@lru_cache(maxsize=4096)
def country_code(raw: str) -> str | None:
    """ISO 3166-1 alpha-2 for a code, a name or a known synonym; None when unknown."""
    text = raw.strip()
    if not text:
        return None
    synonym = COUNTRY_SYNONYMS.get(text.lower())
    if synonym:
        return synonym
    for lookup in (pycountry.countries.get,):
        for key in ("alpha_2", "alpha_3", "name", "common_name", "official_name"):
            found = lookup(**{key: text.upper() if key.startswith("alpha") else text})
            if found is not None:
                return found.alpha_2
    try:
        return pycountry.countries.lookup(text).alpha_2
    except LookupError:
        return None


class NameParts(msgspec.Struct, frozen=True):
    first_name: str | None
    last_name: str | None


def split_name(full: str) -> NameParts:
    text = " ".join(full.split())
    name = HumanName(text)
    if name.first.isupper() or name.first.islower() or name.last.isupper() or name.last.islower():
        name.capitalize(force=True)
    last = " ".join(p for p in (name.middle, name.last) if p) or None
    if not name.first and not last and text:
        return NameParts(first_name=text, last_name=None)  # "Dr.", "(Jack)": kept as entered
    return NameParts(first_name=name.first or None, last_name=last)


@lru_cache(maxsize=65_536)
def tidy_name(part: str) -> str:
    """Cases a single name part written all-lower or all-upper; leaves mixed case alone.

    Applied until it settles, so that tidying a tidied name changes nothing (nameparser's casing
    of odd input can itself come out all-lower or all-upper). Cached: nameparser takes about
    100 µs per part (10 % of a create's CPU when names arrive in one case), and names repeat."""
    text = _tidy_once(part)
    for _ in range(4):
        again = _tidy_once(text)
        if again == text:
            return text
        text = again
    return text


def _tidy_once(part: str) -> str:
    text = " ".join(part.split())
    if text.islower() or text.isupper():
        name = HumanName(text)
        name.capitalize(force=True)
        cased = str(name)
        # only the case may change: nameparser reorders "doe, john" and "(jack) ryan"
        return cased if cased.casefold().split() == text.casefold().split() else text
    return text


def _letters(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


@lru_cache(maxsize=65_536)
def company_match_key(company: str) -> str:
    """Legal suffixes and punctuation removed, lowercased: "Acme, Inc." and "ACME" match.

    Cached: fuzzy matching keys every candidate's company on every create (cleanco's basename
    took a fifth of the service's CPU in bench_pipeline before), and the candidates are the
    same few leads again and again.

    Suffixes are removed until none is left ("Foo Co. Ltd." → "foo"); a name that is nothing
    but a suffix ("LLC") keeps it, so that it never matches every other such name."""
    text = " ".join(company.split())
    key = _key_chars(basename(text).lower()) or _key_chars(text.lower())
    while True:
        cleaned = _key_chars(basename(key).lower())
        if not cleaned or cleaned == key:
            return key
        key = cleaned


def _key_chars(text: str) -> str:
    return " ".join("".join(ch for ch in text if ch.isalnum() or ch.isspace()).split())


def website_domain(website: str) -> str | None:
    text = website.strip()
    if not text:
        return None
    if "//" not in text:
        text = "http://" + text
    try:
        host = (urlsplit(text).hostname or "").lower().rstrip(".")
    except ValueError:  # "http://[": not a URL
        return None
    while host.startswith("www."):
        host = host.removeprefix("www.")
    try:
        return host.encode("idna").decode() if host else None
    except UnicodeError:
        return None
