//! Small lock-free helpers shared by the hot path: a monotonic clock that
//! follows tokio's (so paused-time tests drive it) and a per-thread PRNG.

use std::cell::Cell;
use std::sync::OnceLock;

use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the first call in this process, on tokio's clock.
/// Fits timestamps in an `AtomicU64`; never returns 0 so 0 can mean "unset".
pub fn now_nanos() -> u64 {
    nanos_at(Instant::now())
}

/// `t` as [`now_nanos`] would have returned it then, for a caller that
/// already read the clock.
pub fn nanos_at(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| t);
    let nanos = t.saturating_duration_since(epoch).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per thread; good enough to
    // decorrelate balancing choices, which need no cryptographic strength.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish() | 1
}

/// A fast 64-bit pseudo-random number (wyrand).
pub fn random_u64() -> u64 {
    RNG.with(|state| {
        let s = state.get().wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A pseudo-random number in `0..n` (`n > 0`), without modulo bias worth
/// caring about for balancing.
pub fn random_below(n: usize) -> usize {
    ((u128::from(random_u64()) * n as u128) >> 64) as usize
}

/// A pseudo-random float in `[0, 1)`.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Stable 64-bit hash (FNV-1a followed by a SplitMix64 finaliser) used by the
/// ring hash: stable across processes and versions, unlike `DefaultHasher`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_below_stays_in_range_and_spreads() {
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[random_below(4)] += 1;
        }
        for n in seen {
            assert!((800..1200).contains(&n), "{seen:?}");
        }
    }

    #[test]
    fn stable_hash_is_stable() {
        assert_eq!(stable_hash(b"abc"), stable_hash(b"abc"));
        assert_ne!(stable_hash(b"abc"), stable_hash(b"abd"));
    }
}
