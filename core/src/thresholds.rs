//! Lifecycle threshold crossings (SPEC §3.5, issue 12): the instants at which a tenant crosses
//! a lifecycle threshold, so that the app can send its emails and act (deactivate users at
//! archive time) exactly when it happens.
//!
//! Two sorts:
//!
//! - **timed** — the trial warning at each configured days-left mark, the trial end (soft lock),
//!   hard lock, archive, and the warnings before a Stripe trial ends. They follow from stored
//!   timestamps alone; [`crossings_between`] lists those in a time window and [`next_crossing`]
//!   says when the next one is (the shell keeps it per tenant, so due work is an indexed range
//!   query, never a scan of every tenant);
//! - **on change** — past due entered and left, which only a committed change causes;
//!   [`on_change`] compares the states before and after it.
//!
//! A timed crossing counts only if, at its instant, the tenant's resolved lifecycle is the
//! timeline it belongs to: a tenant who bought a plan during the trial gets no "trial ended".
//! Its identity is (kind, instant): moving the trial end makes new crossings, not repeats.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::lifecycle::{Phase, days_left};
use crate::resolve::resolve;
use crate::tenant::{DAY, SubscriptionStatus, TenantState, UnixTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Threshold {
    /// The product-led trial has `days_left` days left (one per configured warning mark).
    TrialWarning,
    /// The product-led trial ended: soft lock.
    TrialEnded,
    HardLocked,
    Archived,
    /// A Stripe trial (`trialing` subscription) has `days_left` days left.
    StripeTrialEnding,
    PastDueEntered,
    PastDueLeft,
}

impl Threshold {
    pub const ALL: [Threshold; 7] = [
        Threshold::TrialWarning,
        Threshold::TrialEnded,
        Threshold::HardLocked,
        Threshold::Archived,
        Threshold::StripeTrialEnding,
        Threshold::PastDueEntered,
        Threshold::PastDueLeft,
    ];

    /// The stored and wire name (also the webhook event type after `notice.`).
    pub fn as_str(self) -> &'static str {
        match self {
            Threshold::TrialWarning => "trial_warning",
            Threshold::TrialEnded => "trial_ended",
            Threshold::HardLocked => "hard_locked",
            Threshold::Archived => "archived",
            Threshold::StripeTrialEnding => "stripe_trial_ending",
            Threshold::PastDueEntered => "past_due_entered",
            Threshold::PastDueLeft => "past_due_left",
        }
    }

    pub fn parse(s: &str) -> Option<Threshold> {
        Threshold::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One crossing of one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Crossing {
    pub at: UnixTime,
    pub threshold: Threshold,
    /// Whole days left (warnings); 0 otherwise.
    pub days_left: i64,
}

/// Every timed crossing this state could produce, whether or not it applies at its instant.
fn candidates(catalog: &Catalog, state: &TenantState) -> Vec<Crossing> {
    let policy = &catalog.lifecycle;
    let mut out = Vec::new();
    if state.archived {
        return out;
    }
    let warnings = |end: UnixTime, start: Option<UnixTime>, threshold, out: &mut Vec<Crossing>| {
        for &d in &policy.warning_days {
            let at = end.saturating_sub(d.saturating_mul(DAY));
            if d > 0 && start.is_none_or(|s| at >= s) {
                out.push(Crossing { at, threshold, days_left: d });
            }
        }
    };
    if let Some(trial) = state.trial {
        warnings(trial.end, Some(trial.start), Threshold::TrialWarning, &mut out);
        let after = |days: i64| trial.end.saturating_add(days.saturating_mul(DAY));
        out.push(Crossing { at: trial.end, threshold: Threshold::TrialEnded, days_left: 0 });
        out.push(Crossing { at: after(policy.hard_lock_after_days), threshold: Threshold::HardLocked, days_left: 0 });
        out.push(Crossing { at: after(policy.archive_after_days), threshold: Threshold::Archived, days_left: 0 });
    }
    for s in state.subscriptions.iter().filter(|s| s.status == SubscriptionStatus::Trialing) {
        if let Some(end) = s.trial_end {
            warnings(end, None, Threshold::StripeTrialEnding, &mut out);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether, at its instant, the tenant is on the timeline the crossing belongs to.
fn applies(catalog: &Arc<Catalog>, state: &TenantState, c: &Crossing) -> bool {
    let lc = resolve(catalog, state, c.at).lifecycle;
    let product_trial = lc.soft_lock_at.is_some() && lc.trial_end == state.trial.map(|t| t.end);
    match c.threshold {
        Threshold::TrialWarning => product_trial && lc.phase == Phase::Trialing,
        Threshold::TrialEnded => product_trial && lc.phase == Phase::TrialExpired,
        Threshold::HardLocked => product_trial && lc.phase == Phase::HardLocked,
        Threshold::Archived => product_trial && lc.phase == Phase::Archived,
        Threshold::StripeTrialEnding => {
            lc.phase == Phase::Trialing
                && lc.soft_lock_at.is_none()
                && lc.trial_end.is_some_and(|end| days_left(end, c.at) == c.days_left)
        }
        Threshold::PastDueEntered | Threshold::PastDueLeft => false,
    }
}

/// The timed crossings with `after < at <= until`, in order.
pub fn crossings_between(
    catalog: &Arc<Catalog>,
    state: &TenantState,
    after: UnixTime,
    until: UnixTime,
) -> Vec<Crossing> {
    candidates(catalog, state)
        .into_iter()
        .filter(|c| c.at > after && c.at <= until && applies(catalog, state, c))
        .collect()
}

/// The instant of the first timed crossing after `after`, if any.
pub fn next_crossing(catalog: &Arc<Catalog>, state: &TenantState, after: UnixTime) -> Option<UnixTime> {
    candidates(catalog, state).into_iter().find(|c| c.at > after && applies(catalog, state, c)).map(|c| c.at)
}

/// The crossings a committed change makes at `at`: past due entered or left.
pub fn on_change(catalog: &Arc<Catalog>, before: &TenantState, after: &TenantState, at: UnixTime) -> Vec<Crossing> {
    let past_due = |s: &TenantState| s.known && resolve(catalog, s, at).lifecycle.phase == Phase::PastDue;
    match (past_due(before), past_due(after)) {
        (false, true) => vec![Crossing { at, threshold: Threshold::PastDueEntered, days_left: 0 }],
        (true, false) => vec![Crossing { at, threshold: Threshold::PastDueLeft, days_left: 0 }],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::{Subscription, Trial};
    use proptest::prelude::*;

    fn catalog() -> Arc<Catalog> {
        let src = include_str!("../../examples/catalog.toml");
        Arc::new(Catalog::from_toml(src, &|_| None).expect("example catalog"))
    }

    fn trialing(start: UnixTime, days: i64) -> TenantState {
        let mut s = TenantState::unknown("acme");
        s.known = true;
        s.trial = Some(Trial { start, end: start + days * DAY });
        s
    }

    fn active_pro() -> Subscription {
        Subscription {
            id: "sub_1".into(),
            status: SubscriptionStatus::Active,
            plan: Some("pro".into()),
            interval: None,
            seats: Some(1),
            trial_end: None,
            current_period_start: None,
            current_period_end: None,
            cancel_at_period_end: false,
            last_event_created: 0,
            last_event_id: "evt".into(),
        }
    }

    fn kinds(cs: &[Crossing]) -> Vec<(Threshold, i64)> {
        cs.iter().map(|c| (c.threshold, c.days_left)).collect()
    }

    #[test]
    fn the_14_day_trial_crosses_each_threshold_once_in_order() {
        let (cat, start) = (catalog(), 1_000 * DAY);
        let s = trialing(start, 14);
        let all = crossings_between(&cat, &s, start, start + 100 * DAY);
        let p = &cat.lifecycle;
        let mut want = p.warning_days.iter().map(|&d| (Threshold::TrialWarning, d)).collect::<Vec<_>>();
        want.extend([(Threshold::TrialEnded, 0), (Threshold::HardLocked, 0), (Threshold::Archived, 0)]);
        assert_eq!(kinds(&all), want);
        assert_eq!(all.last().map(|c| c.at), Some(start + (14 + p.archive_after_days) * DAY));
        // Walking the timeline one `next_crossing` at a time visits the same instants.
        let (mut t, mut seen) = (start, Vec::new());
        while let Some(n) = next_crossing(&cat, &s, t) {
            seen.extend(crossings_between(&cat, &s, t, n));
            t = n;
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn buying_a_plan_cancels_the_trial_timeline_and_archive_flag_stops_everything() {
        let (cat, start) = (catalog(), 1_000 * DAY);
        let mut s = trialing(start, 14);
        s.subscriptions.push(active_pro());
        assert_eq!(next_crossing(&cat, &s, start), None);
        let mut s = trialing(start, 14);
        s.archived = true;
        assert!(crossings_between(&cat, &s, 0, i64::MAX / 2).is_empty());
    }

    #[test]
    fn past_due_is_entered_and_left_on_change() {
        let cat = catalog();
        let mut before = trialing(0, 14);
        before.trial = None;
        let sub = active_pro();
        before.subscriptions.push(sub.clone());
        let mut after = before.clone();
        after.subscriptions[0].status = SubscriptionStatus::PastDue;
        assert_eq!(kinds(&on_change(&cat, &before, &after, 5)), vec![(Threshold::PastDueEntered, 0)]);
        assert_eq!(kinds(&on_change(&cat, &after, &before, 6)), vec![(Threshold::PastDueLeft, 0)]);
        assert!(on_change(&cat, &before, &before, 7).is_empty());
    }

    #[test]
    fn names_round_trip() {
        for t in Threshold::ALL {
            assert_eq!(Threshold::parse(t.as_str()), Some(t));
        }
    }

    proptest! {
        /// However the window is cut into pieces, each crossing is in exactly one piece: a
        /// worker that processes (through, now] and moves `through` emits each crossing once.
        #[test]
        fn windows_partition_the_crossings(days in 1i64..40, cuts in proptest::collection::vec(0i64..80 * DAY, 0..12)) {
            let (cat, start) = (catalog(), 500 * DAY);
            let s = trialing(start, days);
            let all = crossings_between(&cat, &s, start - 1, start + 200 * DAY);
            let mut cuts: Vec<_> = cuts.into_iter().map(|c| start + c).collect();
            cuts.push(start + 200 * DAY);
            cuts.sort_unstable();
            let mut t = start - 1;
            let mut pieces = Vec::new();
            for c in cuts {
                pieces.extend(crossings_between(&cat, &s, t, c));
                t = c;
            }
            prop_assert_eq!(pieces, all.clone());
            for w in all.windows(2) {
                prop_assert!(w[0].at <= w[1].at);
            }
        }
    }
}
