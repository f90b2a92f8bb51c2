"""The lead's decider: given events, when a command, then events (or an error). No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec import UNSET

from ledger.errors import (
    DomainError,
    InvalidValue,
    LeadAlreadyExists,
    LeadArchivedError,
    LeadGone,
    LeadNotFound,
)
from ledger.lead import ACTIVE, ARCHIVED, ERASED, INITIAL, MERGED, TAG_PATTERN, decide, fold
from schema.commands import (
    AbsorbLead,
    AddNote,
    ArchiveLead,
    AssignOwner,
    ChangeLeadFields,
    ChangeStage,
    CreateLead,
    DismissDuplicate,
    EraseLead,
    MarkMergedInto,
    RecordEmailBounce,
    RestoreLead,
    SuspectDuplicate,
    TagLead,
    UntagLead,
)
from schema.events import (
    FIELD_NAMES,
    PERSONAL_FIELDS,
    LeadArchived,
    LeadCreated,
    LeadEmailChecked,
    LeadErased,
    LeadFields,
    LeadFieldsChanged,
    LeadMerged,
    LeadOwnerAssigned,
    LeadStageChanged,
)
from schema.vocabularies import LIFECYCLE_STAGES

CREATED = LeadCreated(
    lead_id="L1", fields=LeadFields(email="ada@example.com", company="Acme"), stage="lead",
    tags=("vip",),
)


def then(given_events, command):
    return decide(fold(given_events), command)


# -- given / when / then ------------------------------------------------------------------

def test_create_new_lead():
    cmd = CreateLead(lead_id="L1", fields=LeadFields(email="ada@example.com", company="Acme"),
                     stage="lead", tags=("vip", "vip"))
    assert then([], cmd) == [CREATED, LeadEmailChecked(status="valid")]


def test_create_twice_is_refused():
    with pytest.raises(LeadAlreadyExists):
        then([CREATED], CreateLead(lead_id="L1", fields=LeadFields(), stage="lead"))


def test_commands_on_missing_lead_are_refused():
    with pytest.raises(LeadNotFound):
        then([], TagLead(tag="x"))


def test_change_only_emits_what_changed():
    events = then([CREATED], ChangeLeadFields(changes=LeadFields(company="Acme", title="CTO")))
    assert events == [LeadFieldsChanged(changes=LeadFields(title="CTO"))]


def test_a_new_email_is_checked_and_an_invalid_one_quarantines_the_lead():
    events = then([CREATED], ChangeLeadFields(changes=LeadFields(email="ada@gmial.com")))
    assert events == [
        LeadFieldsChanged(changes=LeadFields(email="ada@gmial.com")),
        LeadEmailChecked(status="invalid", reasons=("typo-domain",), suggestion_domain="gmail.com"),
    ]
    state = fold([CREATED, *events])
    assert state.quarantined and state.status == ACTIVE
    fixed = then([CREATED, *events], ChangeLeadFields(changes=LeadFields(email="ada@gmail.com")))
    assert not fold([CREATED, *events, *fixed]).quarantined


def test_an_email_at_a_domain_without_mail_is_invalid_no_mx_and_quarantines_the_lead():
    cmd = CreateLead(lead_id="L1", fields=LeadFields(email="ada@example.com", company="Acme"),
                     stage="lead", tags=("vip",), email_deliverable=False)
    events = then([], cmd)
    assert events == [CREATED, LeadEmailChecked(status="invalid", reasons=("no-mx",))]
    state = fold(events)
    assert state.quarantined and state.email_reasons == ("no-mx",) and state.status == ACTIVE


def test_a_deliverable_or_unchecked_email_records_only_the_offline_check():
    for deliverable in (True, None):
        cmd = CreateLead(lead_id="L1", fields=LeadFields(email="ada@example.com", company="Acme"),
                         stage="lead", tags=("vip",), email_deliverable=deliverable)
        assert then([], cmd) == [CREATED, LeadEmailChecked(status="valid")]


def test_a_changed_email_at_a_domain_without_mail_keeps_the_offline_reasons_too():
    events = then([CREATED], ChangeLeadFields(changes=LeadFields(email="info@gone.example"),
                                              email_deliverable=False))
    assert events == [
        LeadFieldsChanged(changes=LeadFields(email="info@gone.example")),
        LeadEmailChecked(status="invalid", reasons=("role-account", "no-mx")),
    ]
    state = fold([CREATED, *events])
    assert state.quarantined
    # fixed with a deliverable email: out of quarantine
    fixed = then([CREATED, *events], ChangeLeadFields(
        changes=LeadFields(email="ada@good.example"), email_deliverable=True))
    assert fixed[-1] == LeadEmailChecked(status="valid")
    assert not fold([CREATED, *events, *fixed]).quarantined


def test_the_mx_outcome_of_an_email_that_does_not_change_records_nothing():
    assert then([CREATED], ChangeLeadFields(changes=LeadFields(email="ada@example.com"),
                                            email_deliverable=False)) == []
    cleared = then([CREATED], ChangeLeadFields(changes=LeadFields(email=None),
                                               email_deliverable=False))
    assert cleared == [LeadFieldsChanged(changes=LeadFields(email=None))]


def test_hard_bounce_invalidates_the_email_soft_bounce_does_not():
    soft = then([CREATED], RecordEmailBounce(kind="soft"))
    assert not fold([CREATED, *soft]).quarantined
    hard = then([CREATED], RecordEmailBounce(kind="hard", detail="550 no such user"))
    state = fold([CREATED, *hard])
    assert state.email_status == "invalid" and state.quarantined
    with pytest.raises(InvalidValue):
        then([CREATED], RecordEmailBounce(kind="maybe"))


def test_absorbing_a_lead_takes_only_the_values_the_survivor_lacks():
    events = then([CREATED], AbsorbLead(
        absorbed_id="L2", absorbed_fields=LeadFields(email="other@example.com", title="CEO"),
        absorbed_tags=("vip", "partner"),
    ))
    assert events == [LeadMerged(absorbed_id="L2", changes=LeadFields(title="CEO"), tags=("partner",))]
    state = fold([CREATED, *events])
    assert state.fields.email == "ada@example.com" and state.fields.title == "CEO"
    assert state.merged_from == ("L2",) and state.tags == ("vip", "partner")
    assert then([CREATED, *events], AbsorbLead(absorbed_id="L2", absorbed_fields=LeadFields())) == []


def test_suspected_duplicates_are_recorded_once_and_can_be_dismissed():
    suspect = SuspectDuplicate(other_id="L2", score=0.93, matched=("name", "company"))
    events = then([CREATED], suspect)
    assert fold([CREATED, *events]).suspected_duplicates == ("L2",)
    assert then([CREATED, *events], suspect) == []
    dismissed = then([CREATED, *events], DismissDuplicate(other_id="L2"))
    assert fold([CREATED, *events, *dismissed]).suspected_duplicates == ()


def test_change_that_changes_nothing_emits_nothing():
    assert then([CREATED], ChangeLeadFields(changes=LeadFields(company="Acme"))) == []


def test_clearing_a_field_is_a_change():
    events = then([CREATED], ChangeLeadFields(changes=LeadFields(email=None)))
    assert events == [LeadFieldsChanged(changes=LeadFields(email=None))]
    assert fold([CREATED, *events]).fields.email is None


def test_stage_change_records_previous():
    assert then([CREATED], ChangeStage(stage="mql")) == [
        LeadStageChanged(stage="mql", previous="lead")
    ]


def test_unknown_stage_is_refused_with_the_allowed_values():
    with pytest.raises(InvalidValue, match="mql"):
        then([CREATED], ChangeStage(stage="hot"))


def test_owner_assignment_records_previous():
    events = then([CREATED, LeadOwnerAssigned(owner="sam")], AssignOwner(owner="kim"))
    assert events == [LeadOwnerAssigned(owner="kim", previous="sam")]


def test_tag_already_present_is_a_no_op_and_bad_tags_are_refused():
    assert then([CREATED], TagLead(tag="vip")) == []
    with pytest.raises(InvalidValue):
        then([CREATED], TagLead(tag="Not A Tag"))


def test_archived_lead_takes_only_restore_merge_erase():
    given_events = [CREATED, LeadArchived()]
    with pytest.raises(LeadArchivedError):
        then(given_events, TagLead(tag="x"))
    assert then(given_events, RestoreLead()) != []
    assert then(given_events, ArchiveLead()) == []


def test_erased_lead_takes_nothing():
    with pytest.raises(LeadGone):
        then([CREATED, LeadErased()], ChangeStage(stage="mql"))


def test_erasure_drops_every_field():
    state = fold([CREATED, LeadErased()])
    assert state.status == ERASED
    assert all(getattr(state.fields, n) in (None, UNSET) for n in FIELD_NAMES)


def test_merge_into_self_is_refused():
    with pytest.raises(InvalidValue):
        then([CREATED], MarkMergedInto(survivor_id="L1"))


def test_merged_lead_can_still_be_erased():
    given_events = [CREATED, *then([CREATED], MarkMergedInto(survivor_id="L2"))]
    assert fold(given_events).status == MERGED
    with pytest.raises(LeadGone):
        then(given_events, TagLead(tag="x"))
    assert then(given_events, EraseLead()) == [LeadErased()]


def test_empty_note_is_refused():
    with pytest.raises(InvalidValue):
        then([CREATED], AddNote(note_id="n1", text="   "))


# -- properties ---------------------------------------------------------------------------

texts = st.one_of(st.none(), st.text(max_size=20))
tags = st.sampled_from(["vip", "enterprise", "q3", "Bad Tag", "x" * 70])
fields = st.builds(LeadFields, **{n: texts for n in FIELD_NAMES})
commands = st.one_of(
    st.builds(CreateLead, lead_id=st.just("L1"), fields=fields,
              stage=st.sampled_from([*LIFECYCLE_STAGES, "nope"]),
              tags=st.lists(tags, max_size=3).map(tuple)),
    st.builds(ChangeLeadFields, changes=fields),
    st.builds(TagLead, tag=tags),
    st.builds(UntagLead, tag=tags),
    st.builds(AddNote, note_id=st.just("n"), text=st.text(max_size=5)),
    st.builds(ChangeStage, stage=st.sampled_from([*LIFECYCLE_STAGES, "nope"])),
    st.builds(AssignOwner, owner=st.sampled_from([None, "sam", "kim"])),
    st.builds(ArchiveLead),
    st.builds(RestoreLead),
    st.builds(MarkMergedInto, survivor_id=st.sampled_from(["L1", "L2"])),
    st.builds(EraseLead),
    st.builds(RecordEmailBounce, kind=st.sampled_from(["hard", "soft", "odd"])),
    st.builds(AbsorbLead, absorbed_id=st.sampled_from(["L1", "L3"]), absorbed_fields=fields,
              absorbed_tags=st.lists(tags.filter(lambda t: TAG_PATTERN.match(t)), max_size=2).map(tuple)),
    st.builds(SuspectDuplicate, other_id=st.sampled_from(["L1", "L4"]), score=st.just(0.9),
              matched=st.just(("email",))),
    st.builds(DismissDuplicate, other_id=st.sampled_from(["L4"])),
)


def check_invariants(state, events_so_far):
    assert state.version == len(events_so_far)
    if state.status is None:
        assert state.version == 0
        return
    assert state.status in (ACTIVE, ARCHIVED, MERGED, ERASED)
    assert len(set(state.tags)) == len(state.tags), "tags are a set"
    assert all(TAG_PATTERN.match(t) for t in state.tags)
    if state.status == ERASED:
        assert all(getattr(state.fields, n) in (None, UNSET) for n in PERSONAL_FIELDS)
        assert state.tags == ()
    else:
        assert state.stage in LIFECYCLE_STAGES
    assert state.quarantined == (state.email_status == "invalid")
    assert state.lead_id not in state.suspected_duplicates
    if state.status == MERGED:
        assert state.merged_into not in (None, state.lead_id)


@settings(max_examples=300, deadline=None)
@given(st.lists(commands, max_size=25))
def test_any_command_sequence_folds_to_a_valid_state(sequence):
    history = []
    state = INITIAL
    for command in sequence:
        try:
            events = decide(state, command)
        except DomainError:
            # A refused command appends nothing and leaves the state as it was.
            assert fold(history) == state
            continue
        history.extend(events)
        state = fold(history)
        check_invariants(state, history)
        # A command applied again right away changes nothing (except ones that always add).
        always_adds = (AddNote, MarkMergedInto, EraseLead, RecordEmailBounce)
        if events and not isinstance(command, always_adds):
            try:
                assert decide(state, command) == []
            except DomainError:
                pass


@settings(max_examples=100, deadline=None)
@given(st.lists(commands, max_size=15))
def test_fold_is_deterministic(sequence):
    history = []
    state = INITIAL
    for command in sequence:
        try:
            history.extend(decide(state, command))
        except DomainError:
            continue
        state = fold(history)
    assert fold(history) == fold(list(history))
