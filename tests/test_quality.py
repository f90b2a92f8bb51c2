"""The data-quality score: pure, deterministic, explained by its problems."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ledger.lead import INITIAL, decide, fold
from ledger.quality import score_quality
from schema.commands import CreateLead
from schema.events import FIELD_NAMES, LeadFields

NOW = datetime(2026, 11, 27, tzinfo=UTC)


def lead(**fields):
    return fold(decide(INITIAL, CreateLead(lead_id="L", fields=LeadFields(**fields), stage="lead")))


COMPLETE = dict(email="ada@acme.com", first_name="Ada", last_name="Lovelace", company="Acme",
                country="GB", phone="+442079460958", website="acme.com", industry="software")


def test_a_complete_valid_consistent_fresh_lead_scores_100():
    result = score_quality(lead(**COMPLETE), updated_at=NOW, now=NOW)
    assert result.score == 100 and result.problems == ()


def test_each_problem_is_named_and_costs_points():
    bad = dict(COMPLETE, email="ada@gmial.com", phone="12345", industry="Softwre", country="US")
    del bad["last_name"]
    result = score_quality(lead(**bad), updated_at=NOW, now=NOW)
    assert {"missing:last_name", "email-invalid", "phone-unparseable", "unmapped:industry"} <= set(
        result.problems)
    assert result.score < 70


def test_phone_country_and_email_domain_consistency():
    result = score_quality(lead(**dict(COMPLETE, country="US", website="other.io")),
                           updated_at=NOW, now=NOW)
    assert "phone-country-mismatch" in result.problems
    assert "email-domain-mismatch" in result.problems


def test_freshness_decays_after_a_year():
    fresh = score_quality(lead(**COMPLETE), updated_at=NOW - timedelta(days=100), now=NOW)
    stale = score_quality(lead(**COMPLETE), updated_at=NOW - timedelta(days=800), now=NOW)
    assert fresh.freshness == 1.0 and stale.freshness < 0.5 and "stale" in stale.problems


@given(st.fixed_dictionaries({}, optional={n: st.text(max_size=12) for n in FIELD_NAMES}))
def test_score_is_always_between_0_and_100(fields):
    result = score_quality(lead(**fields), updated_at=NOW, now=NOW)
    assert 0 <= result.score <= 100
    for part in (result.completeness, result.validity, result.consistency, result.freshness):
        assert 0.0 <= part <= 1.0
