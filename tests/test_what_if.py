"""What-if by replay against a real ledger: a crafted workspace whose numbers are known (scores,
band changes, the AUC of the leads that converted), other workspaces and erased leads left out,
nothing written; and `leadledger rescore` end to end, from a spec file and from saved models."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from ledger.scoring_models import ScoringModels
from ledger.store import NewEvent
from processors.rules import compile_model
from processors.what_if import ModelUnderTest, quantile, ranking, run_what_if
from schema.events import (
    Event,
    LeadActivityRecorded,
    LeadCreated,
    LeadErased,
    LeadFields,
    LeadStageChanged,
)
from schema.scoring import ScoreBand, ScoringModelSpec, ScoringRule
from tests.pipeline_support import META
from tests.test_cli import cli_env, run_cli

BANDS = (ScoreBand(name="A", min_score=20), ScoreBand(name="B", min_score=10))
CURRENT = ScoringModelSpec(
    rules=(ScoringRule(name="german", expression='lead.country == "DE"', points=10),),
    bands=BANDS,
)
CANDIDATE = ScoringModelSpec(
    rules=(
        ScoringRule(name="forms", expression='count("form_submit", 30) >= 2', points=30),
        ScoringRule(name="american", expression='lead.country == "US"', points=5),
    ),
    bands=BANDS,
)


def _created(lead_id: str, country: str) -> Event:
    return LeadCreated(lead_id=lead_id, fields=LeadFields(country=country), stage="lead")


def _forms(n: int) -> list[Event]:
    when = datetime.now(UTC) - timedelta(days=1)
    return [LeadActivityRecorded(activity_id=f"f{i}", kind="form_submit", occurred_at=when)
            for i in range(n)]


def _converts(stage: str) -> Event:
    return LeadStageChanged(stage=stage, previous="lead")


async def write_workspace(store) -> None:
    """L1, L2 convert; L3-L5 do not; L6 is erased; ws-b's lead is another workspace's."""
    histories = {
        ("ws-a", "L1"): [_created("L1", "DE"), *_forms(3), _converts("customer")],
        ("ws-a", "L2"): [_created("L2", "US"), _converts("opportunity")],
        ("ws-a", "L3"): [_created("L3", "DE")],
        ("ws-a", "L4"): [_created("L4", "US"), *_forms(2)],
        ("ws-a", "L5"): [_created("L5", "FR")],
        ("ws-a", "L6"): [_created("L6", "DE"), *_forms(4), LeadErased()],
        ("ws-b", "L7"): [_created("L7", "DE"), *_forms(5)],
    }
    for (workspace, lead_id), events in histories.items():
        # One append per event, so each has its own recorded_at (the conversion's facts are
        # the ones before it).
        for version, event in enumerate(events):
            await store.append(workspace, lead_id, version, [NewEvent(event)], META)


def _tested(label: str, spec: ScoringModelSpec) -> ModelUnderTest:
    return ModelUnderTest(label, compile_model(spec))


async def test_a_crafted_workspace_gives_the_known_numbers_and_writes_nothing(store):
    await write_workspace(store)
    head = await store.head()
    report = await run_what_if(
        store, "ws-a", _tested("candidate.json", CANDIDATE), _tested("current.json", CURRENT),
        page=3,  # several pages, to cross page boundaries
    )
    assert await store.head() == head
    assert (report.leads, report.events) == (5, 18)  # L6 erased: read, not scored
    after, before = report.candidate, report.current
    assert before is not None
    # Final scores: candidate L1 30, L2 5, L3 0, L4 35, L5 0; current L1 10, L3 10, else 0.
    assert msgspec.structs.asdict(after.distribution) == {
        "count": 5, "min": 0, "p25": 0, "median": 5, "p75": 30, "max": 35,
        "bands": {"(none)": 3, "A": 2},
    }
    assert before.distribution.bands == {"(none)": 3, "B": 2}
    assert before.distribution.median == 0 and before.distribution.max == 10
    assert report.band_changes == 3 and report.score_changes == 4
    assert {(c.lead_id, c.before_band, c.after_band) for c in report.band_change_examples} == {
        ("L1", "B", "A"), ("L3", "B", None), ("L4", None, "A"),
    }
    # Converted (scored before converting): candidate [30, 5], current [10, 0];
    # not converted: candidate [0, 35, 0], current [10, 0, 0].
    assert (after.ranking.converted, after.ranking.not_converted) == (2, 3)
    assert after.ranking.auc == pytest.approx(4 / 6)
    assert before.ranking.auc == pytest.approx(3.5 / 6)
    assert after.failing_rules == {} and before.failing_rules == {}


async def test_without_a_current_model_only_the_candidate_is_reported(store):
    await write_workspace(store)
    report = await run_what_if(store, "ws-b", _tested("candidate", CANDIDATE))
    assert report.current is None and report.band_changes == 0
    assert report.candidate.distribution.bands == {"A": 1}
    assert report.candidate.ranking.auc is None  # nobody converted


def test_auc_and_quantiles():
    assert ranking([3, 2], [1, 0]).auc == 1.0
    assert ranking([0], [1, 2]).auc == 0.0
    assert ranking([1, 1], [1, 1]).auc == 0.5
    assert ranking([], [1]).auc is None
    assert quantile([1, 2, 3, 4], 0.5) == 2.5 and quantile([], 0.5) is None


async def test_rescore_dry_run_through_the_cli(infra, store, pool, tmp_path):
    await write_workspace(store)
    models = ScoringModels(pool)
    await models.save("ws-a", "current", CURRENT, "test")
    await models.activate("ws-a", "current", 1, "test")
    candidate = tmp_path / "candidate.json"
    candidate.write_bytes(msgspec.json.encode(CANDIDATE))
    head = await store.head()
    env = cli_env(infra)

    result = await asyncio.to_thread(
        run_cli, "rescore", "--model", str(candidate), "--workspace", "ws-a", "--dry-run",
        "--json", env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["current"]["label"] == "current@1"  # the active model, by default
    assert report["band_changes"] == 3 and report["candidate"]["ranking"]["auc"] == 4 / 6

    await models.save("ws-a", "candidate", CANDIDATE, "test")
    table = await asyncio.to_thread(
        run_cli, "rescore", "--model", "candidate@1", "--against", "current", "-w", "ws-a",
        "--dry-run", env=env,
    )
    assert table.returncode == 0, table.stderr
    assert "3 leads change band" in table.stdout and "candidate@1" in table.stdout

    refused = await asyncio.to_thread(
        run_cli, "rescore", "--model", str(candidate), "-w", "ws-a", env=env
    )
    assert refused.returncode != 0 and "activate" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.json"
    bad.write_bytes(msgspec.json.encode(ScoringModelSpec(
        rules=(ScoringRule(name="oops", expression="lead.country ==", points=1),)
    )))
    invalid = await asyncio.to_thread(
        run_cli, "rescore", "--model", str(bad), "-w", "ws-a", "--dry-run", env=env
    )
    assert invalid.returncode != 0 and "oops (line 1, column" in invalid.stderr
    assert await store.head() == head
