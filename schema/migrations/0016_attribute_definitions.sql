-- Custom attribute definitions, every version of each: a change inserts a new version and never
-- rewrites an old one (the database refuses UPDATE), so what a value was validated against stays
-- known. The current definition of a name is its highest version; `retired` ends it (values stay
-- in the ledger and the read model, writes no longer accept them).
CREATE TABLE attribute_definitions (
    workspace   text NOT NULL,
    name        text NOT NULL,
    version     integer NOT NULL CHECK (version > 0),
    definition  jsonb NOT NULL,
    retired     boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL,
    reason      text,
    PRIMARY KEY (workspace, name, version)
);

CREATE FUNCTION attribute_definitions_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'attribute definitions are versioned: insert a new version instead'
        USING ERRCODE = 'LL403';
END $$;

CREATE TRIGGER attribute_definitions_versions_only BEFORE UPDATE ON attribute_definitions
    FOR EACH ROW EXECUTE FUNCTION attribute_definitions_refuse_update();
