-- Where each reader of the global log has got to: the relay and every projection.
-- These rows describe the machinery, not any tenant's data, so they carry no workspace.
CREATE TABLE checkpoints (
    name            text PRIMARY KEY,
    transaction_id  bigint NOT NULL DEFAULT 0,
    position        bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
