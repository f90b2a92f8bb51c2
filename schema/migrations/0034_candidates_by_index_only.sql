-- The candidate query (migration 0033) pinned to the bitmap of its two indexes.
--
-- Measured against bench names with a writer adding leads and their later versions
-- (/tmp-style micro-benchmark described in bench/RESULTS.md, pipeline reading), 0033's plan
-- cost 2.7 to 3.1 ms of PostgreSQL CPU per call, more than the last-name query it replaced
-- (1.1 to 1.2 ms), for two reasons fixed here:
--   * the phone branch named the workspace, and a planner short of statistics served it with
--     any btree that starts with the workspace (leads_by_score, say), then rechecked every
--     lead's name similarity: the branch now names the phone alone, which only an index on
--     the phone serves (the workspace is checked on the rows it finds);
--   * with the sequential scan off, a planner short of statistics walked a btree over the
--     whole table instead: plain and index-only scans are off too, which leaves the bitmap.
-- The name index also drops its pending list (fastupdate off): a search reads the whole list,
-- and concurrent inserts into it contend; each insert now updates the index in place.
-- After this: 0.35 ms per call.
CREATE OR REPLACE FUNCTION lead_candidates(
    p_workspace text, p_lead_id text, p_name text, p_phone text, p_similarity real,
    p_limit integer
) RETURNS TABLE (
    lead_id text, first_name text, last_name text, email text, phone text, company text
) LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_indexscan = off
SET enable_indexonlyscan = off
SET pg_trgm.similarity_threshold = 0.3
AS $$
BEGIN
    PERFORM set_config('pg_trgm.similarity_threshold', p_similarity::text, true);
    RETURN QUERY
    SELECT l.lead_id, l.first_name, l.last_name, l.email, l.phone, l.company
    FROM leads l
    WHERE l.workspace || '' = p_workspace AND l.status = 'active' AND l.lead_id <> p_lead_id
      AND ((lower(coalesce(l.first_name, '') || ' ' || coalesce(l.last_name, ''))) % p_name
           OR l.phone = p_phone)
    ORDER BY similarity(lower(coalesce(l.first_name, '') || ' ' || coalesce(l.last_name, '')),
                        p_name) DESC, l.lead_id
    LIMIT p_limit;
END
$$;
ALTER INDEX leads_full_name_trgm SET (fastupdate = off);
CREATE INDEX leads_by_phone_number ON leads (phone) WHERE phone IS NOT NULL;
DROP INDEX leads_by_phone;
