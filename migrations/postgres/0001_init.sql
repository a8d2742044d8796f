-- Tenants and their entitlement state. Times are unix seconds; booleans are 0/1.
CREATE TABLE tenants (
    tenant_id          TEXT PRIMARY KEY,
    revision           BIGINT NOT NULL,
    stripe_customer_id TEXT,
    trial_start        BIGINT,
    trial_end          BIGINT,
    archived           BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    last_actor         TEXT,
    last_rationale     TEXT,
    last_origin        TEXT
);
CREATE INDEX tenants_by_customer ON tenants (stripe_customer_id);

CREATE TABLE subscriptions (
    id                   TEXT PRIMARY KEY,
    tenant_id            TEXT NOT NULL,
    customer_id          TEXT,
    status               TEXT NOT NULL,
    plan                 TEXT,
    billing_interval     TEXT,
    seats                BIGINT,
    trial_end            BIGINT,
    current_period_start BIGINT,
    current_period_end   BIGINT,
    cancel_at_period_end BIGINT NOT NULL DEFAULT 0,
    last_event_created   BIGINT NOT NULL,
    last_event_id        TEXT NOT NULL
);
CREATE INDEX subscriptions_by_tenant ON subscriptions (tenant_id);

CREATE TABLE plan_assignments (
    tenant_id   TEXT NOT NULL,
    plan        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    rationale   TEXT NOT NULL,
    assigned_at BIGINT NOT NULL,
    expires_at  BIGINT,
    PRIMARY KEY (tenant_id, plan)
);

-- origin is 'manual' or 'stripe:<subscription>:<item>': one grant per source, so a checkout
-- session and its subscription's events converge on the same row.
CREATE TABLE addon_grants (
    tenant_id       TEXT NOT NULL,
    addon           TEXT NOT NULL,
    origin          TEXT NOT NULL,
    subscription_id TEXT,
    item_id         TEXT,
    quantity        BIGINT NOT NULL,
    actor           TEXT NOT NULL,
    rationale       TEXT NOT NULL,
    granted_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    PRIMARY KEY (tenant_id, addon, origin)
);

CREATE TABLE overrides (
    tenant_id  TEXT NOT NULL,
    feature    TEXT NOT NULL,
    value_json TEXT NOT NULL,
    actor      TEXT NOT NULL,
    rationale  TEXT NOT NULL,
    set_at     BIGINT NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (tenant_id, feature)
);

-- One row per tenant and metered feature: the value of the current period.
CREATE TABLE usage_counters (
    tenant_id    TEXT NOT NULL,
    feature      TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, feature)
);

-- Idempotency records of usage reports, with the original result.
CREATE TABLE usage_reports (
    tenant_id       TEXT NOT NULL,
    feature         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    applied         BIGINT NOT NULL,
    used_after      BIGINT NOT NULL,
    period_start    BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, feature, idempotency_key)
);

CREATE TABLE audit_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    at          BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    rationale   TEXT NOT NULL,
    origin      TEXT NOT NULL,
    before_json TEXT NOT NULL,
    after_json  TEXT NOT NULL,
    revision    BIGINT NOT NULL
);
CREATE INDEX audit_by_tenant ON audit_events (tenant_id, id);
