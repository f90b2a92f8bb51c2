-- Requests sent with an Idempotency-Key (draft-ietf-httpapi-idempotency-key), scoped to the API
-- key that sent them, kept 24 hours.
--
-- A request first claims its row ('in_flight', with a short lease) in its own transaction, so a
-- concurrent retry sees the claim and is told 409. The claim carries a random request_uuid from
-- which the request derives its lead, note and event ids: if the server dies mid-request, the
-- lease lapses, a retry takes the claim over with the same request_uuid, and its appends carry
-- the same event ids, which the ledger reports as already written instead of writing twice.
-- A finished request stores its response ('done'); a retry then replays it.
CREATE TABLE idempotency_keys (
    workspace        text NOT NULL,
    key_id           text NOT NULL,
    idempotency_key  text NOT NULL,
    fingerprint      bytea NOT NULL,          -- SHA-256 of method, path and canonical body
    request_uuid     uuid NOT NULL,
    state            text NOT NULL CHECK (state IN ('in_flight', 'done')),
    locked_until     timestamptz,             -- the in-flight claim's lease
    status           smallint,                -- the stored response, once done
    headers          jsonb,
    body             bytea,
    created_at       timestamptz NOT NULL DEFAULT now(),
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (workspace, key_id, idempotency_key)
);

CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
