"""The candidate query uses the read model's trigram and phone indexes within one workspace."""

from datetime import UTC, datetime

from ledger.fuzzy import Person
from projections.candidates import CandidateFinder

NOW = datetime.now(UTC)


async def _row(conn, workspace, lead_id, **cols):
    names = ["workspace", "lead_id", "version", "status", "stage", "created_at", "updated_at",
             *cols]
    values = [workspace, lead_id, 1, "active", "lead", NOW, NOW, *cols.values()]
    await conn.execute(
        f"INSERT INTO leads ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))})",
        values,
    )


async def test_similar_last_names_and_same_phone_within_the_workspace(pool):
    async with pool.connection() as conn:
        await _row(conn, "ws", "a", first_name="John", last_name="Smyth", company="Acme")
        await _row(conn, "ws", "b", first_name="Ann", last_name="Other", phone="+14155552671")
        await _row(conn, "ws", "c", first_name="Zed", last_name="Unrelated")
        await _row(conn, "other", "d", first_name="John", last_name="Smith")
    finder = CandidateFinder(pool)
    found = await finder("ws", Person(lead_id="new", first_name="John", last_name="Smith",
                                      phone="+14155552671"))
    assert sorted(p.lead_id for p in found) == ["a", "b"]
