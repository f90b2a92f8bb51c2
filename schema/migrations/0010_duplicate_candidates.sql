-- Fuzzy duplicate candidates are found by trigram similarity of the last name (catching
-- "Smith"/"Smyth"), or the same phone, within a workspace; rapidfuzz then scores each pair.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX leads_last_name_trgm ON leads USING gin (lower(last_name) gin_trgm_ops);
CREATE INDEX leads_by_phone ON leads (workspace, phone) WHERE phone IS NOT NULL;
