from hypothesis import given
from hypothesis import strategies as st

from ledger.fuzzy import Person, likely_duplicates, score_pair


def test_same_name_same_company_written_differently_matches():
    a = Person(lead_id="a", first_name="Jon", last_name="Smith", company="Acme, Inc.")
    b = Person(lead_id="b", first_name="John", last_name="Smith", company="ACME")
    match = score_pair(a, b)
    assert match.score >= 88 and match.matched == ("name", "company")


def test_same_name_different_company_does_not_match():
    a = Person(lead_id="a", first_name="John", last_name="Smith", company="Acme")
    b = Person(lead_id="b", first_name="John", last_name="Smith", company="Globex")
    assert score_pair(a, b).score < 88


def test_name_and_phone_or_mailbox():
    a = Person(lead_id="a", first_name="Ada", last_name="Lovelace", phone="+442079460958",
               email="ada.lovelace@acme.com")
    b = Person(lead_id="b", first_name="Ada", last_name="Lovelace", phone="+442079460958")
    c = Person(lead_id="c", first_name="Ada", last_name="Lovelace", email="ada.lovelace@gmail.com")
    assert score_pair(a, b).matched == ("name", "phone")
    assert score_pair(a, c).matched == ("name", "email_local_part")
    assert [m.lead_id for m in likely_duplicates(a, [a, b, c])] == ["b", "c"]


def test_threshold_is_tunable():
    a = Person(lead_id="a", first_name="Katherine", last_name="Johnson", company="NASA")
    b = Person(lead_id="b", first_name="Kathy", last_name="Johnson", company="NASA")
    assert likely_duplicates(a, [b], threshold=95) == []
    assert likely_duplicates(a, [b], threshold=70) != []


NAMES = st.sampled_from(["Ada", "Adah", "Grace", "Lovelace", "Lovelaec", "Hopper", "Jon", "John",
                         "Smith", "Smyth", ""])
PEOPLE = st.builds(
    Person, lead_id=st.uuids().map(str), first_name=NAMES, last_name=NAMES,
    email=st.sampled_from([None, "ada@acme.com", "ada.l@gmail.com", "jon@globex.com"]),
    phone=st.sampled_from([None, "+442079460958", "+15125550100"]),
    company=st.sampled_from([None, "Acme, Inc.", "ACME", "Globex", "Initech LLC"]),
)


@given(PEOPLE, st.lists(PEOPLE, max_size=8), st.sampled_from([0.0, 70.0, 88.0, 95.0]))
def test_the_cutoff_changes_nothing_found(person, candidates, threshold):
    """Skipping pairs whose names alone fall short finds exactly what scoring every pair
    in full and then filtering finds."""
    full = [score_pair(person, c) for c in candidates if c.lead_id != person.lead_id]
    expected = sorted((m for m in full if m.score >= threshold), key=lambda m: -m.score)
    assert likely_duplicates(person, candidates, threshold) == expected
