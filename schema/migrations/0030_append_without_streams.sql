-- Appends without the `streams` table. Its version counter duplicated what the events table
-- already guarantees with its unique (workspace, stream_id, version) key, and cost every append
-- one more row written (an insert for a new stream, an update, so a dead tuple, for every
-- other), about a fifth of an append's server time. Optimistic concurrency now rests on that
-- key alone:
--   * p_expected = 0: the stream's first event takes version 1; if version 1 exists, the insert
--     skips (ON CONFLICT DO NOTHING) and the append is a conflict (or an idempotent repeat);
--   * p_expected = N > 0: version N must exist (one index probe: so a stream never gets a gap)
--     and version N + 1 must not; a concurrent append of N + 1 makes the insert wait on the
--     unique key and then skip;
--   * p_expected IS NULL (any version): a transaction-scoped advisory lock on the stream
--     serializes such appenders, which read the stream's last version after taking it.
-- A skipped insert is reported as the original rows when the first event id is stored already
-- (idempotent repeat), otherwise as SQLSTATE LL409 with the current version as DETAIL.
-- Identity keys and the subject key are written after the events, so a repeat touches neither.

DROP FUNCTION ledger_append_one(text, text, text, integer, uuid, text, smallint, bytea, bytea,
                                jsonb, bytea, text[], bytea[], text[], bytea[]);
DROP FUNCTION ledger_append(text, text, text, integer, uuid[], text[], smallint[], bytea[],
                            bytea[], jsonb, bytea, text[], bytea[], text[], bytea[]);
DROP TABLE streams;

-- The version an append must follow, or NULL when the stream is not at p_expected.
CREATE FUNCTION ledger_base_version(p_workspace text, p_stream_id text, p_expected integer)
RETURNS integer LANGUAGE plpgsql AS $$
BEGIN
    IF p_expected IS NULL THEN
        PERFORM pg_advisory_xact_lock(hashtextextended(p_workspace || '/' || p_stream_id, 7853));
        RETURN (SELECT coalesce(max(version), 0) FROM events
                WHERE workspace = p_workspace AND stream_id = p_stream_id);
    END IF;
    IF p_expected = 0 OR EXISTS (
        SELECT 1 FROM events
        WHERE workspace = p_workspace AND stream_id = p_stream_id AND version = p_expected
    ) THEN
        RETURN p_expected;
    END IF;
    RETURN NULL;
END $$;

-- Raises the conflict of an append that was skipped, unless it repeats a stored one (true).
-- p_own: the events of a partly written batch, left out of the current version.
CREATE FUNCTION ledger_refuse_conflict(
    p_workspace text, p_stream_id text, p_expected integer, p_first_event uuid,
    p_own uuid[] DEFAULT NULL
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_current integer;
BEGIN
    -- A volatile function's statements each see a fresh snapshot: an append of these same
    -- events that won a race and committed is visible here, and reported as ours.
    IF EXISTS (SELECT 1 FROM events WHERE event_id = p_first_event) THEN
        RETURN true;
    END IF;
    SELECT coalesce(max(version), 0) INTO v_current FROM events
        WHERE workspace = p_workspace AND stream_id = p_stream_id
          AND (p_own IS NULL OR event_id <> ALL (p_own));
    RAISE EXCEPTION 'stream % is at version %, expected %', p_stream_id, v_current, p_expected
        USING ERRCODE = 'LL409', DETAIL = v_current::text;
END $$;

-- What an append writes beside its events: the identity keys it moves (SQLSTATE LL410, DETAIL
-- = JSON [{kind, lead_id}], when another lead owns one: a concurrent claim of the same key
-- waits on the unique index, so two creates of one person never both succeed), the subject's
-- new data key, and the relay's wake-up.
CREATE FUNCTION ledger_after_append(
    p_workspace text, p_stream_id text, p_new_key bytea,
    p_release_kinds text[], p_release_hashes bytea[], p_claim_kinds text[], p_claim_hashes bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_claimed integer;
    v_owners text;
BEGIN
    IF p_release_kinds IS NOT NULL THEN
        DELETE FROM identity_keys
        WHERE workspace = p_workspace AND lead_id = p_stream_id
          AND (kind, key_hash) IN (SELECT * FROM unnest(p_release_kinds, p_release_hashes));
    END IF;
    IF p_claim_kinds IS NOT NULL THEN
        WITH claimed AS (
            INSERT INTO identity_keys (workspace, kind, key_hash, lead_id)
            SELECT p_workspace, c.kind, c.key_hash, p_stream_id
            FROM unnest(p_claim_kinds, p_claim_hashes) AS c(kind, key_hash)
            ON CONFLICT (workspace, kind, key_hash) DO NOTHING
            RETURNING 1
        )
        SELECT count(*) INTO v_claimed FROM claimed;
        IF v_claimed < cardinality(p_claim_kinds) THEN
            SELECT json_agg(json_build_object('kind', k.kind, 'lead_id', k.lead_id))::text
            INTO v_owners
            FROM identity_keys k
            WHERE k.workspace = p_workspace AND k.lead_id <> p_stream_id
              AND (k.kind, k.key_hash) IN (SELECT * FROM unnest(p_claim_kinds, p_claim_hashes));
            IF v_owners IS NOT NULL THEN
                RAISE EXCEPTION 'identity already belongs to another lead'
                    USING ERRCODE = 'LL410', DETAIL = v_owners;
            END IF;
        END IF;
    END IF;
    IF p_new_key IS NOT NULL THEN
        INSERT INTO subject_keys (workspace, subject_id, wrapped_key)
        VALUES (p_workspace, p_stream_id, p_new_key)
        ON CONFLICT DO NOTHING;
    END IF;
    -- NOTIFY takes a cluster-wide lock at commit that serializes every notifying transaction;
    -- one notification per burst is enough to wake the relay (which then polls briefly, see
    -- ledger/relay.py), so only the appender that wins this try-lock notifies.
    IF pg_try_advisory_xact_lock(7853, 1) THEN
        PERFORM pg_notify('leadledger_events', '');
    END IF;
END $$;

CREATE FUNCTION ledger_append(
    p_workspace text, p_stream_id text, p_expected integer,
    p_event_ids uuid[], p_types text[], p_schema_versions smallint[],
    p_data bytea[], p_personal bytea[], p_metadata jsonb, p_new_key bytea,
    p_release_kinds text[] DEFAULT NULL, p_release_hashes bytea[] DEFAULT NULL,
    p_claim_kinds text[] DEFAULT NULL, p_claim_hashes bytea[] DEFAULT NULL
) RETURNS TABLE (event_position bigint, event_transaction_id bigint, event_version integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_base integer := ledger_base_version(p_workspace, p_stream_id, p_expected);
    v_written integer := 0;
BEGIN
    IF v_base IS NOT NULL THEN
        RETURN QUERY
        INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                            data, personal, metadata)
        SELECT u.id, p_workspace, p_stream_id, v_base + u.ord::integer, u.t, u.sv, u.d, u.p,
               p_metadata
        FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_personal)
             WITH ORDINALITY AS u(id, t, sv, d, p, ord)
        ORDER BY u.ord
        ON CONFLICT DO NOTHING
        RETURNING position, transaction_id, version;
        GET DIAGNOSTICS v_written = ROW_COUNT;
    END IF;
    IF v_written < cardinality(p_event_ids) THEN
        IF v_written > 0 THEN
            -- A partly skipped batch is a conflict: the exception undoes the rows it wrote.
            PERFORM ledger_refuse_conflict(p_workspace, p_stream_id, p_expected, NULL,
                                           p_event_ids);
        END IF;
        IF ledger_refuse_conflict(p_workspace, p_stream_id, p_expected, p_event_ids[1]) THEN
            RETURN QUERY SELECT e.position, e.transaction_id, e.version FROM events e
                WHERE e.event_id = ANY (p_event_ids) ORDER BY e.position;
            RETURN;
        END IF;
    END IF;
    PERFORM ledger_after_append(p_workspace, p_stream_id, p_new_key, p_release_kinds,
                                p_release_hashes, p_claim_kinds, p_claim_hashes);
END $$;

-- The same for one event, with scalar parameters: most appends carry one event, and adapting
-- one-element arrays costs the client more CPU than the rest of the call. A new stream's or the
-- expected version's check is inline (one index probe); inlining what follows the insert too
-- made no difference measurable with pgbench (paired medians within 5 %, either way).
CREATE FUNCTION ledger_append_one(
    p_workspace text, p_stream_id text, p_expected integer,
    p_event_id uuid, p_type text, p_schema_version smallint, p_data bytea, p_personal bytea,
    p_metadata jsonb, p_new_key bytea,
    p_release_kinds text[] DEFAULT NULL, p_release_hashes bytea[] DEFAULT NULL,
    p_claim_kinds text[] DEFAULT NULL, p_claim_hashes bytea[] DEFAULT NULL
) RETURNS TABLE (event_position bigint, event_transaction_id bigint, event_version integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_base integer := p_expected;
    v_written integer := 0;
BEGIN
    IF p_expected IS NULL OR (p_expected > 0 AND NOT EXISTS (
        SELECT 1 FROM events
        WHERE workspace = p_workspace AND stream_id = p_stream_id AND version = p_expected
    )) THEN
        v_base := ledger_base_version(p_workspace, p_stream_id, p_expected);
    END IF;
    IF v_base IS NOT NULL THEN
        RETURN QUERY
        INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                            data, personal, metadata)
        VALUES (p_event_id, p_workspace, p_stream_id, v_base + 1, p_type, p_schema_version,
                p_data, p_personal, p_metadata)
        ON CONFLICT DO NOTHING
        RETURNING position, transaction_id, version;
        GET DIAGNOSTICS v_written = ROW_COUNT;
    END IF;
    IF v_written = 0 THEN
        -- (Nested: SQL does not promise to evaluate AND's operands in order.)
        IF ledger_refuse_conflict(p_workspace, p_stream_id, p_expected, p_event_id) THEN
            RETURN QUERY SELECT e.position, e.transaction_id, e.version FROM events e
                WHERE e.event_id = p_event_id;
            RETURN;
        END IF;
    END IF;
    PERFORM ledger_after_append(p_workspace, p_stream_id, p_new_key, p_release_kinds,
                                p_release_hashes, p_claim_kinds, p_claim_hashes);
END $$;
