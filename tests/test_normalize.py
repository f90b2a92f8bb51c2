"""Normalization and email checks: pure functions, tested without I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.email_check import INVALID, RISKY, VALID, check_email
from ledger.normalize import (
    InvalidEmailSyntax,
    company_match_key,
    country_code,
    normalize_email,
    normalize_phone,
    split_name,
    website_domain,
)


def test_email_is_trimmed_domain_lowercased_and_idna_encoded():
    assert normalize_email("  Ada.Love@Example.COM ").email == "Ada.Love@example.com"
    assert normalize_email("jo@Bücher.de").email == "jo@xn--bcher-kva.de"


def test_email_identity_applies_provider_rules_only_where_they_hold():
    assert normalize_email("Ada.Love+news@googlemail.com").identity == "adalove@gmail.com"
    assert normalize_email("ada.love+x@acme.com").identity == "ada.love+x@acme.com"


def test_bad_email_syntax_is_an_error():
    with pytest.raises(InvalidEmailSyntax):
        normalize_email("not an email")


def test_phone_becomes_e164_with_the_country_as_default_region():
    assert normalize_phone("020 7946 0958", "GB").phone == "+442079460958"
    assert normalize_phone("(415) 555-2671", "US").phone == "+14155552671"


def test_unparseable_phone_is_kept_and_flagged():
    result = normalize_phone(" call me maybe ", "US")
    assert result.phone == "call me maybe" and not result.valid


@pytest.mark.parametrize("raw, code", [
    ("usa", "US"), ("United States", "US"), ("DE", "DE"), ("deu", "DE"), ("Germany", "DE"),
    ("uk", "GB"), ("Côte d'Ivoire", "CI"), ("Narnia", None), ("", None),
])
def test_country_codes_from_codes_names_and_synonyms(raw, code):
    assert country_code(raw) == code


def test_names_are_split_and_cased():
    parts = split_name("JOHN VAN DER BERG")
    assert (parts.first_name, parts.last_name) == ("John", "van der Berg")


def test_company_match_key_ignores_legal_suffixes_and_case():
    assert company_match_key("Acme, Inc.") == company_match_key("ACME GmbH") == "acme"


def test_website_domain():
    assert website_domain("https://WWW.Acme.com/pricing") == "acme.com"
    assert website_domain("acme.io") == "acme.io"


@pytest.mark.parametrize("email, status, reason", [
    ("bob@acme.com", VALID, None),
    ("x@gmail.com", VALID, "free-mail"),
    ("info@acme.com", RISKY, "role-account"),
    ("a@mailinator.com", INVALID, "disposable-domain"),
    ("ada@gmial.com", INVALID, "typo-domain"),
])
def test_email_checks(email, status, reason):
    result = check_email(email)
    assert result.status == status
    if reason:
        assert reason in result.reasons


def test_typo_domain_comes_with_a_suggestion():
    assert check_email("joe@hotmial.co.uk").suggestion == "joe@hotmail.co.uk"


@given(st.emails())
def test_normalizing_twice_changes_nothing(email):
    try:
        once = normalize_email(email)
    except InvalidEmailSyntax:
        return
    assert normalize_email(once.email) == once
