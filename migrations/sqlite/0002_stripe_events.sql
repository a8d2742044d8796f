-- Every verified Stripe delivery, raw, with its outcome. The id makes deliveries idempotent.
-- status: applied | ignored | stale | pending_tenant | failed
CREATE TABLE stripe_events (
    id          TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    created     BIGINT NOT NULL,
    livemode    BIGINT NOT NULL,
    customer_id TEXT,
    tenant_id   TEXT,
    status      TEXT NOT NULL,
    error       TEXT,
    payload     TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    applied_at  BIGINT
);
CREATE INDEX stripe_events_by_status ON stripe_events (status, customer_id);
CREATE INDEX stripe_events_by_tenant ON stripe_events (tenant_id, created);
