-- The lead read model follows enrichment and routing: enriched facts with their provenance
-- ({name: {value, provider, fetched_at, confidence}}), the team or queue a lead was routed to
-- and the rule that decided, and the ids of its open follow-up tasks.
ALTER TABLE leads
    ADD COLUMN enrichment   jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN team         text,
    ADD COLUMN queue        text,
    ADD COLUMN assigned_by  text,
    ADD COLUMN open_tasks   text[] NOT NULL DEFAULT '{}';

CREATE INDEX leads_by_queue ON leads (workspace, queue, created_at, lead_id) WHERE queue IS NOT NULL;
