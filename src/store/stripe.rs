//! Applying Stripe events in the store: one transaction per event — the event record, the
//! subscription row, its add-on grants, the audit event and the revision bump commit together.

use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::sql::{bump_revision, load_tenant, upsert_grant, write_audit};
use super::{Actor, Replay, StoreError, StoredEvent, StripeOutcome, StripeStatus};
use crate::stripe::{Change, Envelope, SubscriptionFacts, Translation};
use crate::tenant::{AddOnGrant, GrantOrigin, Subscription, SubscriptionStatus, UnixTime, supersedes};

const SUMMARY_TYPE: &str = "entitlements.active_entitlement_summary.updated";

fn outcome(status: StripeStatus) -> StripeOutcome {
    StripeOutcome { status, duplicate: false, tenant_id: None, revision: None, linked_customer: None, error: None }
}

/// Insert the event record, or report a duplicate. Always the transaction's first statement
/// (a write: it takes SQLite's write lock up front).
pub(super) async fn claim(
    conn: &mut AnyConnection,
    env: &Envelope,
    replay: bool,
    at: UnixTime,
) -> Result<bool, StoreError> {
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

pub(super) async fn finish(
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

/// Link a customer id to a tenant that has none yet. Returns the id when newly linked.
async fn link_customer(
    conn: &mut AnyConnection,
    tenant: &str,
    customer: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let Some(c) = customer else { return Ok(None) };
    let n =
        sqlx::query("UPDATE tenants SET stripe_customer_id = $2 WHERE tenant_id = $1 AND stripe_customer_id IS NULL")
            .bind(tenant)
            .bind(c)
            .execute(&mut *conn)
            .await?;
    Ok((n.rows_affected() == 1).then(|| c.to_string()))
}

async fn stored_subscription(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<(SubscriptionStatus, UnixTime, Subscription)>, StoreError> {
    let Some(tenant) = tenant_by_subscription(conn, id).await? else { return Ok(None) };
    let state = load_tenant(conn, &tenant).await?;
    Ok(state.subscriptions.into_iter().find(|s| s.id == id).map(|s| (s.status, s.last_event_created, s)))
}

async fn upsert_subscription(
    conn: &mut AnyConnection,
    tenant: &str,
    customer: Option<&str>,
    s: &Subscription,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO subscriptions (id, tenant_id, customer_id, status, plan, billing_interval, seats, trial_end, current_period_start, \
         current_period_end, cancel_at_period_end, last_event_created, last_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET tenant_id = excluded.tenant_id, customer_id = COALESCE(excluded.customer_id, subscriptions.customer_id), \
         status = excluded.status, plan = excluded.plan, billing_interval = excluded.billing_interval, seats = excluded.seats, \
         trial_end = excluded.trial_end, current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end, \
         cancel_at_period_end = excluded.cancel_at_period_end, last_event_created = excluded.last_event_created, last_event_id = excluded.last_event_id",
    )
    .bind(&s.id)
    .bind(tenant)
    .bind(customer.map(str::to_string))
    .bind(s.status.as_str())
    .bind(s.plan.clone())
    .bind(s.interval.map(|i| i.as_str().to_string()))
    .bind(s.seats)
    .bind(s.trial_end)
    .bind(s.current_period_start)
    .bind(s.current_period_end)
    .bind(i64::from(s.cancel_at_period_end))
    .bind(s.last_event_created)
    .bind(&s.last_event_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn grants_of_subscription(
    conn: &mut AnyConnection,
    tenant: &str,
    sub: &str,
) -> Result<Vec<AddOnGrant>, StoreError> {
    let state = load_tenant(conn, tenant).await?;
    Ok(state
        .addon_grants
        .into_iter()
        .filter(|g| matches!(&g.origin, GrantOrigin::Stripe { subscription_id, .. } if subscription_id == sub))
        .collect())
}

/// Apply a verified, translated event inside an open transaction.
pub(super) async fn apply(
    conn: &mut AnyConnection,
    env: &Envelope,
    translation: &Result<Translation, String>,
    replay: Option<&Replay>,
    at: UnixTime,
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
    if !t.applicable() {
        let mut o = outcome(StripeStatus::Failed);
        o.error = errors;
        // Recorded against the tenant it names (if any), so operators find it by tenant.
        o.tenant_id = match &t.change {
            Change::Subscription(f) => f.tenant_hint.clone(),
            Change::Checkout { tenant_hint, .. } => tenant_hint.clone(),
            _ => None,
        };
        return Ok((o, customer_of(&t.change)));
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
    let (mut o, customer) = match &t.change {
        Change::Ignored => (outcome(StripeStatus::Ignored), None),
        Change::Subscription(f) => subscription(conn, f, &by).await?,
        Change::Checkout { session_id, tenant_hint, customer_id, subscription_id, addon } => {
            checkout(
                conn,
                env,
                session_id,
                tenant_hint.as_deref(),
                customer_id.as_deref(),
                subscription_id,
                addon.as_deref(),
                &by,
            )
            .await?
        }
        Change::Invoice { customer_id, subscription_id, paid } => {
            invoice(conn, env, customer_id.as_deref(), subscription_id.as_deref(), *paid, &by).await?
        }
        Change::EntitlementSummary { customer_id, lookup_keys } => {
            summary(conn, env, customer_id, lookup_keys, &by).await?
        }
    };
    o.error = errors;
    Ok((o, customer))
}

fn customer_of(c: &Change) -> Option<String> {
    match c {
        Change::Subscription(f) => Some(f.customer_id.clone()),
        Change::Checkout { customer_id, .. } | Change::Invoice { customer_id, .. } => customer_id.clone(),
        Change::EntitlementSummary { customer_id, .. } => Some(customer_id.clone()),
        Change::Ignored => None,
    }
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

async fn subscription(
    conn: &mut AnyConnection,
    f: &SubscriptionFacts,
    by: &Actor,
) -> Result<(StripeOutcome, Option<String>), StoreError> {
    let customer = Some(f.customer_id.clone());
    let sub = &f.subscription;
    let Some(tenant) = find_tenant(conn, f.tenant_hint.as_deref(), Some(&f.customer_id), Some(&sub.id)).await? else {
        return Ok((pending(), customer));
    };
    lock_tenant(conn, &tenant, by.at).await?;
    let before = stored_subscription(conn, &sub.id).await?;
    if let Some((status, created, _)) = &before
        && !supersedes(*created, *status, sub.last_event_created, sub.status)
    {
        let mut o = outcome(StripeStatus::Stale);
        o.tenant_id = Some(tenant);
        return Ok((o, customer));
    }
    let revision = bump_revision(conn, &tenant, by).await?;
    let linked = link_customer(conn, &tenant, Some(&f.customer_id)).await?;
    let grants_before = grants_of_subscription(conn, &tenant, &sub.id).await?;
    upsert_subscription(conn, &tenant, Some(&f.customer_id), sub).await?;
    // The items decide the add-on grants of this subscription (this also replaces a grant a
    // checkout session recorded before the subscription's own events arrived).
    sqlx::query("DELETE FROM addon_grants WHERE tenant_id = $1 AND subscription_id = $2")
        .bind(&tenant)
        .bind(&sub.id)
        .execute(&mut *conn)
        .await?;
    for g in &f.addons {
        upsert_grant(conn, &tenant, g).await?;
    }
    let before_json = json!({ "subscription": before.map(|b| b.2), "addon_grants": grants_before });
    let after_json = json!({ "subscription": sub, "addon_grants": f.addons });
    write_audit(conn, &tenant, "stripe_subscription", by, &before_json, &after_json, revision).await?;
    Ok((applied(&tenant, revision, linked), customer))
}

#[allow(clippy::too_many_arguments)]
async fn checkout(
    conn: &mut AnyConnection,
    env: &Envelope,
    session_id: &str,
    hint: Option<&str>,
    customer: Option<&str>,
    sub_id: &str,
    addon: Option<&str>,
    by: &Actor,
) -> Result<(StripeOutcome, Option<String>), StoreError> {
    let Some(tenant) = find_tenant(conn, hint, customer, Some(sub_id)).await? else {
        return Ok((pending(), customer.map(str::to_string)));
    };
    lock_tenant(conn, &tenant, by.at).await?;
    let revision = bump_revision(conn, &tenant, by).await?;
    let linked = link_customer(conn, &tenant, customer).await?;
    // A completed session means a live subscription; its own events (which carry the items and
    // status) replace this provisional row, since any real event is newer than `created = 0`.
    if stored_subscription(conn, sub_id).await?.is_none() {
        let provisional = Subscription {
            id: sub_id.to_string(),
            status: SubscriptionStatus::Active,
            plan: None,
            interval: None,
            seats: None,
            trial_end: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            last_event_created: 0,
            last_event_id: env.id.clone(),
        };
        upsert_subscription(conn, &tenant, customer, &provisional).await?;
    }
    let mut granted = None;
    if let Some(addon) = addon {
        let existing = grants_of_subscription(conn, &tenant, sub_id).await?;
        if !existing.iter().any(|g| g.addon == addon) {
            let g = AddOnGrant {
                addon: addon.to_string(),
                quantity: 1,
                origin: GrantOrigin::Stripe {
                    subscription_id: sub_id.to_string(),
                    item_id: format!("checkout:{session_id}"),
                },
                actor: "stripe".into(),
                rationale: format!("{} {}", env.event_type, env.id),
                granted_at: env.created,
                expires_at: None,
            };
            upsert_grant(conn, &tenant, &g).await?;
            granted = Some(g);
        }
    }
    let after = json!({ "checkout_session": session_id, "subscription": sub_id, "addon_grant": granted });
    write_audit(conn, &tenant, "stripe_checkout", by, &serde_json::Value::Null, &after, revision).await?;
    Ok((applied(&tenant, revision, linked), customer.map(str::to_string)))
}

async fn invoice(
    conn: &mut AnyConnection,
    env: &Envelope,
    customer: Option<&str>,
    sub_id: Option<&str>,
    paid: bool,
    by: &Actor,
) -> Result<(StripeOutcome, Option<String>), StoreError> {
    let owned = customer.map(str::to_string);
    let Some(sub_id) = sub_id else { return Ok((outcome(StripeStatus::Ignored), owned)) };
    if let Some(tenant) = tenant_by_subscription(conn, sub_id).await? {
        lock_tenant(conn, &tenant, by.at).await?;
    }
    let Some((status, created, sub)) = stored_subscription(conn, sub_id).await? else {
        // A customer nobody claims yet: keep the invoice until its tenant appears (its
        // subscription's events are waiting too, and apply first: they are older).
        if let Some(c) = customer
            && tenant_by_customer(conn, c).await?.is_none()
        {
            return Ok((pending(), owned));
        }
        // A known customer: the subscription's own events will carry its status.
        return Ok((outcome(StripeStatus::Ignored), owned));
    };
    let next = match (paid, status) {
        (true, SubscriptionStatus::PastDue | SubscriptionStatus::Unpaid) => SubscriptionStatus::Active,
        (false, SubscriptionStatus::Active | SubscriptionStatus::Trialing) => SubscriptionStatus::PastDue,
        _ => return Ok((outcome(StripeStatus::Ignored), owned)),
    };
    if env.created < created {
        return Ok((outcome(StripeStatus::Stale), owned));
    }
    let Some(tenant) = tenant_by_subscription(conn, sub_id).await? else { return Ok((pending(), owned)) };
    let revision = bump_revision(conn, &tenant, by).await?;
    let updated =
        Subscription { status: next, last_event_created: env.created, last_event_id: env.id.clone(), ..sub.clone() };
    upsert_subscription(conn, &tenant, customer, &updated).await?;
    write_audit(
        conn,
        &tenant,
        "stripe_invoice",
        by,
        &json!({ "subscription": sub }),
        &json!({ "subscription": updated }),
        revision,
    )
    .await?;
    Ok((applied(&tenant, revision, None), owned))
}

async fn summary(
    conn: &mut AnyConnection,
    env: &Envelope,
    customer: &str,
    keys: &[String],
    by: &Actor,
) -> Result<(StripeOutcome, Option<String>), StoreError> {
    let owned = Some(customer.to_string());
    let Some(tenant) = tenant_by_customer(conn, customer).await? else { return Ok((pending(), owned)) };
    lock_tenant(conn, &tenant, by.at).await?;
    let newest: Option<i64> = sqlx::query_scalar(
        "SELECT MAX(created) FROM stripe_events WHERE tenant_id = $1 AND event_type = $2 AND status = 'applied'",
    )
    .bind(&tenant)
    .bind(SUMMARY_TYPE)
    .fetch_one(&mut *conn)
    .await?;
    if newest.is_some_and(|n| n > env.created) {
        let mut o = outcome(StripeStatus::Stale);
        o.tenant_id = Some(tenant);
        return Ok((o, owned));
    }
    let revision = bump_revision(conn, &tenant, by).await?;
    let before: Vec<String> = load_tenant(conn, &tenant)
        .await?
        .addon_grants
        .into_iter()
        .filter_map(|g| match g.origin {
            GrantOrigin::StripeEntitlement { lookup_key } => Some(lookup_key),
            _ => None,
        })
        .collect();
    sqlx::query("DELETE FROM addon_grants WHERE tenant_id = $1 AND origin LIKE 'stripe-entitlement:%'")
        .bind(&tenant)
        .execute(&mut *conn)
        .await?;
    for key in keys {
        let g = AddOnGrant {
            addon: key.clone(),
            quantity: 1,
            origin: GrantOrigin::StripeEntitlement { lookup_key: key.clone() },
            actor: "stripe".into(),
            rationale: format!("{} {}", env.event_type, env.id),
            granted_at: env.created,
            expires_at: None,
        };
        upsert_grant(conn, &tenant, &g).await?;
    }
    write_audit(conn, &tenant, "stripe_entitlements", by, &json!(before), &json!(keys), revision).await?;
    Ok((applied(&tenant, revision, None), owned))
}

pub(super) fn row_to_event(r: &sqlx::any::AnyRow) -> Result<StoredEvent, StoreError> {
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
