-- Events a processor (reactor) gave up on after its bounded retries: parked here, per workspace,
-- so the processor moves on and an operator can look, retry or discard. A retry request is a
-- status change; the processor that owns the row picks it up and runs it again.
CREATE TABLE dead_letters (
    workspace       text NOT NULL,
    reactor         text NOT NULL,
    event_id        text NOT NULL,
    stream_id       text NOT NULL,
    event_type      text NOT NULL,
    transaction_id  bigint NOT NULL,
    position        bigint NOT NULL,
    error           text NOT NULL,
    attempts        integer NOT NULL,
    status          text NOT NULL DEFAULT 'parked',   -- parked, retrying, resolved, discarded
    parked_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, reactor, event_id)
);

CREATE INDEX dead_letters_by_status ON dead_letters (reactor, status, parked_at);
CREATE INDEX dead_letters_by_workspace ON dead_letters (workspace, parked_at, event_id);
