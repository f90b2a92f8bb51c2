"""Ingestion policies end to end against PostgreSQL: normalization, vocabularies, exact and fuzzy
duplicates under reject / merge / flag, and a batch that dedups within itself."""

from __future__ import annotations

import pytest

from ledger.crypto import parse_master_key
from ledger.errors import DuplicateLead
from ledger.fuzzy import Person
from ledger.identity import IdentityHasher
from ledger.ingest import CREATED, MERGED, Ingestor, NewLead
from ledger.lead_commands import LeadCommands
from ledger.lead_input import UnknownTerm
from ledger.quality_settings import QualityPolicy, QualitySettings
from ledger.vocabulary import Term
from schema.events import LeadFields
from schema.metadata import Actor, EventMetadata

META = EventMetadata(actor=Actor(key_id="k", role="admin"), source="api")


@pytest.fixture
def commands(store, infra):
    return LeadCommands(store, IdentityHasher(parse_master_key(infra.master_key)))


@pytest.fixture
def ingestor(commands):
    created: list[str] = []

    async def from_ledger(workspace: str, person: Person) -> list[Person]:
        """Candidates straight from the ledger: every lead this test created."""
        found = []
        for lead_id in created:
            state = await commands.load(workspace, lead_id)
            if state.status == "active":
                f = state.fields
                found.append(Person(lead_id=lead_id, first_name=f.first_name,
                                    last_name=f.last_name, email=f.email, phone=f.phone,
                                    company=f.company))
        return found

    ingestor = Ingestor(commands, from_ledger)
    original = ingestor.create

    async def create(*args, **kwargs):
        result = await original(*args, **kwargs)
        created.append(result.result.lead_id)
        return result

    ingestor.create = create
    return ingestor


@pytest.fixture
def settings(pool):
    return QualitySettings(pool)


def lead(lead_id: str, **fields) -> NewLead:
    full_name = fields.pop("name", None)
    return NewLead(lead_id=lead_id, fields=LeadFields(**fields), full_name=full_name)


async def test_fields_are_normalized_on_the_way_in(ingestor, settings):
    quality = await settings.load("ws")
    result = await ingestor.create("ws", lead("L1", name="ADA LOVELACE", email=" Ada@GMAIL.COM ",
                                              phone="020 7946 0958", country="uk",
                                              industry="SaaS"), META, quality)
    f = result.result.state.fields
    assert (f.first_name, f.last_name) == ("Ada", "Lovelace")
    assert (f.email, f.phone, f.country, f.industry) == (
        "Ada@gmail.com", "+442079460958", "GB", "software")


async def test_unknown_vocabulary_value_is_refused_with_a_suggestion_or_flagged(ingestor, settings):
    quality = await settings.load("ws")
    with pytest.raises(UnknownTerm) as err:
        await ingestor.create("ws", lead("L1", industry="Softwre"), META, quality)
    assert err.value.suggestion == "software" and "healthcare" in err.value.allowed
    await settings.save_policy("ws", QualityPolicy(on_unknown="flag"), "k", "pilot")
    result = await ingestor.create("ws", lead("L1", industry="Softwre"), META, await settings.load("ws"))
    assert result.unmapped == ("industry",) and result.result.state.fields.industry == "Softwre"


async def test_workspace_vocabulary_with_synonyms_overrides_the_builtin(ingestor, settings):
    await settings.save_vocabulary("ws", "industry", [
        Term(code="saas", label="SaaS", synonyms=("software", "cloud")),
        Term(code="fintech", synonyms=("payments",)),
    ], "k", "our own list")
    quality = await settings.load("ws")
    result = await ingestor.create("ws", lead("L1", industry="Cloud"), META, quality)
    assert result.result.state.fields.industry == "saas"
    with pytest.raises(UnknownTerm):
        await ingestor.create("ws", lead("L2", industry="healthcare"), META, quality)


async def test_invalid_email_creates_a_quarantined_lead(ingestor, settings):
    result = await ingestor.create("ws", lead("L1", email="ada@gmial.com"), META,
                                   await settings.load("ws"))
    assert result.outcome == CREATED and result.result.state.quarantined


@pytest.mark.parametrize("policy", ["reject", "merge", "flag"])
async def test_exact_duplicate_policies(ingestor, settings, policy):
    quality = await settings.load("ws")
    await ingestor.create("ws", lead("L1", email="ada@acme.com", company="Acme"), META, quality)
    again = lead("L2", email="ADA@acme.com", title="CTO")
    chosen = QualityPolicy(exact_policy=policy)
    if policy == "reject":
        with pytest.raises(DuplicateLead) as err:
            await ingestor.create("ws", again, META, quality, policy=chosen)
        assert err.value.existing_id == "L1"
        return
    result = await ingestor.create("ws", again, META, quality, policy=chosen)
    if policy == "merge":
        assert result.outcome == MERGED and result.merged_into == "L1"
        assert result.result.state.fields.title == "CTO"
        assert result.result.state.fields.company == "Acme"
    else:
        assert result.outcome == CREATED and result.result.state.suspected_duplicates == ("L1",)


async def test_fuzzy_duplicate_is_flagged_by_default_and_can_be_rejected(ingestor, settings):
    quality = await settings.load("ws")
    await ingestor.create("ws", lead("L1", first_name="Jon", last_name="Smith",
                                     company="Acme, Inc."), META, quality)
    flagged = await ingestor.create("ws", lead("L2", first_name="John", last_name="Smith",
                                               company="ACME"), META, quality)
    assert flagged.duplicates and flagged.duplicates[0].lead_id == "L1"
    assert "L1" in flagged.result.state.suspected_duplicates
    # the lead and its suspicion are one write: one transaction, the result has every event
    stream = await ingestor.commands.store.read_stream("ws", "L2")
    assert len({r.transaction_id for r in stream.events}) == 1
    assert [type(e).__name__ for e in flagged.result.events][-1] == "LeadDuplicateSuspected"
    assert flagged.result.state.version == len(flagged.result.events) == stream.version
    with pytest.raises(DuplicateLead) as err:
        await ingestor.create("ws", lead("L3", first_name="John", last_name="Smyth",
                                         company="Acme"), META, quality,
                              policy=QualityPolicy(fuzzy_policy="reject", fuzzy_threshold=80))
    assert not err.value.exact


async def test_a_batch_dedups_within_itself(ingestor, settings):
    quality = await settings.load("ws")
    policy = QualityPolicy(exact_policy="merge")
    items = [lead("B1", email="sam@acme.com"), lead("B2", email="Sam@Acme.com", title="VP"),
             lead("B3", email="kim@acme.com")]
    outcomes = [await ingestor.create("ws", item, META, quality, policy=policy) for item in items]
    assert [o.outcome for o in outcomes] == [CREATED, MERGED, CREATED]
    assert outcomes[1].merged_into == "B1"


async def test_with_dedup_off_the_same_person_is_created_twice(store, infra, pool, settings):
    """LEADLEDGER_DEDUP=off (benchmarks, trusted loads): no identity claims, no fuzzy lookups."""
    from api.runtime import build_runtime
    from api.settings import Settings

    runtime = build_runtime(
        Settings(dedup="off"), infra.database_url, infra.nats_url, infra.master_key, pool
    )
    quality = await settings.load("ws-off")
    lead = LeadFields(first_name="Ada", last_name="Lovelace", email="ada@analytical.example")
    ids = []
    for n in range(2):
        result = await runtime.ingestor.create(
            "ws-off", NewLead(lead_id=f"OFF{n}", fields=lead, stage="lead"), META, quality
        )
        assert result.outcome == CREATED and not result.duplicates
        ids.append(result.result.lead_id)
    assert ids == ["OFF0", "OFF1"]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM identity_keys WHERE workspace = 'ws-off'")
        assert (await cur.fetchone())[0] == 0
