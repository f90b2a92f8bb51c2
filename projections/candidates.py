"""Duplicate candidates from the lead read model, for fuzzy matching at ingestion.

A cheap, index-backed pre-selection (similar last name by trigrams, or the same phone) within the
workspace; the pure scorer in ledger/fuzzy.py decides which are likely duplicates.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from ledger.fuzzy import Person

LIMIT = 50

_CANDIDATES = """
SELECT lead_id, first_name, last_name, email, phone, company
FROM leads
WHERE workspace = %(workspace)s AND status = 'active' AND lead_id <> %(lead_id)s
  AND ((%(last_name)s::text IS NOT NULL AND lower(last_name) %% lower(%(last_name)s::text))
       OR (%(phone)s::text IS NOT NULL AND phone = %(phone)s::text))
LIMIT %(limit)s
"""


class CandidateFinder:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def __call__(self, workspace: str, person: Person) -> list[Person]:
        params = {"workspace": workspace, "lead_id": person.lead_id,
                  "last_name": person.last_name, "phone": person.phone, "limit": LIMIT}
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CANDIDATES, params)
            rows = await cur.fetchall()
        return [
            Person(lead_id=r[0], first_name=r[1], last_name=r[2], email=r[3], phone=r[4],
                   company=r[5])
            for r in rows
        ]
