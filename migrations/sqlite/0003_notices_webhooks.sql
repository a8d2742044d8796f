-- Lifecycle notices and outbound webhooks (issue 12); see src/outbox.rs.
-- next_notice_at: the instant of the tenant's next timed threshold crossing (NULL: none), kept by
-- every save, so due work is a range query on this index. notices_through: crossings up to this
-- instant have been emitted.
ALTER TABLE tenants ADD COLUMN next_notice_at BIGINT;
ALTER TABLE tenants ADD COLUMN notices_through BIGINT;
CREATE INDEX tenants_by_next_notice ON tenants (next_notice_at);
-- Tenants stored before this migration (notices_through NULL) are scheduled at start.
CREATE INDEX tenants_by_notices_through ON tenants (notices_through);

-- The outbox: every tenant change and lifecycle notice, written in the transaction that made it.
-- dedup_key ('<threshold>:<instant>' for a notice, 'r<revision>' for a change) makes a second
-- insert of the same crossing a no-op: exactly once.
CREATE TABLE outbox_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    at         BIGINT NOT NULL,
    revision   BIGINT NOT NULL,
    dedup_key  TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, dedup_key)
);

-- One row per (endpoint, event): status pending | delivered | failed. Times in unix milliseconds
-- of the host clock (retries are about the network, not the tenant's timeline).
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint        TEXT NOT NULL,
    event_id        BIGINT NOT NULL,
    tenant_id       TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    give_up_ms      BIGINT NOT NULL,
    lease_until_ms  BIGINT,
    created_ms      BIGINT NOT NULL,
    UNIQUE (endpoint, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE INDEX webhook_deliveries_in_order ON webhook_deliveries (endpoint, tenant_id, event_id);

-- The delivery log: one row per attempt, with its outcome.
CREATE TABLE webhook_attempts (
    delivery_id BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    at_ms       BIGINT NOT NULL,
    status_code BIGINT,
    error       TEXT,
    duration_ms BIGINT NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
