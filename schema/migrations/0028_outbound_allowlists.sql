-- Networks a workspace lets the processing plane call although they are not public (an
-- internal CRM, a test receiver on loopback). Everything else non-public is refused
-- (processors/outbound.py).
CREATE TABLE outbound_allowlists (
    workspace   text PRIMARY KEY,
    networks    text[] NOT NULL DEFAULT '{}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
