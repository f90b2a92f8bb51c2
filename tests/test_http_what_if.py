"""POST /v1/scoring/what-if: a candidate model replayed over the workspace's ledger through the
API, compared with the active model (or another), writing nothing."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.http_support import *
from tests.http_support import Keys, auth, lead_body, make_app, without_enrichment
from tests.test_scoring_processor import activate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CURRENT = {
    "model_id": "fit",
    "rules": [{"name": "german", "expression": 'lead.country == "DE"', "points": 30}],
    "bands": [{"name": "A", "min_score": 20}, {"name": "C", "min_score": 0}],
}
CANDIDATE = {
    "rules": [{"name": "german", "expression": 'lead.country == "DE"', "points": 10},
              {"name": "qualified", "expression": 'lead.stage == "sql"', "points": 15}],
    "bands": [{"name": "A", "min_score": 20}, {"name": "C", "min_score": 0}],
}


@pytest.fixture
def api_app(infra: Any, http_settings: Any) -> Any:
    return make_app(infra, http_settings, reactors=without_enrichment())


def head(infra: Any) -> int:
    with psycopg.connect(infra.database_url) as conn:
        return conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]


def test_a_candidate_is_compared_with_the_active_model(tc: TestClient, keys: Keys,
                                                       infra) -> None:
    # Four Germans (30 under the current model: A), two of them later qualified (sql).
    ids = []
    for n in range(6):
        body = lead_body(300 + n, country="DE" if n < 4 else "GB")
        ids.append(tc.post("/v1/leads", json=body, headers=auth(keys.sales)).json()["id"])
    for lead_id in ids[:2]:
        changed = tc.patch(f"/v1/leads/{lead_id}", json={"stage": "sql"},
                           headers=auth(keys.sales))
        assert changed.status_code == 200, changed.text
    activate(tc, keys, CURRENT)
    before = head(infra)

    answer = tc.post("/v1/scoring/what-if", json={"model": CANDIDATE}, headers=auth(keys.admin))
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["workspace"] == "acme" and report["leads"] == 6
    assert report["current"]["label"] == "fit@1" and report["candidate"]["label"] == "candidate"
    assert report["current"]["distribution"]["bands"] == {"A": 4, "C": 2}
    # Candidate: the two qualified Germans 25 (A), the other Germans 10 (C), the rest 0 (C).
    assert report["candidate"]["distribution"]["bands"] == {"A": 2, "C": 4}
    assert report["band_changes"] == 2
    assert {c["lead_id"] for c in report["band_change_examples"]} == set(ids[2:4])
    assert head(infra) == before  # nothing written

    saved = tc.post("/v1/scoring/what-if", json={"saved": {"model_id": "fit"}},
                    headers=auth(keys.admin)).json()
    assert saved["band_changes"] == 0 and saved["candidate"]["label"] == "fit@1"


def test_what_if_errors(tc: TestClient, keys: Keys) -> None:
    bad = {"rules": [{"name": "broken", "expression": "lead.country ==", "points": 1}]}
    refused = tc.post("/v1/scoring/what-if", json={"model": bad}, headers=auth(keys.admin))
    assert refused.status_code == 422
    assert refused.json()["problems"][0]["rule"] == "broken"
    missing = tc.post("/v1/scoring/what-if", json={"saved": {"model_id": "nope"}},
                      headers=auth(keys.admin))
    assert missing.status_code == 404
    both = tc.post("/v1/scoring/what-if", json={"saved": {"model_id": "x"}, "model": CANDIDATE},
                   headers=auth(keys.admin))
    assert both.status_code == 422
    assert tc.post("/v1/scoring/what-if", json={"model": CANDIDATE},
                   headers=auth(keys.sales)).status_code == 403
