"""Duplicate candidates from the lead read model, for fuzzy matching at ingestion.

A cheap, index-backed pre-selection within the workspace: leads whose whole name ("first last",
in any word order) is trigram-similar to the new lead's, best first, or whose phone is the
same. The pure scorer in ledger/fuzzy.py decides which of them are likely duplicates.

How similar is similar enough is `ledger.fuzzy.NAME_SIMILARITY`, pg_trgm's threshold for the
`%` operator and for the GIN index's own pre-filter, which is what keeps the query cheap.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from ledger.fuzzy import NAME_SIMILARITY, Person, full_name

LIMIT = 50

# The query itself is the function lead_candidates (migration 0033), which runs it with the
# trigram threshold and the planner settings it needs for itself alone.
_CANDIDATES = """
SELECT lead_id, first_name, last_name, email, phone, company
FROM lead_candidates(%(workspace)s, %(lead_id)s, %(name)s::text, %(phone)s::text,
                     %(similarity)s::real, %(limit)s::integer)
"""


class CandidateFinder:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def __call__(self, workspace: str, person: Person) -> list[Person]:
        # A missing name or phone is NULL, which matches nothing.
        params = {"workspace": workspace, "lead_id": person.lead_id,
                  "name": full_name(person) or None, "phone": person.phone,
                  "similarity": NAME_SIMILARITY, "limit": LIMIT}
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CANDIDATES, params)
            rows = await cur.fetchall()
        return [
            Person(lead_id=r[0], first_name=r[1], last_name=r[2], email=r[3], phone=r[4],
                   company=r[5])
            for r in rows
        ]
