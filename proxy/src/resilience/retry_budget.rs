//! A retry budget in the style of Linkerd and Envoy: every original call
//! deposits `percent`% of a token, a retry withdraws a whole one, and
//! `min_per_second` retries are always allowed so a quiet proxy can still
//! retry. Lock-free: two atomics on the call path.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::util::now_nanos;

/// A token is 1000 milli-tokens, so 1% deposits stay integral.
const TOKEN: i64 = 1000;
/// Deposits stop accumulating here so a long quiet period cannot bank an
/// unbounded burst of retries.
const MAX_BALANCE: i64 = 1000 * TOKEN;

pub struct RetryBudget {
    deposit: i64,
    min_per_second: u32,
    balance: AtomicI64,
    second: AtomicU64,
    used_this_second: AtomicU32,
}

impl RetryBudget {
    pub fn new(percent: u32, min_per_second: u32) -> Self {
        RetryBudget {
            deposit: i64::from(percent) * TOKEN / 100,
            min_per_second,
            balance: AtomicI64::new(0),
            second: AtomicU64::new(0),
            used_this_second: AtomicU32::new(0),
        }
    }

    /// An original call arrived.
    pub fn deposit(&self) {
        if self.deposit == 0 {
            return;
        }
        let after = self.balance.fetch_add(self.deposit, Ordering::Relaxed) + self.deposit;
        if after > MAX_BALANCE {
            self.balance.store(MAX_BALANCE, Ordering::Relaxed);
        }
    }

    /// Whether one retry may go ahead (and spends it).
    pub fn withdraw(&self) -> bool {
        let second = now_nanos() / 1_000_000_000;
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.used_this_second.store(0, Ordering::Relaxed);
        }
        if self.used_this_second.fetch_add(1, Ordering::Relaxed) < self.min_per_second {
            return true;
        }
        let mut current = self.balance.load(Ordering::Relaxed);
        while current >= TOKEN {
            match self.balance.compare_exchange_weak(
                current,
                current - TOKEN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_allows_the_floor_then_the_percentage() {
        let b = RetryBudget::new(20, 3);
        // The floor: 3 per second with no traffic at all.
        assert!(b.withdraw() && b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
        // 10 calls at 20% buy 2 retries.
        for _ in 0..10 {
            b.deposit();
        }
        assert!(b.withdraw() && b.withdraw());
        assert!(!b.withdraw());
        // A new second refills the floor.
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(b.withdraw());
    }
}
