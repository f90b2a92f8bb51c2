-- A single-event append with scalar parameters: most appends carry one event, and adapting
-- eight one-element arrays costs the client more CPU than the rest of the call (measured: about
-- 80 µs of psycopg array adaptation per append). Same semantics as ledger_append, which it calls.
CREATE FUNCTION ledger_append_one(
    p_workspace text, p_stream_id text, p_stream_type text, p_expected integer,
    p_event_id uuid, p_type text, p_schema_version smallint, p_data bytea, p_personal bytea,
    p_metadata jsonb, p_new_key bytea,
    p_release_kinds text[] DEFAULT NULL, p_release_hashes bytea[] DEFAULT NULL,
    p_claim_kinds text[] DEFAULT NULL, p_claim_hashes bytea[] DEFAULT NULL
) RETURNS TABLE (event_position bigint, event_transaction_id bigint, event_version integer)
LANGUAGE sql AS $$
    SELECT * FROM ledger_append(
        p_workspace, p_stream_id, p_stream_type, p_expected, ARRAY[p_event_id], ARRAY[p_type],
        ARRAY[p_schema_version], ARRAY[p_data], ARRAY[p_personal], p_metadata, p_new_key,
        p_release_kinds, p_release_hashes, p_claim_kinds, p_claim_hashes)
$$;
