-- Scoring models and the score-history read model.
--
-- scoring_models keeps every version of every model of a workspace. A version is immutable:
-- saving a model again makes version + 1, and the trigger below refuses any change to a stored
-- version's spec (and any DELETE), so the model a LeadScored event names is always the model
-- that computed it. Only the lifecycle moves: draft -> active -> retired (and back to active,
-- to roll back). At most one version per workspace is active (a partial unique index).
CREATE TABLE scoring_models (
    workspace     text NOT NULL,
    model_id      text NOT NULL,
    version       integer NOT NULL CHECK (version >= 1),
    status        text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'retired')),
    spec          jsonb NOT NULL,
    -- The workspace's custom attribute definitions the rules were checked against when saved:
    -- the version compiles the same way forever, whatever later happens to the definitions.
    attributes    jsonb NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    reason        text,
    activated_at  timestamptz,
    activated_by  text,
    PRIMARY KEY (workspace, model_id, version)
);

CREATE UNIQUE INDEX scoring_models_one_active ON scoring_models (workspace)
    WHERE status = 'active';

CREATE FUNCTION scoring_models_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'scoring model versions are never deleted' USING ERRCODE = 'LL423';
    END IF;
    IF NEW.workspace <> OLD.workspace OR NEW.model_id <> OLD.model_id
       OR NEW.version <> OLD.version OR NEW.spec <> OLD.spec OR NEW.attributes <> OLD.attributes
       OR NEW.created_at <> OLD.created_at OR NEW.created_by <> OLD.created_by THEN
        RAISE EXCEPTION 'scoring model % version % is immutable', OLD.model_id, OLD.version
            USING ERRCODE = 'LL423';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER scoring_models_immutable BEFORE UPDATE OR DELETE ON scoring_models
    FOR EACH ROW EXECUTE FUNCTION scoring_models_immutable();

-- Every score a lead had (one row per LeadScored event, keyed by the lead's stream version):
-- the total, band, model, each rule's contribution, the values the rules saw (plaintext: read
-- models may hold personal data; erasure deletes the lead's rows) and what caused it.
-- Projected by projections/score_history.py, rebuilt by `leadledger replay score-history`.
CREATE TABLE score_history (
    workspace       text NOT NULL,
    lead_id         text NOT NULL,
    version         integer NOT NULL,
    score           double precision NOT NULL,
    band            text,
    model_id        text NOT NULL,
    model_version   integer NOT NULL,
    contributions   jsonb NOT NULL,
    observed        jsonb NOT NULL,
    cause_event_id  text,
    cause_type      text,
    event_id        text NOT NULL,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (workspace, lead_id, version)
);
