-- Identity claims that found their keys taken, told apart from keys the lead already owns.
-- EventStore.append's plain single-event statement (ledger/store.py) claims keys itself and
-- calls this only when fewer rows went in than it asked for; the raise aborts the statement,
-- so the event is not written either. A volatile function's statement takes a fresh snapshot:
-- a claim of the same key that committed while ours waited on the unique index is seen here.
CREATE FUNCTION ledger_refuse_claims(
    p_workspace text, p_stream_id text, p_claim_kinds text[], p_claim_hashes bytea[]
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_owners text;
BEGIN
    SELECT json_agg(json_build_object('kind', k.kind, 'lead_id', k.lead_id))::text
    INTO v_owners
    FROM identity_keys k
    WHERE k.workspace = p_workspace AND k.lead_id <> p_stream_id
      AND (k.kind, k.key_hash) IN (SELECT * FROM unnest(p_claim_kinds, p_claim_hashes));
    IF v_owners IS NOT NULL THEN
        RAISE EXCEPTION 'identity already belongs to another lead'
            USING ERRCODE = 'LL410', DETAIL = v_owners;
    END IF;
    RETURN false;
END $$;

-- The same check, now shared, in what every PL/pgSQL append writes beside its events.
CREATE OR REPLACE FUNCTION ledger_after_append(
    p_workspace text, p_stream_id text, p_new_key bytea,
    p_release_kinds text[], p_release_hashes bytea[], p_claim_kinds text[], p_claim_hashes bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_claimed integer;
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
            PERFORM ledger_refuse_claims(p_workspace, p_stream_id, p_claim_kinds, p_claim_hashes);
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
