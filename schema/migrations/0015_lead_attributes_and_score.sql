-- The lead read model follows the lead's new state: custom attribute values (personal ones
-- included: read models hold plaintext, erasure deletes the row), activity counters, and the
-- score the scoring processor last recorded (model `<id>@<version>`, band, and the digest that
-- tells an unchanged decomposition). `leadledger replay lead` fills them for existing rows.
ALTER TABLE leads
    ADD COLUMN attributes        jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN activity_count    integer NOT NULL DEFAULT 0,
    ADD COLUMN last_activity_at  timestamptz,
    ADD COLUMN score             double precision,
    ADD COLUMN score_band        text,
    ADD COLUMN score_model       text,
    ADD COLUMN score_digest      text;

-- The leads list sorts and filters by score within a workspace (cursor: score, lead_id).
CREATE INDEX leads_by_score ON leads (workspace, score, lead_id);
