//! Tenant lists (`AdminService.ListTenants`, `entitlements tenants`): one row per tenant as
//! [`resolve`] sees it at `now`, and the filters support and the app list by — phase, plan,
//! add-on, past due, trial ending, changed since. Pure: the store pages through tenants in id
//! order, this decides what each row says and whether it is listed.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::command::{Invalid, invalid};
use crate::lifecycle::{Notice, NoticeKind, Phase};
use crate::resolve::{active_addons, resolve};
use crate::tenant::{TenantState, UnixTime};

/// One tenant in a list: its resolved plan and phase, what it has bought, what it is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub tenant_id: String,
    pub revision: u64,
    /// The plan the tenant resolves to now (the default plan when nothing entitles).
    pub plan: String,
    pub phase: Phase,
    /// An entitling subscription is past due (the phase may still say trialing or archived).
    pub past_due: bool,
    /// The end of the product-led trial or of a Stripe trial, when there is one.
    pub trial_end: Option<UnixTime>,
    /// Active add-ons, in key order.
    pub addons: Vec<String>,
    pub notices: Vec<Notice>,
    /// When the tenant was last changed.
    pub updated_at: Option<UnixTime>,
}

/// The row of `state` at `now`.
pub fn row(catalog: &Arc<Catalog>, state: &TenantState, now: UnixTime) -> TenantRow {
    let r = resolve(catalog, state, now);
    let past_due =
        r.lifecycle.phase == Phase::PastDue || r.lifecycle.notices.iter().any(|n| n.kind == NoticeKind::PaymentPastDue);
    TenantRow {
        tenant_id: state.tenant_id.clone(),
        revision: state.revision,
        plan: r.plan_key().to_string(),
        phase: r.lifecycle.phase,
        past_due,
        trial_end: r.lifecycle.trial_end,
        addons: active_addons(catalog, state, now).into_iter().map(str::to_string).collect(),
        notices: r.lifecycle.notices,
        updated_at: state.last_change.as_ref().map(|c| c.at),
    }
}

/// Which tenants to list; every condition set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantFilter {
    pub phase: Option<Phase>,
    pub plan: Option<String>,
    pub addon: Option<String>,
    pub past_due: Option<bool>,
    /// Still trialing, with the trial ending before this instant.
    pub trial_ending_before: Option<UnixTime>,
    /// Changed at or after this instant.
    pub changed_since: Option<UnixTime>,
}

impl TenantFilter {
    /// A filter naming a plan or add-on the catalog does not have is a mistake, not "no rows".
    pub fn validate(&self, catalog: &Catalog) -> Result<(), Invalid> {
        if let Some(plan) = self.plan.as_deref().filter(|p| catalog.plan(p).is_none()) {
            return Err(invalid("plan", format!("unknown plan `{plan}`")));
        }
        if let Some(addon) = self.addon.as_deref().filter(|a| catalog.addon(a).is_none()) {
            return Err(invalid("addon", format!("unknown add-on `{addon}`")));
        }
        Ok(())
    }

    pub fn matches(&self, row: &TenantRow) -> bool {
        self.phase.is_none_or(|p| row.phase == p)
            && self.plan.as_deref().is_none_or(|p| row.plan == p)
            && self.addon.as_deref().is_none_or(|a| row.addons.iter().any(|x| x == a))
            && self.past_due.is_none_or(|p| row.past_due == p)
            && self
                .trial_ending_before
                .is_none_or(|t| row.phase == Phase::Trialing && row.trial_end.is_some_and(|end| end < t))
            && self.changed_since.is_none_or(|t| row.updated_at.is_some_and(|at| at >= t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{AddOnGrant, Change, DAY, GrantOrigin, Subscription, SubscriptionStatus, Trial};

    const NOW: UnixTime = 1_800_000_000;

    fn catalog() -> Arc<Catalog> {
        let src = include_str!("../../examples/catalog.toml");
        Arc::new(Catalog::from_toml(src, &|_| None).expect("example catalog"))
    }

    fn tenant(id: &str) -> TenantState {
        TenantState { known: true, revision: 3, ..TenantState::unknown(id) }
    }

    fn subscription(status: SubscriptionStatus) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            status,
            plan: Some("pro".into()),
            interval: None,
            seats: Some(7),
            trial_end: None,
            current_period_start: Some(NOW - DAY),
            current_period_end: Some(NOW + 29 * DAY),
            cancel_at_period_end: false,
            last_event_created: NOW - DAY,
            last_event_id: "evt_1".into(),
        }
    }

    fn grant(addon: &str, expires_at: Option<UnixTime>) -> AddOnGrant {
        AddOnGrant {
            addon: addon.into(),
            quantity: 1,
            origin: GrantOrigin::Manual,
            actor: "ops".into(),
            rationale: "deal".into(),
            granted_at: NOW - DAY,
            expires_at,
        }
    }

    #[test]
    fn rows_say_plan_phase_addons_and_past_due() {
        let c = catalog();
        let mut t = tenant("t1");
        t.subscriptions.push(subscription(SubscriptionStatus::PastDue));
        t.addon_grants.push(grant("teams", None));
        t.addon_grants.push(grant("teams", None));
        t.addon_grants.push(grant("enterprise", Some(NOW - 1)));
        t.last_change =
            Some(Change { actor: "ops".into(), at: NOW - 60, rationale: "r".into(), origin: "admin".into() });
        let r = row(&c, &t, NOW);
        assert_eq!((r.plan.as_str(), r.phase, r.past_due), ("pro", Phase::PastDue, true));
        assert_eq!(r.addons, vec!["teams".to_string()], "expired grant not listed, duplicates once");
        assert_eq!(r.updated_at, Some(NOW - 60));

        let f = |f: TenantFilter| f.matches(&r);
        assert!(f(TenantFilter { phase: Some(Phase::PastDue), ..Default::default() }));
        assert!(f(TenantFilter { past_due: Some(true), plan: Some("pro".into()), ..Default::default() }));
        assert!(f(TenantFilter { addon: Some("teams".into()), changed_since: Some(NOW - 60), ..Default::default() }));
        assert!(!f(TenantFilter { addon: Some("enterprise".into()), ..Default::default() }));
        assert!(!f(TenantFilter { changed_since: Some(NOW - 59), ..Default::default() }));
        assert!(!f(TenantFilter { past_due: Some(false), ..Default::default() }));
    }

    #[test]
    fn trial_ending_before_lists_only_running_trials() {
        let c = catalog();
        let mut t = tenant("t2");
        t.trial = Some(Trial { start: NOW - 10 * DAY, end: NOW + 4 * DAY });
        let r = row(&c, &t, NOW);
        assert_eq!((r.phase, r.plan.as_str()), (Phase::Trialing, "premium"));
        let before = |t: UnixTime| TenantFilter { trial_ending_before: Some(t), ..Default::default() };
        assert!(before(NOW + 5 * DAY).matches(&r));
        assert!(!before(NOW + 3 * DAY).matches(&r));
        // Five days later the trial has ended: no longer "ending".
        assert!(!before(NOW + 30 * DAY).matches(&row(&c, &t, NOW + 5 * DAY)));
    }

    #[test]
    fn unknown_plans_and_addons_are_refused() {
        let c = catalog();
        assert_eq!(
            TenantFilter { plan: Some("gold".into()), ..Default::default() }.validate(&c).map_err(|e| e.field),
            Err("plan")
        );
        assert_eq!(
            TenantFilter { addon: Some("x".into()), ..Default::default() }.validate(&c).map_err(|e| e.field),
            Err("addon")
        );
        assert!(TenantFilter { plan: Some("pro".into()), ..Default::default() }.validate(&c).is_ok());
    }
}
