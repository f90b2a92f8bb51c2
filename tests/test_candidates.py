"""The candidate query: whole names similar in any word order, or the same phone, within one
workspace, best first, through the read model's trigram and phone indexes."""

import random
import re
from datetime import UTC, datetime

from ledger.fuzzy import NAME_SIMILARITY, Person
from projections.candidates import _CANDIDATES, LIMIT, CandidateFinder

NOW = datetime.now(UTC)
FIRST = ("James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
         "Susan", "Maria", "Karen", "Daniel", "Lisa", "Thomas", "Nancy", "Mark", "Sarah")


async def _row(conn, workspace, lead_id, **cols):
    names = ["workspace", "lead_id", "version", "status", "stage", "created_at", "updated_at",
             *cols]
    values = [workspace, lead_id, 1, "active", "lead", NOW, NOW, *cols.values()]
    await conn.execute(
        f"INSERT INTO leads ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(values))})",
        values,
    )


async def test_similar_names_and_same_phone_within_the_workspace(pool):
    async with pool.connection() as conn:
        await _row(conn, "ws", "a", first_name="John", last_name="Smyth", company="Acme")
        await _row(conn, "ws", "b", first_name="Ann", last_name="Other", phone="+14155552671")
        await _row(conn, "ws", "c", first_name="Zed", last_name="Unrelated")
        await _row(conn, "other", "d", first_name="John", last_name="Smith")
    finder = CandidateFinder(pool)
    found = await finder("ws", Person(lead_id="new", first_name="John", last_name="Smith",
                                      phone="+14155552671"))
    assert sorted(p.lead_id for p in found) == ["a", "b"]


async def test_swapped_names_are_candidates_and_a_shared_last_name_alone_is_not(pool):
    async with pool.connection() as conn:
        await _row(conn, "ws", "swapped", first_name="Smith", last_name="John")
        await _row(conn, "ws", "typo", first_name="Jon", last_name="Smith")
        await _row(conn, "ws", "same-last", first_name="Zed", last_name="Smith")
        await _row(conn, "ws", "no-name", phone="+14155550000")
    found = await CandidateFinder(pool)("ws", Person(lead_id="new", first_name="John",
                                                     last_name="Smith"))
    # Best first: the same words in another order are as similar as it gets.
    assert [p.lead_id for p in found] == ["swapped", "typo"]


async def test_the_threshold_is_the_query_s_own(pool):
    """The query runs at NAME_SIMILARITY and leaves the session's pg_trgm setting as it was."""
    async with pool.connection() as conn:
        await _row(conn, "ws", "a", first_name="Zed", last_name="Smith")
        await conn.execute("SET pg_trgm.similarity_threshold = 0.1")
        rows = await (await conn.execute(_CANDIDATES, {
            "workspace": "ws", "lead_id": "new", "name": "john smith", "phone": None,
            "similarity": NAME_SIMILARITY, "limit": LIMIT,
        })).fetchall()
        shown = await (await conn.execute("SHOW pg_trgm.similarity_threshold")).fetchone()
        await conn.execute("RESET pg_trgm.similarity_threshold")
    assert rows == []  # "zed smith" is 0.4 similar: a candidate at 0.1, not at 0.45
    assert shown == ("0.1",)


async def test_a_nameless_lead_is_matched_by_phone_only(pool):
    async with pool.connection() as conn:
        await _row(conn, "ws", "a", first_name="Ada", last_name="Lovelace", phone="+14155552671")
        await _row(conn, "ws", "b", first_name="Grace", last_name="Hopper")
    found = await CandidateFinder(pool)("ws", Person(lead_id="new", phone="+14155552671"))
    assert [p.lead_id for p in found] == ["a"]
    assert await CandidateFinder(pool)("ws", Person(lead_id="new")) == []


async def test_a_common_name_returns_the_most_similar_first_up_to_the_limit(pool):
    async with pool.connection() as conn:
        for n in range(LIMIT + 10):
            await _row(conn, "ws", f"j{n:03d}", first_name="John", last_name=f"Smith{n:03d}")
        await _row(conn, "ws", "exact", first_name="john", last_name="SMITH")
    found = await CandidateFinder(pool)("ws", Person(lead_id="new", first_name="John",
                                                     last_name="Smith"))
    assert len(found) == LIMIT
    assert found[0].lead_id == "exact"


async def test_a_large_workspace_is_searched_through_the_name_index(pool):
    """Before any statistics (a workspace that grew fast, a new database) as after, the query
    asks the trigram index; it never walks the workspace's leads computing similarities."""
    rng = random.Random(7)

    def word() -> str:
        return "".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou")
                       for _ in range(rng.randint(3, 5))).capitalize()

    async with pool.connection() as conn:
        async with conn.cursor().copy(
            "COPY leads (workspace, lead_id, version, status, stage, created_at, updated_at,"
            " first_name, last_name) FROM STDIN"
        ) as copy:
            for n in range(20_000):
                await copy.write_row(("big", f"L{n}", 1, "active", "lead", NOW, NOW,
                                      rng.choice(FIRST), word()))
        plans = [await _plan(conn), await _plan(conn, analyzed=True)]
    for plan in plans:
        # The bitmap of the name and phone indexes, nothing that walks the workspace.
        used = set(re.findall(r"Scan (?:using|on) (\w+)", plan))
        assert "leads_full_name_trgm" in used and used <= {
            "leads_full_name_trgm", "leads_by_phone_number", "leads"}, plan
        assert "Seq Scan" not in plan, plan


async def _plan(conn, analyzed: bool = False) -> str:
    """The candidate query's plan, as auto_explain reports it from inside the function."""
    if analyzed:
        await conn.execute("ANALYZE leads")
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
        await conn.execute(f"SET auto_explain.{setting}")
    await conn.execute("LOAD 'auto_explain'")
    await conn.execute(_CANDIDATES, {
        "workspace": "big", "lead_id": "new", "name": "mary toribe", "phone": "+14155552671",
        "similarity": NAME_SIMILARITY, "limit": LIMIT,
    })
    await conn.execute("SET auto_explain.log_min_duration = -1")
    return "\n".join(n for n in notices if "FROM leads" in n)


async def test_the_name_index_has_no_pending_list(pool):
    """Every search reads a GIN index's pending list through, and inserts into it contend
    (see migrations 0033 and 0034): the name index is updated in place."""
    async with pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'leads_full_name_trgm'"
        )).fetchone()
    assert row is not None and "fastupdate=off" in row[0]
