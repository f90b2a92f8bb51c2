-- Every lead's data-quality score in the lead read model, recomputed by the projection on every
-- change of the lead (ledger/quality.py). The projection knows no workspace settings: these are
-- scored against the default required fields and the built-in vocabularies, with freshness 1.0;
-- queries (GET /v1/quality, ?quality_below=) rescore them against the workspace's settings and
-- the current time. NULL until the lead is next projected: `leadledger replay lead` fills all.
ALTER TABLE leads
    ADD COLUMN quality_score         integer,
    ADD COLUMN quality_completeness  double precision,
    ADD COLUMN quality_validity      double precision,
    ADD COLUMN quality_consistency   double precision,
    ADD COLUMN quality_problems      text[];
