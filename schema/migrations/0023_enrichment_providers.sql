-- External (HTTP) enrichment providers per workspace, and the workspace's enrichment settings.
-- `config` is the provider's non-secret configuration (URL template, field mapping, timeout,
-- rate limit, retries, circuit breaker); the auth header's value is stored only encrypted:
-- `secret` is AES-GCM ciphertext under a data key of its own, `secret_key` that key wrapped by
-- the master key (ledger/crypto.py). Neither is ever returned by the API.
CREATE TABLE enrichment_providers (
    workspace   text        NOT NULL,
    name        text        NOT NULL,
    config      jsonb       NOT NULL,
    secret      bytea,
    secret_key  bytea,
    enabled     boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text,
    PRIMARY KEY (workspace, name),
    CHECK ((secret IS NULL) = (secret_key IS NULL))
);

-- `overwrite`: enrichment may replace values a person entered (default: it only fills empty
-- fields).
CREATE TABLE enrichment_settings (
    workspace   text        PRIMARY KEY,
    overwrite   boolean     NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);
