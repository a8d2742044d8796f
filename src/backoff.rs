//! Reconnect backoff: doubling pauses between a floor and a ceiling, with jitter so that many
//! replicas (or relays) that lost the same database or upstream do not retry in lockstep.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    floor: Duration,
    ceiling: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(floor: Duration, ceiling: Duration) -> Backoff {
        Backoff { floor, ceiling, next: floor }
    }

    /// After a success: the next failure waits the floor again.
    pub fn reset(&mut self) {
        self.next = self.floor;
    }

    /// The pause before the next attempt: "equal jitter" — half the current step, plus a random
    /// part of the other half — then the step doubles, up to the ceiling.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.ceiling);
        let half = step / 2;
        half + half.mul_f64(unit_random())
    }
}

/// The pause before retry number `n` (1-based) of something retried on a schedule rather than
/// in a loop (a webhook delivery, whose attempt count is stored): the same doubling and jitter
/// as [`Backoff::next_delay`].
pub fn nth_delay(floor: Duration, ceiling: Duration, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(32);
    let step = floor.saturating_mul(1u32 << doublings.min(31)).min(ceiling);
    let half = step / 2;
    half + half.mul_f64(unit_random())
}

/// A number in [0, 1): std's per-instance random hash keys are seeded from the OS, which is
/// plenty for spreading retries (no crate needed).
fn unit_random() -> f64 {
    (RandomState::new().hash_one(0u8) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut step = Duration::from_millis(100);
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d >= step / 2 && d <= step, "{d:?} within [{:?}, {step:?}]", step / 2);
            step = (step * 2).min(Duration::from_secs(5));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn nth_delay_follows_the_same_schedule() {
        let (floor, ceiling) = (Duration::from_secs(5), Duration::from_secs(3600));
        let mut step = floor;
        for n in 1..40 {
            let d = nth_delay(floor, ceiling, n);
            assert!(d >= step / 2 && d <= step, "retry {n}: {d:?} within [{:?}, {step:?}]", step / 2);
            step = (step * 2).min(ceiling);
        }
    }
}
