"""Property tests (hypothesis) of every normalizer and of a submitted lead's normalization.

For each: normalizing the output again changes nothing (idempotent), no string makes it raise
(normalize_email may only refuse with InvalidEmailSyntax), and the value entered is never lost:
what cannot be normalized is kept as entered, and a non-blank input never becomes empty.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from ledger.lead_input import FLAG, normalize_lead
from ledger.normalize import (
    InvalidEmailSyntax,
    company_match_key,
    country_code,
    email_identity,
    normalize_email,
    normalize_phone,
    split_name,
    tidy_name,
    website_domain,
)
from schema.events import LeadFields
from schema.vocabularies import VOCABULARY_FIELDS

settings.register_profile(
    "normalize", max_examples=150, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
fast = settings(settings.get_profile("normalize"))

# --- generators -------------------------------------------------------------------------------

SPACE = st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", ""])
# any unicode text, and text padded and broken up with (unicode) whitespace
TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.builds(lambda a, b, c: a + b + c, SPACE, st.text(max_size=30), SPACE),
)


def _spelled(local: str, domain: str, draw_case: bool, tag: str, pad: str) -> str:
    address = f"{local}{tag}@{domain}"
    return pad + (address.upper() if draw_case else address) + pad


EMAILS = st.one_of(
    st.emails(),
    st.builds(
        _spelled,
        st.from_regex(r"[a-z]{1,8}(\.[a-z]{1,8}){0,2}", fullmatch=True),
        st.sampled_from(["gmail.com", "googlemail.com", "Outlook.com", "acme.io", "Bücher.de",
                         "例え.jp", "GMAIL.COM"]),
        st.booleans(),
        st.sampled_from(["", "+news", "+a+b", "+"]),
        SPACE,
    ),
    TEXT,
)

PHONES = st.one_of(
    st.from_regex(r"\+?[0-9 ()\-.]{3,20}", fullmatch=True),
    st.sampled_from(["020 7946 0958", "(415) 555-2671", "+44 20 7946 0958", "0049 30 123456",
                     "+1 415 555 2671 ext. 12", "tel:+14155552671", "555-0100"]),
    st.builds(lambda a, b: a + b, SPACE, st.from_regex(r"[0-9]{6,15}", fullmatch=True)),
    TEXT,
)
REGIONS = st.sampled_from([None, "US", "GB", "DE", "FR", "IN", "BR", "JP", "ZZ"])

NAMES = st.one_of(
    st.sampled_from(["JOHN VAN DER BERG", "ada lovelace", "Dr. Grace Hopper", "O'NEIL, shaq",
                     "jean-luc picard", "María José García", "Smith Jr.", "Mc Donald",
                     "(jack) ryan", "Dr.", "Jr.", "  "]),
    st.lists(st.text(alphabet=string.ascii_letters + "'-.,()", min_size=1, max_size=10),
             max_size=4).map(" ".join),
    TEXT,
)
COMPANIES = st.one_of(
    st.sampled_from(["Acme, Inc.", "ACME GmbH", "Inc.", "Ltd", "Foo Co. Ltd.", "S.A.", "LLC"]),
    st.builds(lambda a, s: f"{a} {s}", st.text(alphabet=string.ascii_letters, min_size=1,
                                                max_size=10),
              st.sampled_from(["Inc.", "Ltd", "GmbH", "LLC", "S.A.", "AG", "plc", "Co."])),
    TEXT,
)
WEBSITES = st.one_of(
    st.sampled_from(["https://WWW.Acme.com/pricing", "acme.io", "http://Bücher.de", "www.",
                     "http://[", "//", "www.www.acme.com", "https://acme.com:99x/"]),
    st.builds(lambda scheme, www, host, path: f"{scheme}{www}{host}{path}",
              st.sampled_from(["", "http://", "https://", "//"]),
              st.sampled_from(["", "www.", "WWW."]),
              st.from_regex(r"[a-zA-Z0-9-]{1,12}(\.[a-zA-Z]{2,6}){1,2}", fullmatch=True),
              st.sampled_from(["", "/", "/a?b=c", ":8080/x"])),
    TEXT,
)
COUNTRIES = st.one_of(
    st.sampled_from(["usa", "United States", "DE", "deu", "Germany", "uk", "Côte d'Ivoire",
                     "Narnia", "", " gb ", "Korea, Republic of"]),
    TEXT,
)


def blank(value: str | None) -> bool:
    return value is None or not value.strip()


# --- email ------------------------------------------------------------------------------------


@fast
@given(EMAILS)
def test_email_only_refuses_with_invalid_syntax_and_is_idempotent(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except InvalidEmailSyntax:
        return
    assert normalize_email(once.email) == once
    # nothing lost: the mailbox as entered (only the domain is lowercased / IDNA-encoded)
    local, _, domain = once.email.rpartition("@")
    assert local and domain == once.domain and once.identity
    assert local.casefold() in raw.casefold() or "\"" in local or not local.isascii()


@fast
@given(EMAILS)
def test_email_identity_is_idempotent(raw: str) -> None:
    try:
        once = normalize_email(raw)
    except InvalidEmailSyntax:
        return
    local, _, domain = once.identity.rpartition("@")
    assert email_identity(local, domain) == once.identity
    assert normalize_email(once.email).identity == once.identity


@fast
@given(TEXT, TEXT.filter(lambda d: "@" not in d))
def test_email_identity_never_raises_and_is_idempotent_on_any_text(local: str, domain: str) -> None:
    once = email_identity(local, domain)
    again_local, _, again_domain = once.rpartition("@")
    assert email_identity(again_local, again_domain) == once


# --- phone ------------------------------------------------------------------------------------


@fast
@given(PHONES, REGIONS)
def test_phone_is_idempotent_and_keeps_what_it_cannot_parse(raw: str, region: str | None) -> None:
    once = normalize_phone(raw, region)
    assert normalize_phone(once.phone, region) == once
    if once.valid:
        assert once.phone.startswith("+") and once.phone[1:].isdigit() and once.country
    else:
        assert once.phone == raw.strip()  # kept as entered, flagged


# --- country ----------------------------------------------------------------------------------


@fast
@given(COUNTRIES)
@example("Korea, Republic of")
def test_country_code_never_raises_and_is_idempotent(raw: str) -> None:
    code = country_code(raw)
    if code is not None:
        assert len(code) == 2 and code.isupper()
        assert country_code(code) == code


# --- names ------------------------------------------------------------------------------------


@fast
@given(NAMES)
def test_split_name_never_raises_and_keeps_a_name(full: str) -> None:
    """Idempotence of splitting is checked where ingestion uses it (normalize_lead below: the
    parts, once tidied, stay as they are); a re-split of the joined parts is not idempotent by
    nature ("Lovelace, Ada", a lone surname, nameparser's suffix acronyms)."""
    parts = split_name(full)
    if " ".join(full.split()):
        assert not (blank(parts.first_name) and blank(parts.last_name)), parts
    for part in (parts.first_name, parts.last_name):
        if part is not None:
            assert part and tidy_name(tidy_name(part)) == tidy_name(part)


@fast
@given(NAMES)
def test_tidy_name_is_idempotent_and_keeps_the_name(part: str) -> None:
    once = tidy_name(part)
    assert tidy_name(once) == once
    assert once.casefold().split() == " ".join(part.split()).casefold().split() or (
        # nameparser may re-case a word ("mcdonald" → "McDonald") but keeps its letters
        "".join(once.split()).casefold() == "".join(part.split()).casefold()
    ) or not part.isascii()
    assert blank(part) == blank(once)


# --- company and website ----------------------------------------------------------------------


@fast
@given(COMPANIES)
def test_company_match_key_is_idempotent(company: str) -> None:
    key = company_match_key(company)
    assert company_match_key(key) == key
    assert key == key.strip() and key == key.lower()


@fast
@given(WEBSITES)
@example("http://[")
@example("www.www.acme.com")
def test_website_domain_never_raises_and_is_idempotent(website: str) -> None:
    domain = website_domain(website)
    if domain is not None:
        assert domain and domain == domain.lower() and domain.isascii()
        assert website_domain(domain) == domain


# --- a submitted lead -------------------------------------------------------------------------

FIELD_VALUES = {
    "first_name": NAMES, "last_name": NAMES, "email": EMAILS, "phone": PHONES,
    "company": COMPANIES, "website": WEBSITES, "country": COUNTRIES,
    "source": st.one_of(st.sampled_from(["web_form", "Web Form", "partner", "fax"]), TEXT),
    "industry": st.one_of(st.sampled_from(["saas", "fintech", "Software", "knitting"]), TEXT),
    "seniority": st.one_of(st.sampled_from(["vp", "VP", "c_level", "wizard"]), TEXT),
    "department": st.one_of(st.sampled_from(["sales", "Engineering", "dungeon"]), TEXT),
}


@st.composite
def lead_fields(draw: st.DrawFn) -> LeadFields:
    values = {}
    for name in LeadFields.__struct_fields__:
        choice = draw(st.sampled_from(["unset", "none", "text"]))
        if choice == "none":
            values[name] = None
        elif choice == "text":
            values[name] = draw(FIELD_VALUES.get(name, TEXT))
    return LeadFields(**values)


@fast
@given(lead_fields(), st.one_of(st.none(), NAMES))
def test_normalize_lead_never_raises_is_idempotent_and_loses_nothing(
    fields: LeadFields, full_name: str | None
) -> None:
    once = normalize_lead(fields, full_name=full_name, on_unknown=FLAG)
    again = normalize_lead(once.fields, stage=once.stage, on_unknown=FLAG)
    assert again.fields == once.fields
    assert again.unmapped == once.unmapped

    out = once.fields
    for name in LeadFields.__struct_fields__:
        raw, got = getattr(fields, name), getattr(out, name)
        if name in ("first_name", "last_name") and full_name and blank_or_unset(raw):
            continue  # filled from the full name
        if raw is UNSET:
            assert got is UNSET, name
        elif blank(raw):
            assert got is None or (name == "address" and got == raw), name
        else:
            assert not blank(got), (name, raw, got)  # a value entered is never dropped
    if isinstance(fields.email, str) and not blank(fields.email):
        try:
            expected = normalize_email(" ".join(fields.email.split())).email
        except InvalidEmailSyntax:
            expected = " ".join(fields.email.split())  # kept as entered
        assert out.email == expected
    for name in once.unmapped:  # a value outside the vocabulary is kept as entered
        assert name in VOCABULARY_FIELDS
        assert getattr(out, name) == " ".join(getattr(fields, name).split())
    if (full_name and not blank(full_name) and blank_or_unset(fields.first_name)
            and blank_or_unset(fields.last_name)):
        assert not (blank(out.first_name) and blank(out.last_name)), (full_name, out)


def blank_or_unset(value: object) -> bool:
    return value is UNSET or blank(value)  # type: ignore[arg-type]
