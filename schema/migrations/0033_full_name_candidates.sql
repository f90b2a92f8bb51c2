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
