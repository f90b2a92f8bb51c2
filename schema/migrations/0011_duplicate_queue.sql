-- The review queue of likely duplicates: one row per open (lead, other lead) suspicion, with
-- the score and the fields that matched. Resolved by merging (rows go) or dismissing (row goes).
CREATE TABLE duplicate_candidates (
    workspace     text NOT NULL,
    lead_id       text NOT NULL,
    other_id      text NOT NULL,
    score         real NOT NULL,
    matched       text[] NOT NULL,
    exact         boolean NOT NULL,
    suspected_at  timestamptz NOT NULL,
    PRIMARY KEY (workspace, lead_id, other_id)
);
CREATE INDEX duplicate_candidates_queue ON duplicate_candidates (workspace, suspected_at, lead_id, other_id);
CREATE INDEX duplicate_candidates_other ON duplicate_candidates (workspace, other_id);
