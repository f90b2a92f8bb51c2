-- One row per (endpoint, ledger event) the endpoint subscribes to, written idempotently by the
-- webhooks reactor (UNIQUE: a re-run inserts nothing), sent by the webhook sender. No payload is
-- stored: it is built from the ledger when sent, so an erased lead's data never leaves.
-- `next_attempt_at` doubles as the in-flight lease: a sender claims a row by pushing it past the
-- request's timeout (`claimed_by`), so a sender killed mid-request lets it fall due again.
CREATE TABLE webhook_deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace         text NOT NULL,
    endpoint_id       text NOT NULL,
    webhook_id        text NOT NULL,
    event_id          text NOT NULL,
    event_type        text NOT NULL,                    -- the webhook type, e.g. lead.created
    lead_id           text NOT NULL,
    lead_version      integer NOT NULL,
    transaction_id    bigint NOT NULL,
    position          bigint NOT NULL,
    event_at          timestamptz NOT NULL,             -- when the ledger recorded the event
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,       -- in the current round (redelivery: 0)
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    claimed_by        uuid,
    last_status_code  integer,
    last_error        text,
    last_attempt_at   timestamptz,
    delivered_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (workspace, endpoint_id, event_id),
    FOREIGN KEY (workspace, endpoint_id) REFERENCES webhook_endpoints (workspace, id)
        ON DELETE CASCADE
);

-- The sender's claim: due pending rows, oldest due first.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
-- Order per lead: a pending row is eligible only if no earlier pending row of its lead exists.
CREATE INDEX webhook_deliveries_lead_order
    ON webhook_deliveries (workspace, endpoint_id, lead_id, lead_version) WHERE status = 'pending';
-- The delivery log, newest first, and redelivery ranges.
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (workspace, endpoint_id, id);

-- Every attempt: what the receiver answered (or why nothing was sent) and how long it took.
CREATE TABLE webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace    text NOT NULL,
    delivery_id  bigint NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    latency_ms   double precision,
    error        text,
    outcome      text NOT NULL              -- delivered, retry, failed, disabled
);

CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, id);
