//! The one clock. Every read of wall-clock or monotonic time in the server goes through here —
//! clippy's `disallowed-methods` (see `clippy.toml`) refuses `SystemTime::now`, `Instant::now`
//! and `Utc::now` everywhere else — so the core only ever sees time as an argument, and a test
//! can tell exactly where "now" comes from.
//!
//! **Test/debug only:** `serve --clock-offset-file PATH` moves this clock's "now" (the tenant
//! timeline: decisions, changes, lifecycle notices) by the whole seconds written in that file,
//! re-read every 100 ms ([`follow_offset_file`]), so an end-to-end test can walk a 14-day trial
//! in seconds. Off by default (offset 0); the cost on the hot path is one relaxed atomic load.
//! [`host_unix_now`]/[`host_unix_millis`] are never offset: they check and stamp what another
//! machine signs or checks against its own clock (Stripe's and our webhook signatures) and
//! schedule network retries.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::tenant::UnixTime;

/// Seconds added to the host clock (test/debug only; see the module doc).
static OFFSET: AtomicI64 = AtomicI64::new(0);
static JUMPS: Notify = Notify::const_new();

/// Wall-clock unix seconds: the "now" every decision and every change is made at.
pub fn unix_now() -> UnixTime {
    let host =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    host.saturating_add(OFFSET.load(Ordering::Relaxed))
}

/// Wall-clock unix seconds with a fraction: cache expiry is computed to the sub-second.
pub fn unix_now_f64() -> f64 {
    let host = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    host + OFFSET.load(Ordering::Relaxed) as f64
}

/// The host's unix seconds, never offset: for timestamps another machine signed (Stripe).
pub fn host_unix_now() -> UnixTime {
    host_unix_millis() / 1000
}

/// The host's unix milliseconds, never offset.
pub fn host_unix_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Woken (every waiter) whenever the offset changes: whoever sleeps until an instant of
/// [`unix_now`] must compute its sleep again.
pub fn jumps() -> &'static Notify {
    &JUMPS
}

/// Set the offset (seconds); true if it changed.
pub fn set_offset(seconds: i64) -> bool {
    let changed = OFFSET.swap(seconds, Ordering::Relaxed) != seconds;
    if changed {
        JUMPS.notify_waiters();
    }
    changed
}

/// Follow an offset file (test/debug only): whole seconds, re-read every 100 ms; a missing or
/// unreadable file means 0. `on_jump` runs after each change (the caller drops its caches).
pub async fn follow_offset_file(
    path: PathBuf,
    on_jump: impl Fn() + Send + 'static,
    mut stop: crate::shutdown::Shutdown,
) {
    loop {
        let seconds =
            tokio::fs::read_to_string(&path).await.ok().and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0);
        if set_offset(seconds) {
            tracing::warn!(seconds, "clock offset changed (test/debug --clock-offset-file)");
            on_jump();
        }
        tokio::select! {
            _ = stop.fired() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Wall-clock unix nanoseconds (distinguishes one process run from another).
pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A monotonic instant, for measuring how long something took.
pub fn monotonic() -> Instant {
    Instant::now()
}
