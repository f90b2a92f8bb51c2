-- The lead read model follows the lead's folded state: the new quality fields, the result of
-- the email check (and quarantine), suspected duplicates and the leads merged into this one.
-- Existing rows get the defaults; `leadledger replay lead` fills them from the ledger.
ALTER TABLE leads
    ADD COLUMN industry              text,
    ADD COLUMN seniority             text,
    ADD COLUMN department            text,
    ADD COLUMN email_status          text,              -- valid, risky, invalid; NULL unchecked
    ADD COLUMN email_reasons         text[] NOT NULL DEFAULT '{}',
    ADD COLUMN quarantined           boolean NOT NULL DEFAULT false,
    ADD COLUMN suspected_duplicates  text[] NOT NULL DEFAULT '{}',
    ADD COLUMN merged_from           text[] NOT NULL DEFAULT '{}';

-- The quarantine is a work list: invalid emails waiting to be fixed, per workspace.
CREATE INDEX leads_quarantined ON leads (workspace, created_at, lead_id) WHERE quarantined;
