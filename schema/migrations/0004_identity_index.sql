-- The identity index: exact identity keys (canonical email, E.164 phone, external id per
-- source) reserved in the same transaction as the lead's append, under a unique constraint, so
-- two concurrent creates of the same person can never both succeed as new leads. Keys are
-- keyed hashes (HMAC-SHA256 under a key derived from the master key), never plaintext.
CREATE TABLE identity_keys (
    workspace   text NOT NULL,
    kind        text NOT NULL,          -- email, phone, external
    key_hash    bytea NOT NULL,
    lead_id     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, kind, key_hash)
);
CREATE INDEX identity_keys_by_lead ON identity_keys (workspace, lead_id);
