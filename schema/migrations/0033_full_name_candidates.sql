-- Fuzzy duplicate candidates are found by the trigram similarity of the whole name, first and
-- last (projections/candidates.py), instead of the last name's alone: swapped first and last
-- names are found (a trigram set has no word order), and a workspace's common last names no
-- longer flood the candidate list, which is now ordered by similarity before its limit.
--
-- New entries of a GIN index wait in its pending list until a vacuum or until the list
-- outgrows gin_pending_list_limit (4 MB by default). While the list is large the planner
-- prices the index scan as a read of the whole list and scans the workspace's leads instead
-- (14 ms per create at 20,000 leads, against 0.5 ms through the index). A 64 kB list is
-- merged into the index often, in small steps, and keeps the index the cheap path.
CREATE INDEX leads_full_name_trgm ON leads
    USING gin ((lower(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))) gin_trgm_ops)
    WITH (gin_pending_list_limit = 64);
DROP INDEX leads_last_name_trgm;

-- The candidate query, as a function because it needs two settings for itself alone:
--   * pg_trgm.similarity_threshold, which the `%` operator and the index's own pre-filter read
--     (the caller passes ledger.fuzzy.NAME_SIMILARITY; the SET clause restores the session's
--     value when the function returns);
--   * enable_seqscan off, with `workspace || ''` rather than `workspace =` at the top: the
--     workspace must never be the plan's way in. Statistics lag a workspace that grows fast
--     (an import, a new tenant, a database minutes old), and a planner that believes the
--     workspace holds a few dozen leads walks all of them and computes every name's
--     similarity (6 to 12 ms at 2,000 to 3,000 leads) instead of asking the trigram index
--     (0.4 ms).
CREATE FUNCTION lead_candidates(
    p_workspace text, p_lead_id text, p_name text, p_phone text, p_similarity real,
    p_limit integer
) RETURNS TABLE (
    lead_id text, first_name text, last_name text, email text, phone text, company text
) LANGUAGE plpgsql
SET enable_seqscan = off
SET pg_trgm.similarity_threshold = 0.3
AS $$
BEGIN
    PERFORM set_config('pg_trgm.similarity_threshold', p_similarity::text, true);
    RETURN QUERY
    SELECT l.lead_id, l.first_name, l.last_name, l.email, l.phone, l.company
    FROM leads l
    WHERE l.workspace || '' = p_workspace AND l.status = 'active' AND l.lead_id <> p_lead_id
      AND ((lower(coalesce(l.first_name, '') || ' ' || coalesce(l.last_name, ''))) % p_name
           OR (l.workspace = p_workspace AND l.phone = p_phone))
    ORDER BY similarity(lower(coalesce(l.first_name, '') || ' ' || coalesce(l.last_name, '')),
                        p_name) DESC, l.lead_id
    LIMIT p_limit;
END
$$;
