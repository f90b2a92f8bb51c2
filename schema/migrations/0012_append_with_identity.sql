-- Appends coalesce their NOTIFYs, and claim and release the lead's identity keys in the same statement, so a create with
-- its identity is one round trip and one transaction (see 0004 and ledger/identity.py).
DROP FUNCTION ledger_append(text, text, text, integer, uuid[], text[], smallint[], bytea[],
                            bytea[], jsonb, bytea);

CREATE FUNCTION ledger_append(
    p_workspace text, p_stream_id text, p_stream_type text, p_expected integer,
    p_event_ids uuid[], p_types text[], p_schema_versions smallint[],
    p_data bytea[], p_personal bytea[], p_metadata jsonb, p_new_key bytea,
    p_release_kinds text[] DEFAULT NULL, p_release_hashes bytea[] DEFAULT NULL,
    p_claim_kinds text[] DEFAULT NULL, p_claim_hashes bytea[] DEFAULT NULL
) RETURNS TABLE (event_position bigint, event_transaction_id bigint, event_version integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n integer := cardinality(p_event_ids);
    v_first integer;
    v_current integer;
    v_claimed integer;
    v_owners text;
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

    -- The identity index moves with the lead in this same transaction: keys the lead no longer
    -- has are released, new ones claimed. A key another lead owns aborts the whole append
    -- (SQLSTATE LL410, DETAIL = JSON [{kind, lead_id}]). A concurrent claim of the same key
    -- waits on the unique index, so two creates of one person never both succeed.
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

    RETURN QUERY
    INSERT INTO events (event_id, workspace, stream_id, version, event_type, schema_version,
                        data, personal, metadata)
    SELECT u.id, p_workspace, p_stream_id, v_first + u.ord::integer - 1, u.t, u.sv, u.d, u.p,
           p_metadata
    FROM unnest(p_event_ids, p_types, p_schema_versions, p_data, p_personal)
         WITH ORDINALITY AS u(id, t, sv, d, p, ord)
    ORDER BY u.ord
    RETURNING position, transaction_id, version;

    -- NOTIFY takes a cluster-wide lock at commit that serializes every notifying transaction;
    -- at 16 writers it costs most of the throughput. One notification per burst is enough to
    -- wake the relay (which then polls briefly, see ledger/relay.py), so only the appender that
    -- wins this transaction-scoped try-lock notifies; the others commit without it.
    IF pg_try_advisory_xact_lock(7853, 1) THEN
        PERFORM pg_notify('leadledger_events', '');
    END IF;
END $$;
