-- Per-workspace data-quality configuration: controlled vocabularies (overriding the built-in
-- list of the same name) and the ingestion policy. Each row records who changed it and why.
CREATE TABLE vocabulary_terms (
    workspace   text NOT NULL,
    vocabulary  text NOT NULL,
    code        text NOT NULL,
    label       text,
    synonyms    text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text NOT NULL,
    reason      text,
    PRIMARY KEY (workspace, vocabulary, code)
);

CREATE TABLE quality_settings (
    workspace        text PRIMARY KEY,
    exact_policy     text NOT NULL DEFAULT 'reject' CHECK (exact_policy IN ('reject', 'merge', 'flag')),
    fuzzy_policy     text NOT NULL DEFAULT 'flag' CHECK (fuzzy_policy IN ('reject', 'merge', 'flag')),
    fuzzy_threshold  real NOT NULL DEFAULT 88 CHECK (fuzzy_threshold BETWEEN 50 AND 100),
    on_unknown       text NOT NULL DEFAULT 'reject' CHECK (on_unknown IN ('reject', 'flag')),
    required_fields  text[] NOT NULL DEFAULT '{email,first_name,last_name,company,country}',
    updated_at       timestamptz NOT NULL DEFAULT now(),
    updated_by       text NOT NULL,
    reason           text
);
