//! Usage periods and limit arithmetic for metered features (pure; shared by `decide` and the
//! `RecordUsage` path so that both use one definition of "fits").

use chrono::{DateTime, Datelike, TimeZone, Utc};

use crate::catalog::{Period, Value};
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

#[cfg(test)]
mod tests {
    use super::*;

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
