//! Choosing an endpoint for a call: the five policies over one subset's
//! endpoint set. Every pick reads atomics only.

mod p2c;
mod ring_hash;
mod round_robin;

use std::sync::Arc;

use grpc_balancer_crds::config::PolicyKind;

use crate::endpoint::Endpoint;
use crate::util::random_below;

pub use ring_hash::Ring;

/// The endpoints of a subset as discovery last reported them (sorted by
/// address), with the hash ring when the policy needs one.
#[derive(Default)]
pub struct EndpointSet {
    pub endpoints: Vec<Arc<Endpoint>>,
    ring: Option<Ring>,
}

impl EndpointSet {
    pub fn new(endpoints: Vec<Arc<Endpoint>>, policy: PolicyKind) -> Self {
        let ring = (policy == PolicyKind::RingHash).then(|| Ring::build(&endpoints));
        EndpointSet { endpoints, ring }
    }
}

/// A policy with its state (the round-robin cursor).
pub enum Policy {
    RoundRobin(round_robin::RoundRobin),
    LeastRequest,
    PeakEwma,
    Random,
    RingHash,
}

impl Policy {
    pub fn new(kind: PolicyKind) -> Self {
        match kind {
            PolicyKind::RoundRobin => Policy::RoundRobin(round_robin::RoundRobin::default()),
            PolicyKind::LeastRequest => Policy::LeastRequest,
            PolicyKind::PeakEwma => Policy::PeakEwma,
            PolicyKind::Random => Policy::Random,
            PolicyKind::RingHash => Policy::RingHash,
        }
    }

    /// Picks an available endpoint, preferring any other than `avoid` (the
    /// one a retry comes from). `hash` is the ring-hash key of the call.
    pub fn pick<'a>(
        &self,
        set: &'a EndpointSet,
        hash: Option<u64>,
        avoid: Option<&Arc<Endpoint>>,
    ) -> Option<&'a Arc<Endpoint>> {
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let usable =
            |e: &Arc<Endpoint>| e.is_available() && avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
        let picked = match self {
            Policy::RoundRobin(rr) => rr.pick(eps, usable),
            Policy::LeastRequest => p2c::pick(eps, usable, |e| f64::from(e.in_flight())),
            Policy::PeakEwma => p2c::pick(eps, usable, |e| e.ewma_cost()),
            Policy::Random => scan_from(eps, random_below(eps.len()), usable),
            Policy::RingHash => match (&set.ring, hash) {
                (Some(ring), Some(h)) => ring.pick(eps, h, usable),
                _ => scan_from(eps, random_below(eps.len()), usable),
            },
        };
        // Retrying on the same endpoint beats failing when it is the only one.
        picked.or_else(|| {
            avoid
                .filter(|a| a.is_available())
                .and_then(|a| eps.iter().find(|e| Arc::ptr_eq(e, a)))
        })
    }
}

/// The first usable endpoint at or after `start`, wrapping around.
fn scan_from(
    eps: &[Arc<Endpoint>],
    start: usize,
    usable: impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&Arc<Endpoint>> {
    let n = eps.len();
    (0..n).map(|i| &eps[(start + i) % n]).find(|e| usable(e))
}
