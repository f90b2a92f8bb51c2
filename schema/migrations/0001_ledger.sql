-- The ledger: an append-only log of events, the per-stream version counters that guard
-- optimistic concurrency, and each subject's wrapped data key (crypto-shredding).

CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The writing transaction's id. Global readers order by (transaction_id, position) and read
    -- only below the oldest running transaction, so an event that commits late is never skipped.
    transaction_id  bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id        uuid NOT NULL,
    workspace       text NOT NULL,
    stream_id       text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    event_type      text NOT NULL,
    schema_version  smallint NOT NULL,
    data            bytea NOT NULL,   -- msgspec JSON of the event without its personal fields
    personal        bytea,            -- AES-GCM ciphertext of the personal fields, under the subject's key
    metadata        jsonb NOT NULL,   -- who, through what, why; never personal data
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (workspace, stream_id, version)
);

CREATE INDEX events_global_order ON events (transaction_id, position);
CREATE INDEX events_workspace_order ON events (workspace, transaction_id, position);

CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on events is refused', TG_OP
        USING ERRCODE = 'LL403';
END $$;

CREATE TRIGGER events_append_only_rows BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

CREATE TABLE streams (
    workspace    text NOT NULL,
    stream_id    text NOT NULL,
    stream_type  text NOT NULL,
    version      integer NOT NULL,
    PRIMARY KEY (workspace, stream_id)
);

CREATE TABLE subject_keys (
    workspace    text NOT NULL,
    subject_id   text NOT NULL,
    wrapped_key  bytea NOT NULL,      -- the subject's data key, wrapped by the master key
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, subject_id)
);

-- Appends events to one stream in one statement (one round trip):
--   * idempotent: if the first event id is already stored, the original rows are reported;
--   * optimistic: p_expected = 0 means "the stream must not exist", NULL means "any version",
--     otherwise the stream must be at exactly p_expected. A conflict raises SQLSTATE LL409 with
--     the stream's current version as DETAIL;
--   * a new subject key (the lead's data key) is stored in the same transaction.
CREATE FUNCTION ledger_append(
    p_workspace text, p_stream_id text, p_stream_type text, p_expected integer,
    p_event_ids uuid[], p_types text[], p_schema_versions smallint[],
    p_data bytea[], p_personal bytea[], p_metadata jsonb, p_new_key bytea
) RETURNS TABLE (event_position bigint, event_transaction_id bigint, event_version integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_event_ids);
    v_first integer;
    v_current integer;
BEGIN
    IF EXISTS (SELECT 1 FROM events WHERE event_id = p_event_ids[1]) THEN
        RETURN QUERY SELECT e.position, e.transaction_id, e.version FROM events e
            WHERE e.event_id = ANY (p_event_ids) ORDER BY e.position;
        RETURN;
    END IF;

    IF p_expected = 0 THEN
        INSERT INTO streams (workspace, stream_id, stream_type, version)
        VALUES (p_workspace, p_stream_id, p_stream_type, n)
        ON CONFLICT DO NOTHING;
        IF FOUND THEN
            v_first := 1;
        END IF;
    ELSIF p_expected IS NULL THEN
        INSERT INTO streams AS s (workspace, stream_id, stream_type, version)
        VALUES (p_workspace, p_stream_id, p_stream_type, n)
        ON CONFLICT (workspace, stream_id) DO UPDATE SET version = s.version + n
        RETURNING s.version - n + 1 INTO v_first;
    ELSE
        UPDATE streams SET version = version + n
        WHERE workspace = p_workspace AND stream_id = p_stream_id AND version = p_expected
        RETURNING version - n + 1 INTO v_first;
    END IF;

    IF v_first IS NULL THEN
        -- Each statement of this volatile function sees a fresh snapshot, so a concurrent append
        -- of these same events that won the race is visible here and reported as ours.
        IF EXISTS (SELECT 1 FROM events WHERE event_id = p_event_ids[1]) THEN
            RETURN QUERY SELECT e.position, e.transaction_id, e.version FROM events e
                WHERE e.event_id = ANY (p_event_ids) ORDER BY e.position;
            RETURN;
        END IF;
        SELECT version INTO v_current FROM streams
            WHERE workspace = p_workspace AND stream_id = p_stream_id;
        RAISE EXCEPTION 'stream % is at version %, expected %',
                p_stream_id, coalesce(v_current, 0), p_expected
            USING ERRCODE = 'LL409', DETAIL = coalesce(v_current, 0)::text;
    END IF;

    IF p_new_key IS NOT NULL THEN
        INSERT INTO subject_keys (workspace, subject_id, wrapped_key)
        VALUES (p_workspace, p_stream_id, p_new_key)
        ON CONFLICT DO NOTHING;
    END IF;

    RETURN QUERY
    INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                        data, personal, metadata)
    SELECT u.id, p_workspace, p_stream_id, v_first + u.ord::integer - 1, u.t, u.sv, u.d, u.p,
           p_metadata
    FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_personal)
         WITH ORDINALITY AS u(id, t, sv, d, p, ord)
    ORDER BY u.ord
    RETURNING position, transaction_id, version;

    PERFORM pg_notify('leadledger_events', '');
END $$;
