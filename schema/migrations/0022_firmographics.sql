-- A workspace's local firmographics table: company facts by web domain, loaded from CSV
-- (POST /v1/enrichment/firmographics, `leadledger firmographics load`) and read by the built-in
-- "firmographics" enrichment provider. A load upserts by domain and stamps `loaded_at`, so a
-- re-load keeps the table current and says when each row was last confirmed.
CREATE TABLE firmographics (
    workspace       text        NOT NULL,
    domain          text        NOT NULL,
    company_name    text,
    industry        text,
    employee_range  text,
    revenue_range   text,
    country         text,
    technologies    text[]      NOT NULL DEFAULT '{}',
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    loaded_by       text,
    PRIMARY KEY (workspace, domain),
    CHECK (domain = lower(domain) AND domain <> '')
);
