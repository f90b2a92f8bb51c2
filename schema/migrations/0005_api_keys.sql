-- API keys: bearer credentials scoped to one workspace and one role. Only a SHA-256 digest of
-- the secret is stored (the secret is 256 random bits, so a slow hash adds nothing); the key id
-- is public (it appears in every event's metadata as the actor) and locates the row, and the
-- digest is then compared in constant time. A revoked key keeps its row so that history can
-- still name it.
CREATE TABLE api_keys (
    workspace       text NOT NULL,
    key_id          text NOT NULL,
    name            text NOT NULL,
    role            text NOT NULL,
    secret_sha256   bytea NOT NULL,
    rate_limit      integer CHECK (rate_limit IS NULL OR rate_limit > 0),  -- requests per minute
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    PRIMARY KEY (key_id),
    CONSTRAINT api_keys_workspace_key UNIQUE (workspace, key_id)
);

CREATE INDEX api_keys_by_workspace ON api_keys (workspace, created_at);
