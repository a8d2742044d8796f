//! Lifecycle phases and notices (SPEC §3.5): from timestamps and `now`, no clock reads.

use crate::catalog::Lifecycle as Policy;
use crate::tenant::{DAY, Trial, UnixTime};

/// How to move a trial end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrialExtension {
    /// Add days to the current end (or start a trial of that length now when there is none).
    Days(i64),
    Until(UnixTime),
}

/// The trial after an extension. Every threshold (warnings, locks, archive) derives from the end,
/// so moving the end moves them all.
pub fn extend_trial(current: Option<Trial>, ext: TrialExtension, now: UnixTime) -> Trial {
    let base = current.unwrap_or(Trial { start: now, end: now });
    let end = match ext {
        TrialExtension::Days(d) => base.end.saturating_add(d.saturating_mul(DAY)),
        TrialExtension::Until(t) => t,
    };
    Trial { start: base.start.min(end), end }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    Trialing,
    TrialExpired,
    HardLocked,
    Archived,
    PastDue,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Active => "ACTIVE",
            Phase::Trialing => "TRIALING",
            Phase::TrialExpired => "TRIAL_EXPIRED",
            Phase::HardLocked => "HARD_LOCKED",
            Phase::Archived => "ARCHIVED",
            Phase::PastDue => "PAST_DUE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    TrialEnding,
    TrialExpired,
    HardLocked,
    PaymentPastDue,
    TenantArchived,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub message: String,
    pub at: UnixTime,
    pub dismissible: bool,
    pub days_left: i64,
}

/// The phase and the timestamps that define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleState {
    pub phase: Phase,
    pub trial_start: Option<UnixTime>,
    pub trial_end: Option<UnixTime>,
    pub days_left: Option<i64>,
    pub soft_lock_at: Option<UnixTime>,
    pub hard_lock_at: Option<UnixTime>,
    pub archive_at: Option<UnixTime>,
    pub notices: Vec<Notice>,
    /// The earliest future instant at which this lifecycle state changes.
    pub next_change: Option<UnixTime>,
}

/// Whole days left until `end`, rounded up (a trial ending in 6.5 days has 7 days left).
pub fn days_left(end: UnixTime, now: UnixTime) -> i64 {
    if now >= end { 0 } else { (end - now + DAY - 1) / DAY }
}

/// The next instant after `now` at which [`days_left`] changes.
fn next_day_tick(end: UnixTime, now: UnixTime) -> Option<UnixTime> {
    (now < end).then(|| end - ((end - now - 1) / DAY) * DAY)
}

fn trial_notice(policy: &Policy, end: UnixTime, now: UnixTime) -> Option<Notice> {
    let left = days_left(end, now);
    let threshold = policy.warning_days.first().copied()?;
    (left <= threshold).then(|| Notice {
        kind: NoticeKind::TrialEnding,
        message: format!("Your trial ends in {left} day{}.", if left == 1 { "" } else { "s" }),
        at: end,
        dismissible: true,
        days_left: left,
    })
}

/// A Stripe trial (a `trialing` subscription): trial notices, nothing locks — Stripe decides.
pub fn stripe_trial(policy: &Policy, trial_end: Option<UnixTime>, now: UnixTime) -> LifecycleState {
    let mut s = LifecycleState::active();
    s.phase = Phase::Trialing;
    s.trial_end = trial_end;
    if let Some(end) = trial_end {
        s.days_left = Some(days_left(end, now));
        s.notices.extend(trial_notice(policy, end, now));
        s.next_change = next_day_tick(end, now);
    }
    s
}

/// A tenant with an entitling subscription in `past_due`: allowed, with a non-dismissible notice.
pub fn past_due() -> LifecycleState {
    let mut s = LifecycleState::active();
    s.phase = Phase::PastDue;
    s.notices.push(Notice {
        kind: NoticeKind::PaymentPastDue,
        message: "Your last payment failed. Please update your payment method.".into(),
        at: 0,
        dismissible: false,
        days_left: 0,
    });
    s
}

/// An archived tenant (admin flag): everything denied.
pub fn archived_by_flag() -> LifecycleState {
    let mut s = LifecycleState::active();
    s.phase = Phase::Archived;
    s.notices.push(archived_notice(0));
    s
}

fn archived_notice(at: UnixTime) -> Notice {
    Notice {
        kind: NoticeKind::TenantArchived,
        message: "This workspace is archived.".into(),
        at,
        dismissible: false,
        days_left: 0,
    }
}

/// The product-led free trial timeline: trialing → soft lock → hard lock → archive.
pub fn product_trial(policy: &Policy, start: UnixTime, end: UnixTime, now: UnixTime) -> LifecycleState {
    let hard = end.saturating_add(policy.hard_lock_after_days * DAY);
    let archive = end.saturating_add(policy.archive_after_days * DAY);
    let mut s = LifecycleState {
        phase: Phase::Trialing,
        trial_start: Some(start),
        trial_end: Some(end),
        days_left: Some(days_left(end, now)),
        soft_lock_at: Some(end),
        hard_lock_at: Some(hard),
        archive_at: Some(archive),
        notices: Vec::new(),
        next_change: None,
    };
    if now < end {
        s.notices.extend(trial_notice(policy, end, now));
        s.next_change = next_day_tick(end, now);
    } else if now < hard {
        s.phase = Phase::TrialExpired;
        s.notices.push(Notice {
            kind: NoticeKind::TrialExpired,
            message: format!(
                "Your trial has ended. Choose a plan within {} day(s) to keep editing.",
                days_left(hard, now)
            ),
            at: end,
            dismissible: true,
            days_left: 0,
        });
        // The notice counts the days to hard lock down, so it changes daily until then.
        s.next_change = next_day_tick(hard, now);
    } else if now < archive {
        s.phase = Phase::HardLocked;
        s.notices.push(Notice {
            kind: NoticeKind::HardLocked,
            message: "Your trial has ended and this workspace is read-only. Choose a plan to continue.".into(),
            at: hard,
            dismissible: false,
            days_left: 0,
        });
        s.next_change = Some(archive);
    } else {
        s.phase = Phase::Archived;
        s.notices.push(archived_notice(archive));
    }
    s
}

impl LifecycleState {
    pub fn active() -> LifecycleState {
        LifecycleState {
            phase: Phase::Active,
            trial_start: None,
            trial_end: None,
            days_left: None,
            soft_lock_at: None,
            hard_lock_at: None,
            archive_at: None,
            notices: Vec::new(),
            next_change: None,
        }
    }

    /// Whether the product-led trial still grants its plan (until hard lock).
    pub fn trial_grants_plan(&self) -> bool {
        matches!(self.phase, Phase::Trialing | Phase::TrialExpired)
    }

    pub fn summary(&self, now: UnixTime) -> String {
        match self.phase {
            Phase::Active => "active".into(),
            Phase::PastDue => "payment past due: allowed, with a notice".into(),
            Phase::Trialing => match self.trial_end {
                Some(end) => format!("trialing, {} day(s) left", days_left(end, now)),
                None => "trialing".into(),
            },
            Phase::TrialExpired => "trial expired (soft lock): allowed, with a dismissible notice".into(),
            Phase::HardLocked => "hard locked: reads allowed, writes denied".into(),
            Phase::Archived => "archived: everything denied".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy { trial_plan: Some("premium".into()), ..Policy::default() }
    }

    #[test]
    fn product_trial_timeline() {
        let start = 1_000_000;
        let end = start + 14 * DAY;
        let at = |d: i64| product_trial(&policy(), start, end, start + d * DAY);
        assert_eq!(at(0).phase, Phase::Trialing);
        assert!(at(0).notices.is_empty());
        assert_eq!(at(0).days_left, Some(14));
        assert_eq!(at(7).notices[0].kind, NoticeKind::TrialEnding);
        assert_eq!(at(7).notices[0].days_left, 7);
        assert_eq!(at(11).notices[0].days_left, 3);
        assert_eq!(at(14).phase, Phase::TrialExpired);
        assert_eq!(at(21).phase, Phase::HardLocked);
        assert_eq!(at(43).phase, Phase::HardLocked);
        assert_eq!(at(44).phase, Phase::Archived);
        assert_eq!(at(44).next_change, None);
    }

    #[test]
    fn next_change_is_the_next_threshold() {
        let end = 100 * DAY;
        let s = product_trial(&policy(), 86 * DAY, end, end - 7 * DAY - 5);
        assert!(s.notices.is_empty());
        assert_eq!(s.next_change, Some(end - 7 * DAY));
        let s = product_trial(&policy(), 86 * DAY, end, end - 7 * DAY);
        assert_eq!(s.notices.len(), 1);
        assert_eq!(s.next_change, Some(end - 6 * DAY));
    }
}
