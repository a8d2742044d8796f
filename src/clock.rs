//! The one clock. Every read of wall-clock or monotonic time in the server goes through here —
//! clippy's `disallowed-methods` (see `clippy.toml`) refuses `SystemTime::now`, `Instant::now`
//! and `Utc::now` everywhere else — so the core only ever sees time as an argument, and a test
//! can tell exactly where "now" comes from.
#![allow(clippy::disallowed_methods)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::tenant::UnixTime;

/// Wall-clock unix seconds: the "now" every decision and every change is made at.
pub fn unix_now() -> UnixTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Wall-clock unix seconds with a fraction: cache expiry is computed to the sub-second.
pub fn unix_now_f64() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Wall-clock unix nanoseconds (distinguishes one process run from another).
pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A monotonic instant, for measuring how long something took.
pub fn monotonic() -> Instant {
    Instant::now()
}
