"""/v1/dead-letters over HTTP: admin only, per workspace, paged with cursors, and retry or
discard move a parked event's status (what a reactor does with a retry: tests/test_reactor.py)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

from tests.http_support import *
from tests.http_support import Keys, auth

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

_PARK = """
INSERT INTO dead_letters (workspace, reactor, event_id, stream_id, event_type, transaction_id,
                          position, error, attempts, parked_at)
VALUES (%s, 'enrich', %s, %s, 'LeadCreated', 1, %s, 'TimeoutError()', 5,
        now() - make_interval(secs => %s))
"""


def park(infra: Any, workspace: str, count: int) -> None:
    with psycopg.connect(infra.database_url, autocommit=True) as conn:
        for n in range(count):
            conn.execute(_PARK, (workspace, f"E{n}", f"L{n}", n + 1, 100 - n))


def test_admins_page_retry_and_discard_dead_letters(tc: TestClient, keys: Keys, infra) -> None:
    park(infra, "acme", 5)
    park(infra, "globex", 1)
    first = tc.get("/v1/dead-letters?limit=2", headers=auth(keys.admin))
    assert first.status_code == 200, first.text
    page = first.json()
    assert [d["event_id"] for d in page["data"]] == ["E0", "E1"]  # oldest first
    assert page["data"][0] | {"parked_at": None, "updated_at": None} == {
        "reactor": "enrich", "event_id": "E0", "lead_id": "L0", "event_type": "LeadCreated",
        "position": "1-1", "error": "TimeoutError()", "attempts": 5, "status": "parked",
        "parked_at": None, "updated_at": None,
    }
    seen = [d["event_id"] for d in page["data"]]
    while page["next_cursor"]:
        page = tc.get(f"/v1/dead-letters?limit=2&cursor={page['next_cursor']}",
                      headers=auth(keys.admin)).json()
        seen += [d["event_id"] for d in page["data"]]
    assert seen == ["E0", "E1", "E2", "E3", "E4"]  # globex's never shows in acme

    retried = tc.post("/v1/dead-letters/enrich/E2/retry", headers=auth(keys.admin))
    assert retried.status_code == 202 and retried.json()["status"] == "retrying"
    again = tc.post("/v1/dead-letters/enrich/E2/retry", headers=auth(keys.admin))
    assert again.status_code == 409 and "retrying" in again.json()["detail"]
    discarded = tc.post("/v1/dead-letters/enrich/E3/discard", headers=auth(keys.admin))
    assert discarded.status_code == 200 and discarded.json()["status"] == "discarded"
    parked = tc.get("/v1/dead-letters?status=parked", headers=auth(keys.admin)).json()
    assert [d["event_id"] for d in parked["data"]] == ["E0", "E1", "E4"]
    mismatched = tc.get(f"/v1/dead-letters?status=retrying&cursor={first.json()['next_cursor']}",
                        headers=auth(keys.admin))
    assert mismatched.status_code == 400

    assert tc.post("/v1/dead-letters/enrich/nope/retry",
                   headers=auth(keys.admin)).status_code == 404
    # Another workspace's dead letter is not there for acme's admin.
    assert tc.post("/v1/dead-letters/enrich/E0/discard",
                   headers=auth(keys.other)).status_code == 403
    assert tc.get("/v1/dead-letters", headers=auth(keys.sales)).status_code == 403
