//! Per-object exponential backoff with jitter for failed reconciles.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const FIRST: Duration = Duration::from_secs(1);
const LIMIT: Duration = Duration::from_secs(300);

/// Failure counts by object; a success forgets the object.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// The delay before the next attempt for `key`, doubling per failure up to five
    /// minutes, with up to 25% jitter so that objects failing together spread out.
    pub fn next(&self, key: &str) -> Duration {
        let attempt = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let count = failures.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        let base = delay_for(attempt);
        base + base.mul_f64(jitter_fraction() * 0.25)
    }

    /// Forgets the failures of `key`.
    pub fn reset(&self, key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(key);
    }
}

/// The delay before attempt `attempt` (1-based), without jitter.
fn delay_for(attempt: u32) -> Duration {
    FIRST
        .checked_mul(1u32 << attempt.saturating_sub(1).min(16))
        .map_or(LIMIT, |delay| delay.min(LIMIT))
}

/// A number in [0, 1) that differs between calls; good enough to spread retries.
fn jitter_fraction() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000) / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_limit() {
        assert_eq!(delay_for(1), Duration::from_secs(1));
        assert_eq!(delay_for(2), Duration::from_secs(2));
        assert_eq!(delay_for(5), Duration::from_secs(16));
        assert_eq!(delay_for(10), LIMIT);
        assert_eq!(delay_for(u32::MAX), LIMIT);
    }

    #[test]
    fn a_success_starts_over() {
        let backoff = Backoff::default();
        backoff.next("a");
        backoff.next("a");
        let third = backoff.next("a");
        assert!(
            third >= Duration::from_secs(4) && third <= Duration::from_secs(5),
            "{third:?}"
        );
        backoff.reset("a");
        assert!(backoff.next("a") < Duration::from_secs(2));
    }
}
