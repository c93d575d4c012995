//! The retry delay after failures: exponential per key, 0.5 s doubling up
//! to 5 min, forgotten on the first success. The controller keys it by
//! balancing, the ConfigMap renderer by namespace.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

/// Consecutive failures per key.
pub struct Failures<K> {
    counts: Mutex<HashMap<K, u32>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Failures {
            counts: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> Failures<K> {
    /// Counts one more failure of `key`; returns how long to wait before
    /// the next try.
    pub fn failed(&self, key: K) -> Duration {
        let failures = match self.counts.lock() {
            Ok(mut counts) => {
                let n = counts.entry(key).or_default();
                *n = n.saturating_add(1);
                *n
            }
            Err(_) => 1,
        };
        backoff(failures)
    }

    /// `key` succeeded: its next failure starts the back-off anew.
    pub fn succeeded(&self, key: &K) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }
}

/// The delay after `failures` consecutive failures.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(10);
    Duration::from_millis(500u64 << exp).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_five_minutes_and_restarts_after_a_success() {
        let failures = Failures::default();
        let delays: Vec<_> = (0..12).map(|_| failures.failed("a")).collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[1], Duration::from_secs(1));
        assert_eq!(delays[2], Duration::from_secs(2));
        assert_eq!(delays[11], Duration::from_secs(300));
        // Another key has its own count.
        assert_eq!(failures.failed("b"), Duration::from_millis(500));
        failures.succeeded(&"a");
        assert_eq!(failures.failed("a"), Duration::from_millis(500));
    }
}
