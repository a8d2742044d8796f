//! Usage periods and limit arithmetic for metered features (pure; shared by `decide` and the
//! `RecordUsage` path so that both use one definition of "fits").

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::catalog::{Catalog, FeatureIdx, FeatureKind, Period, Value};
use crate::command::{Invalid, invalid, quote, text};
use crate::tenant::UnixTime;

/// The usage period containing `now`: `[start, end)`; `end` is `None` for `never`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsagePeriod {
    pub start: UnixTime,
    pub end: Option<UnixTime>,
}

fn month_start(year: i32, month: u32) -> UnixTime {
    Utc.with_ymd_and_hms(year, month, 1, 0, 0, 0).single().map_or(0, |d| d.timestamp())
}

/// Calendar periods are UTC. `billing_period` uses the subscription's current period when there
/// is one (`billing`), else falls back to the calendar month.
pub fn period_at(period: Period, now: UnixTime, billing: Option<(UnixTime, UnixTime)>) -> UsagePeriod {
    let dt: DateTime<Utc> = DateTime::from_timestamp(now, 0).unwrap_or_default();
    let month = || {
        let (y, m) = (dt.year(), dt.month());
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        UsagePeriod { start: month_start(y, m), end: Some(month_start(ny, nm)) }
    };
    match period {
        Period::Month => month(),
        Period::Year => UsagePeriod { start: month_start(dt.year(), 1), end: Some(month_start(dt.year() + 1, 1)) },
        Period::BillingPeriod => match billing {
            Some((s, e)) if s <= now && now < e => UsagePeriod { start: s, end: Some(e) },
            _ => month(),
        },
        Period::Never => UsagePeriod { start: 0, end: None },
    }
}

/// Whether `used + quantity` stays within `limit`. Overflow never fits.
pub fn fits(limit: Value, used: i64, quantity: i64) -> bool {
    match limit {
        Value::Unlimited => true,
        Value::Number(l) => used.checked_add(quantity).is_some_and(|total| total <= l),
        Value::Bool(b) => b,
    }
}

/// What is left under `limit` after `used`; `None` when unlimited.
pub fn remaining(limit: Value, used: i64) -> Option<i64> {
    match limit {
        Value::Number(l) => Some(l.saturating_sub(used).max(0)),
        _ => None,
    }
}

/// How a report changes the counter: counters take increments, gauges take absolute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageMode {
    Delta,
    Set,
}

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// Whether a usage report may be recorded at all: a known metered feature, the mode its kind
/// takes, a non-negative value, and an idempotency key (required for increments, which a retry
/// would otherwise count twice). Returns the feature's index.
pub fn validate_report(
    catalog: &Catalog,
    feature: &str,
    mode: UsageMode,
    value: i64,
    idempotency_key: &str,
) -> Result<FeatureIdx, Invalid> {
    let fi = catalog
        .feature_idx(feature)
        .ok_or_else(|| invalid("feature", format!("unknown feature {}", quote(feature))))?;
    let kind = catalog.features[fi].kind;
    match (kind, mode) {
        (FeatureKind::Boolean | FeatureKind::Config, _) => {
            let kind = kind.name();
            return Err(invalid(
                "feature",
                format!("`{feature}` is a {kind} feature; only gauges and counters take usage"),
            ));
        }
        (FeatureKind::Counter(_), UsageMode::Set) => {
            return Err(invalid("mode", format!("`{feature}` is a counter: report DELTA, not SET")));
        }
        _ => {}
    }
    if value < 0 {
        return Err(invalid("value", "must not be negative"));
    }
    text("idempotency_key", idempotency_key)?;
    if idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(invalid("idempotency_key", format!("at most {MAX_IDEMPOTENCY_KEY_LEN} bytes")));
    }
    if mode == UsageMode::Delta && idempotency_key.is_empty() {
        return Err(invalid("idempotency_key", "required for DELTA reports"));
    }
    Ok(fi)
}

/// One usage counter: the period it counts and what was used in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counter {
    pub period_start: UnixTime,
    pub used: i64,
}

impl Counter {
    /// What the counter says about the period starting at `period_start` (an older period's
    /// count is 0 in a newer one).
    pub fn used_in(current: Option<Counter>, period_start: UnixTime) -> i64 {
        current.filter(|c| c.period_start >= period_start).map_or(0, |c| c.used)
    }
}

/// What a report does to a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterUpdate {
    /// The counter's next value.
    Applied(Counter),
    /// Over the enforced limit: the counter stays; `used` is its value in the report's period.
    Refused { used: i64 },
    /// The sum would not fit the counter.
    Overflow,
}

/// The counter rule for a report of `value` in the period starting at `period_start`, with the
/// enforced `limit` (`None`: not enforced or unlimited). A newer period starts the count afresh;
/// an increment applies only if the total stays within the limit; a gauge's value replaces the
/// count. The store runs this very rule as one conditional statement — the only domain rule in
/// SQL, because only there is it atomic across concurrent replicas — and the store conformance
/// suite holds the two to the same cases.
pub fn apply_report(
    current: Option<Counter>,
    mode: UsageMode,
    value: i64,
    period_start: UnixTime,
    limit: Option<i64>,
) -> CounterUpdate {
    let used = Counter::used_in(current, period_start);
    if limit.is_some_and(|l| value > l) {
        return CounterUpdate::Refused { used };
    }
    let fresh = Counter { period_start, used: value };
    let next = match (mode, current) {
        (UsageMode::Set, _) | (UsageMode::Delta, None) => Some(fresh),
        (UsageMode::Delta, Some(c)) if c.period_start < period_start => Some(fresh),
        (UsageMode::Delta, Some(c)) => c
            .used
            .checked_add(value)
            .filter(|&total| total <= limit.unwrap_or(i64::MAX))
            .map(|used| Counter { period_start: c.period_start, used }),
    };
    match next {
        Some(c) => CounterUpdate::Applied(c),
        None if used.checked_add(value).is_none() => CounterUpdate::Overflow,
        None => CounterUpdate::Refused { used },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_rule() {
        let c = |period_start, used| Some(Counter { period_start, used });
        use CounterUpdate::*;
        assert_eq!(apply_report(None, UsageMode::Delta, 3, 10, None), Applied(Counter { period_start: 10, used: 3 }));
        assert_eq!(apply_report(c(10, 3), UsageMode::Delta, 3, 10, Some(5)), Refused { used: 3 });
        assert_eq!(
            apply_report(c(10, 3), UsageMode::Delta, 2, 10, Some(5)),
            Applied(Counter { period_start: 10, used: 5 })
        );
        assert_eq!(
            apply_report(c(5, 9), UsageMode::Delta, 2, 10, Some(5)),
            Applied(Counter { period_start: 10, used: 2 })
        );
        assert_eq!(
            apply_report(c(5, 9), UsageMode::Delta, 6, 10, Some(5)),
            Refused { used: 0 },
            "over the limit alone"
        );
        assert_eq!(apply_report(c(10, i64::MAX), UsageMode::Delta, 1, 10, None), Overflow);
        assert_eq!(
            apply_report(c(10, 7), UsageMode::Set, 2, 10, Some(5)),
            Applied(Counter { period_start: 10, used: 2 })
        );
    }

    #[test]
    fn calendar_periods() {
        // 2026-11-22T02:00:00Z
        let now = 1_795_312_800;
        let m = period_at(Period::Month, now, None);
        assert_eq!(m.start, 1_793_491_200); // 2026-11-01
        assert_eq!(m.end, Some(1_796_083_200)); // 2026-12-01
        let y = period_at(Period::Year, now, None);
        assert_eq!(y.end, Some(1_798_761_600)); // 2027-01-01
        let dec = period_at(Period::Month, 1_796_083_200 + 5, None);
        assert_eq!(dec.end, Some(1_798_761_600));
        assert_eq!(period_at(Period::Never, now, None), UsagePeriod { start: 0, end: None });
        let b = period_at(Period::BillingPeriod, now, Some((now - 10, now + 10)));
        assert_eq!(b, UsagePeriod { start: now - 10, end: Some(now + 10) });
    }

    #[test]
    fn fits_and_remaining() {
        assert!(fits(Value::Number(10), 9, 1));
        assert!(!fits(Value::Number(10), 10, 1));
        assert!(!fits(Value::Number(10), i64::MAX, 1));
        assert!(fits(Value::Unlimited, i64::MAX, 1));
        assert_eq!(remaining(Value::Number(10), 12), Some(0));
        assert_eq!(remaining(Value::Unlimited, 12), None);
    }
}
