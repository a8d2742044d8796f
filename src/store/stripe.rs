//! The Stripe event log (SPEC §7) and the transaction that applies an event: the event record,
//! the tenant's changed rows, the audit event and the revision bump commit together. What a
//! fact does to a tenant is [`crate::billing`]'s; here we find the tenant, lock it, load it,
//! call the core and save the result. [`StripeLog`] for [`SqlStore`].

use async_trait::async_trait;
use sqlx::{AnyConnection, Row};

use super::outbox::{CommitRecord, OutboxConfig, record_change};
use super::sql::{Backend, SqlStore};
use super::tenants::{bump_revision, load_tenant, save, write_audit};
use super::{NoticeEvent, Replay, StoreError, StoredEvent, StripeLog, StripeOutcome, StripeStatus};
use crate::billing::{self, Effect, EventRef, Fact, SubscriptionFacts, Translation};
use crate::command::Actor;
use crate::stripe::Envelope;
use crate::tenant::{Subscription, TenantState, UnixTime};

/// Columns of `stripe_events`, in the order [`row_to_event`] reads them.
macro_rules! event_columns {
    () => {
        "id, event_type, created, livemode, customer_id, tenant_id, status, error, received_at, applied_at, payload"
    };
}

const SUMMARY_TYPE: &str = "entitlements.active_entitlement_summary.updated";

fn outcome(status: StripeStatus) -> StripeOutcome {
    StripeOutcome { status, duplicate: false, tenant_id: None, revision: None, linked_customer: None, error: None }
}

/// Insert the event record, or report a duplicate. Always the transaction's first statement
/// (a write: it takes SQLite's write lock up front).
async fn claim(conn: &mut AnyConnection, env: &Envelope, replay: bool, at: UnixTime) -> Result<bool, StoreError> {
    if replay {
        let n = sqlx::query("UPDATE stripe_events SET received_at = received_at WHERE id = $1")
            .bind(&env.id)
            .execute(&mut *conn)
            .await?;
        return Ok(n.rows_affected() == 1);
    }
    let n = sqlx::query(
        "INSERT INTO stripe_events (id, event_type, created, livemode, status, payload, received_at) VALUES ($1, $2, $3, $4, 'received', $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&env.id)
    .bind(&env.event_type)
    .bind(env.created)
    .bind(i64::from(env.livemode))
    .bind(&env.payload)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(n.rows_affected() == 1)
}

async fn finish(
    conn: &mut AnyConnection,
    env: &Envelope,
    o: &StripeOutcome,
    customer: Option<&str>,
    at: UnixTime,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE stripe_events SET status = $2, error = $3, tenant_id = $4, customer_id = $5, applied_at = $6 WHERE id = $1")
        .bind(&env.id)
        .bind(o.status.as_str())
        .bind(o.error.clone())
        .bind(o.tenant_id.clone())
        .bind(customer.map(str::to_string))
        .bind((o.status == StripeStatus::Applied).then_some(at))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Lock the tenant's row (creating it if needed) before reading what an event is compared
/// with: concurrent events for one tenant then decide one after the other, so an older event
/// can never overwrite a newer one that committed in between (PostgreSQL's default isolation
/// would otherwise let both read the same old state). The revision is bumped only when applied.
async fn lock_tenant(conn: &mut AnyConnection, tenant: &str, at: UnixTime) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tenants (tenant_id, revision, created_at, updated_at) VALUES ($1, 0, $2, $2) \
         ON CONFLICT (tenant_id) DO UPDATE SET revision = tenants.revision",
    )
    .bind(tenant)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn tenant_by_customer(conn: &mut AnyConnection, customer: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE stripe_customer_id = $1 ORDER BY tenant_id LIMIT 1")
        .bind(customer)
        .fetch_optional(&mut *conn)
        .await?)
}

async fn tenant_by_subscription(conn: &mut AnyConnection, sub: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT tenant_id FROM subscriptions WHERE id = $1")
        .bind(sub)
        .fetch_optional(&mut *conn)
        .await?)
}

/// The tenant an event belongs to: `metadata.tenant_id`, else the tenant holding the customer
/// id, else the tenant that already owns the subscription.
async fn find_tenant(
    conn: &mut AnyConnection,
    hint: Option<&str>,
    customer: Option<&str>,
    sub: Option<&str>,
) -> Result<Option<String>, StoreError> {
    if let Some(h) = hint {
        return Ok(Some(h.to_string()));
    }
    if let Some(c) = customer
        && let Some(t) = tenant_by_customer(conn, c).await?
    {
        return Ok(Some(t));
    }
    match sub {
        Some(s) => tenant_by_subscription(conn, s).await,
        None => Ok(None),
    }
}

/// A subscription as stored, under whichever tenant holds it.
async fn stored_subscription(conn: &mut AnyConnection, id: &str) -> Result<Option<Subscription>, StoreError> {
    let Some(tenant) = tenant_by_subscription(conn, id).await? else { return Ok(None) };
    let state = load_tenant(conn, &tenant).await?;
    Ok(state.subscriptions.into_iter().find(|s| s.id == id))
}

/// The outbox of the store applying an event, and the notices its change made (published
/// after commit).
struct Ctx<'a> {
    outbox: Option<&'a OutboxConfig>,
    notices: Vec<NoticeEvent>,
}

/// Save an applied effect: bump the revision, write the changed rows and the audit record.
/// Returns the revision, or `None` when the fact changed nothing.
async fn commit(
    conn: &mut AnyConnection,
    before: &TenantState,
    after: &TenantState,
    effect: &Effect,
    by: &Actor,
    customer: Option<&str>,
    ctx: &mut Ctx<'_>,
) -> Result<Option<u64>, StoreError> {
    let Effect::Applied(entry) = effect else { return Ok(None) };
    let revision = bump_revision(conn, &after.tenant_id, by).await?;
    save(conn, before, after, customer).await?;
    write_audit(conn, &after.tenant_id, entry, by, revision).await?;
    if let Some(cfg) = ctx.outbox {
        let change = CommitRecord { before, after, action: entry.action, revision, at: by.at };
        ctx.notices.extend(record_change(conn, cfg, &change).await?);
    }
    Ok(Some(revision))
}

/// The outcome of an effect on `tenant`. Stale facts name the tenant (when `stale_names_tenant`).
fn outcome_of(
    effect: &Effect,
    tenant: &str,
    revision: Option<u64>,
    linked: Option<String>,
    stale_names_tenant: bool,
) -> StripeOutcome {
    match (effect, revision) {
        (Effect::Applied(_), Some(rev)) => applied(tenant, rev, linked),
        (Effect::Stale, _) => {
            let mut o = outcome(StripeStatus::Stale);
            o.tenant_id = stale_names_tenant.then(|| tenant.to_string());
            o
        }
        _ => outcome(StripeStatus::Ignored),
    }
}

/// Apply a verified, translated event inside an open transaction.
async fn apply(
    conn: &mut AnyConnection,
    env: &Envelope,
    translation: &Result<Translation, String>,
    replay: Option<&Replay>,
    at: UnixTime,
    ctx: &mut Ctx<'_>,
) -> Result<(StripeOutcome, Option<String>), StoreError> {
    let t = match translation {
        Err(e) => {
            let mut o = outcome(StripeStatus::Failed);
            o.error = Some(format!("unparseable event: {e}"));
            return Ok((o, None));
        }
        Ok(t) => t,
    };
    let errors = (!t.errors.is_empty()).then(|| t.errors.join("; "));
    let customer = t.fact.customer().map(str::to_string);
    if !t.applicable() {
        let mut o = outcome(StripeStatus::Failed);
        o.error = errors;
        // Recorded against the tenant it names (if any), so operators find it by tenant.
        o.tenant_id = t.fact.tenant_hint().map(str::to_string);
        return Ok((o, customer));
    }
    let by = match replay {
        None => Actor { actor: "stripe".into(), rationale: env.event_type.clone(), origin: env.id.clone(), at },
        Some(r) => Actor {
            actor: r.actor.clone(),
            rationale: format!("replay of {}: {}", env.event_type, r.rationale),
            origin: env.id.clone(),
            at,
        },
    };
    let event = EventRef { id: env.id.clone(), event_type: env.event_type.clone(), created: env.created };
    let mut o = match &t.fact {
        Fact::Ignored => outcome(StripeStatus::Ignored),
        Fact::Subscription(f) => subscription(conn, f, &by, ctx).await?,
        Fact::Checkout { session_id, tenant_hint, customer_id, subscription_id, addon } => {
            let hint = tenant_hint.as_deref();
            let Some(tenant) = find_tenant(conn, hint, customer_id.as_deref(), Some(subscription_id)).await? else {
                return Ok((pending(), customer));
            };
            let checkout = Checkout { session_id, subscription_id, addon: addon.as_deref() };
            self::checkout(conn, &tenant, customer_id.as_deref(), &checkout, &event, &by, ctx).await?
        }
        Fact::Invoice { customer_id, subscription_id, paid } => {
            invoice(conn, customer_id.as_deref(), subscription_id.as_deref(), *paid, &event, &by, ctx).await?
        }
        Fact::EntitlementSummary { customer_id, lookup_keys } => {
            summary(conn, customer_id, lookup_keys, &event, &by, ctx).await?
        }
    };
    o.error = errors;
    Ok((o, customer))
}

fn applied(tenant: &str, revision: u64, linked: Option<String>) -> StripeOutcome {
    StripeOutcome {
        status: StripeStatus::Applied,
        duplicate: false,
        tenant_id: Some(tenant.to_string()),
        revision: Some(revision),
        linked_customer: linked,
        error: None,
    }
}

fn pending() -> StripeOutcome {
    outcome(StripeStatus::PendingTenant)
}

/// Link the event's customer to the tenant when it has none; the newly linked id.
fn link(state: &mut TenantState, customer: Option<&str>) -> Option<String> {
    billing::link_customer(state, customer).then(|| customer.map(str::to_string)).flatten()
}

async fn subscription(
    conn: &mut AnyConnection,
    f: &SubscriptionFacts,
    by: &Actor,
    ctx: &mut Ctx<'_>,
) -> Result<StripeOutcome, StoreError> {
    let sub = &f.subscription;
    let Some(tenant) = find_tenant(conn, f.tenant_hint.as_deref(), Some(&f.customer_id), Some(&sub.id)).await? else {
        return Ok(pending());
    };
    lock_tenant(conn, &tenant, by.at).await?;
    let stored = stored_subscription(conn, &sub.id).await?;
    let mut state = load_tenant(conn, &tenant).await?;
    let before = state.clone();
    let effect = billing::apply_subscription(&mut state, stored.as_ref(), f, by);
    let linked = matches!(effect, Effect::Applied(_)).then(|| link(&mut state, Some(&f.customer_id))).flatten();
    let revision = commit(conn, &before, &state, &effect, by, Some(&f.customer_id), ctx).await?;
    Ok(outcome_of(&effect, &tenant, revision, linked, true))
}

/// A completed checkout session's ids.
struct Checkout<'a> {
    session_id: &'a str,
    subscription_id: &'a str,
    addon: Option<&'a str>,
}

async fn checkout(
    conn: &mut AnyConnection,
    tenant: &str,
    customer: Option<&str>,
    c: &Checkout<'_>,
    event: &EventRef,
    by: &Actor,
    ctx: &mut Ctx<'_>,
) -> Result<StripeOutcome, StoreError> {
    lock_tenant(conn, tenant, by.at).await?;
    let known = stored_subscription(conn, c.subscription_id).await?.is_some();
    let mut state = load_tenant(conn, tenant).await?;
    let before = state.clone();
    let linked = link(&mut state, customer);
    let effect = billing::apply_checkout(&mut state, known, c.session_id, c.subscription_id, c.addon, event, by);
    let revision = commit(conn, &before, &state, &effect, by, customer, ctx).await?;
    Ok(outcome_of(&effect, tenant, revision, linked, true))
}

async fn invoice(
    conn: &mut AnyConnection,
    customer: Option<&str>,
    sub_id: Option<&str>,
    paid: bool,
    event: &EventRef,
    by: &Actor,
    ctx: &mut Ctx<'_>,
) -> Result<StripeOutcome, StoreError> {
    let Some(sub_id) = sub_id else { return Ok(outcome(StripeStatus::Ignored)) };
    let Some(tenant) = tenant_by_subscription(conn, sub_id).await? else {
        // A customer nobody claims yet: keep the invoice until its tenant appears (its
        // subscription's events are waiting too, and apply first: they are older).
        if let Some(c) = customer
            && tenant_by_customer(conn, c).await?.is_none()
        {
            return Ok(pending());
        }
        // A known customer: the subscription's own events will carry its status.
        return Ok(outcome(StripeStatus::Ignored));
    };
    lock_tenant(conn, &tenant, by.at).await?;
    let mut state = load_tenant(conn, &tenant).await?;
    let before = state.clone();
    let effect = billing::apply_invoice(&mut state, sub_id, paid, event, by);
    let revision = commit(conn, &before, &state, &effect, by, customer, ctx).await?;
    Ok(outcome_of(&effect, &tenant, revision, None, false))
}

async fn summary(
    conn: &mut AnyConnection,
    customer: &str,
    keys: &[String],
    event: &EventRef,
    by: &Actor,
    ctx: &mut Ctx<'_>,
) -> Result<StripeOutcome, StoreError> {
    let Some(tenant) = tenant_by_customer(conn, customer).await? else { return Ok(pending()) };
    lock_tenant(conn, &tenant, by.at).await?;
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(created) FROM stripe_events WHERE tenant_id = $1 AND event_type = $2 AND status = 'applied'",
    )
    .bind(&tenant)
    .bind(SUMMARY_TYPE)
    .fetch_one(&mut *conn)
    .await?;
    let mut state = load_tenant(conn, &tenant).await?;
    let before = state.clone();
    let effect = billing::apply_summary(&mut state, newest, keys, event, by);
    let revision = commit(conn, &before, &state, &effect, by, Some(customer), ctx).await?;
    Ok(outcome_of(&effect, &tenant, revision, None, true))
}

fn row_to_event(r: &sqlx::any::AnyRow) -> Result<StoredEvent, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(StoredEvent {
        id: r.try_get("id")?,
        event_type: r.try_get("event_type")?,
        created: r.try_get("created")?,
        livemode: r.try_get::<i64, _>("livemode")? != 0,
        customer_id: r.try_get("customer_id")?,
        tenant_id: r.try_get("tenant_id")?,
        status: StripeStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("stripe event status `{status}`")))?,
        error: r.try_get("error")?,
        received_at: r.try_get("received_at")?,
        applied_at: r.try_get::<Option<i64>, _>("applied_at")?,
        payload: r.try_get("payload")?,
    })
}

#[async_trait]
impl StripeLog for SqlStore {
    async fn apply_stripe_event(
        &self,
        env: &Envelope,
        translation: &Result<Translation, String>,
        replay: Option<&Replay>,
        at: UnixTime,
    ) -> Result<StripeOutcome, StoreError> {
        let mut tx = self.pool().begin().await?;
        if !claim(&mut tx, env, replay.is_some(), at).await? {
            tx.rollback().await?;
            let mut o = outcome(StripeStatus::Ignored);
            o.duplicate = true;
            return Ok(o);
        }
        let mut ctx = Ctx { outbox: self.outbox(), notices: Vec::new() };
        let (outcome, customer) = apply(&mut tx, env, translation, replay, at, &mut ctx).await?;
        finish(&mut tx, env, &outcome, customer.as_deref(), at).await?;
        tx.commit().await?;
        if self.backend() == Backend::Sqlite {
            self.publish_notices(&ctx.notices);
        }
        Ok(outcome)
    }

    async fn stripe_event(&self, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = concat!("SELECT ", event_columns!(), " FROM stripe_events WHERE id = $1");
        let row = sqlx::query(sql).bind(id).fetch_optional(self.pool()).await?;
        row.as_ref().map(row_to_event).transpose()
    }

    async fn stripe_events(
        &self,
        tenant_id: Option<&str>,
        status: Option<StripeStatus>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM stripe_events WHERE ($1 = '' OR tenant_id = $1) AND ($2 = '' OR status = $2) \
             ORDER BY received_at DESC, id DESC LIMIT $3"
        );
        let rows = sqlx::query(sql)
            .bind(tenant_id.unwrap_or_default())
            .bind(status.map(StripeStatus::as_str).unwrap_or_default())
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_to_event).collect()
    }

    async fn pending_stripe_events(&self, customer_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let sql = concat!(
            "SELECT ",
            event_columns!(),
            " FROM stripe_events WHERE status = 'pending_tenant' AND customer_id = $1 ORDER BY created, id"
        );
        let rows = sqlx::query(sql).bind(customer_id).fetch_all(self.pool()).await?;
        rows.iter().map(row_to_event).collect()
    }
}
