//! Ketama-style consistent hashing on a request header: each endpoint owns
//! many points on a ring; a call goes to the first usable endpoint at or after
//! its key's hash. Adding or removing one endpoint moves only its share.

use std::sync::Arc;

use super::Candidate;
use crate::util::stable_hash;

/// Points per endpoint: enough for an even spread over a handful of
/// endpoints, small enough to rebuild on every discovery change.
const POINTS_PER_ENDPOINT: usize = 160;

pub struct Ring {
    /// (hash, index into the endpoint list), sorted by hash.
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub fn build<C: Candidate>(eps: &[Arc<C>]) -> Ring {
        let mut points = Vec::with_capacity(eps.len() * POINTS_PER_ENDPOINT);
        for (i, ep) in eps.iter().enumerate() {
            let addr = ep.addr().to_string();
            for p in 0..POINTS_PER_ENDPOINT {
                let key = format!("{addr}-{p}");
                points.push((stable_hash(key.as_bytes()), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    pub fn pick<'a, C>(
        &self,
        eps: &'a [Arc<C>],
        hash: u64,
        usable: impl Fn(&Arc<C>) -> bool,
    ) -> Option<&'a Arc<C>> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < hash);
        (0..n)
            .map(|k| self.points[(start + k) % n].1 as usize)
            .filter_map(|i| eps.get(i))
            .find(|e| usable(e))
    }
}
