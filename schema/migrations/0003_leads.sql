-- The lead read model: one row per lead with its current fields (plaintext is fine in read
-- models; erasure deletes the row). Rebuilt from the ledger by `leadledger replay lead`.
CREATE TABLE leads (
    workspace    text NOT NULL,
    lead_id      text NOT NULL,
    version      integer NOT NULL,
    status       text NOT NULL,            -- active, archived, merged
    first_name   text,
    last_name    text,
    email        text,
    phone        text,
    company      text,
    title        text,
    website      text,
    country      text,
    city         text,
    address      text,
    ip_address   text,
    source       text,
    external_id  text,
    stage        text NOT NULL,
    owner        text,
    tags         text[] NOT NULL DEFAULT '{}',
    notes_count  integer NOT NULL DEFAULT 0,
    merged_into  text,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace, lead_id)
);

-- Cursor pagination sorts by (created_at, lead_id) or (updated_at, lead_id) within a workspace.
CREATE INDEX leads_by_created ON leads (workspace, created_at, lead_id);
CREATE INDEX leads_by_updated ON leads (workspace, updated_at, lead_id);
CREATE INDEX leads_by_stage ON leads (workspace, stage, created_at, lead_id);
CREATE INDEX leads_by_owner ON leads (workspace, owner, created_at, lead_id);
CREATE INDEX leads_by_tags ON leads USING gin (tags);
CREATE INDEX leads_by_email ON leads (workspace, lower(email));
