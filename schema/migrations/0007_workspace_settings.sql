-- Per-workspace policy of the HTTP API. A workspace without a row has the defaults.
CREATE TABLE workspace_settings (
    workspace         text PRIMARY KEY,
    require_if_match  boolean NOT NULL DEFAULT false,  -- PATCH without If-Match is 428
    updated_at        timestamptz NOT NULL DEFAULT now()
);
