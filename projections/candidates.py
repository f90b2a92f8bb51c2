"""Duplicate candidates from the lead read model, for fuzzy matching at ingestion.

A cheap, index-backed pre-selection within the workspace: leads whose whole name ("first last",
in any word order) is trigram-similar to the new lead's, best first, or whose phone is the
same. The pure scorer in ledger/fuzzy.py decides which of them are likely duplicates.

How similar is similar enough is the session's `pg_trgm.similarity_threshold`, which every
leadledger connection sets to `ledger.fuzzy.NAME_SIMILARITY` (ledger/database.py): the `%`
operator takes its threshold from there, and so does the GIN index's own pre-filter, which is
what keeps the query cheap.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from ledger.fuzzy import Person, full_name

LIMIT = 50

# The name expression is the one leads_full_name_trgm indexes (migration 0033), character for
# character: the planner matches them as text.
_CANDIDATES = """
SELECT lead_id, first_name, last_name, email, phone, company
FROM leads
WHERE workspace = %(workspace)s AND status = 'active' AND lead_id <> %(lead_id)s
  AND ((lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) %% %(name)s::text
       OR phone = %(phone)s::text)
ORDER BY similarity(lower(coalesce(first_name, '') || ' ' || coalesce(last_name, '')),
                    %(name)s::text) DESC, lead_id
LIMIT %(limit)s
"""


class CandidateFinder:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def __call__(self, workspace: str, person: Person) -> list[Person]:
        # A missing name or phone is NULL, which matches nothing.
        params = {"workspace": workspace, "lead_id": person.lead_id,
                  "name": full_name(person) or None, "phone": person.phone, "limit": LIMIT}
        async with self.pool.connection() as conn:
            cur = await conn.execute(_CANDIDATES, params)
            rows = await cur.fetchall()
        return [
            Person(lead_id=r[0], first_name=r[1], last_name=r[2], email=r[3], phone=r[4],
                   company=r[5])
            for r in rows
        ]
