-- Webhook endpoints (Standard Webhooks): where a workspace wants its lead events delivered.
-- The signing secrets are encrypted at rest with a data key of the endpoint's own, wrapped by
-- the master key (ledger/crypto.py): `secret_key` is that wrapped key; `secret` the current
-- secret's ciphertext; `previous_secret` the rotated-out one, still signing until
-- `previous_expires_at`. A secret is shown once, on create or rotate, and never logged.
CREATE TABLE webhook_endpoints (
    workspace            text NOT NULL,
    id                   text NOT NULL,
    url                  text NOT NULL,
    description          text NOT NULL DEFAULT '',
    event_types          text[] NOT NULL DEFAULT '{}',  -- empty: every event type
    filter               text,                          -- CEL over the payload; NULL: all
    secret_key           bytea NOT NULL,
    secret               bytea NOT NULL,
    previous_secret      bytea,
    previous_expires_at  timestamptz,
    enabled              boolean NOT NULL DEFAULT true,
    disabled_reason      text,
    created_by           text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, id)
);

-- The webhooks reactor reads a workspace's enabled endpoints for every event.
CREATE INDEX webhook_endpoints_enabled ON webhook_endpoints (workspace) WHERE enabled;
