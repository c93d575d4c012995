//! Choosing an endpoint for a call: the five policies over one subset's
//! endpoint set. Every pick reads atomics only. The policies see endpoints
//! through [`Candidate`], so the tests pick among fakes.

mod p2c;
mod ring_hash;
mod round_robin;

use std::net::SocketAddr;
use std::sync::Arc;

use grpc_balancer_crds::config::PolicyKind;

use crate::endpoint::Endpoint;
use crate::util::random_below;

pub use ring_hash::Ring;

/// What a policy reads of an endpoint.
pub trait Candidate {
    /// Whether the balancer may pick it now (connected, healthy, not ejected).
    fn is_available(&self) -> bool;
    /// Calls in flight: least_request's cost.
    fn in_flight(&self) -> u32;
    /// The peak-EWMA cost.
    fn ewma_cost(&self) -> f64;
    /// Its identity on the hash ring.
    fn addr(&self) -> SocketAddr;
}

impl Candidate for Endpoint {
    fn is_available(&self) -> bool {
        Endpoint::is_available(self)
    }

    fn in_flight(&self) -> u32 {
        Endpoint::in_flight(self)
    }

    fn ewma_cost(&self) -> f64 {
        Endpoint::ewma_cost(self)
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The endpoints of a subset as discovery last reported them (sorted by
/// address), with the hash ring when the policy needs one.
pub struct EndpointSet<C = Endpoint> {
    pub endpoints: Vec<Arc<C>>,
    ring: Option<Ring>,
}

impl<C> Default for EndpointSet<C> {
    fn default() -> Self {
        EndpointSet {
            endpoints: Vec::new(),
            ring: None,
        }
    }
}

impl<C: Candidate> EndpointSet<C> {
    pub fn new(endpoints: Vec<Arc<C>>, policy: PolicyKind) -> Self {
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
    pub fn pick<'a, C: Candidate>(
        &self,
        set: &'a EndpointSet<C>,
        hash: Option<u64>,
        avoid: Option<&Arc<C>>,
    ) -> Option<&'a Arc<C>> {
        let eps = &set.endpoints;
        if eps.is_empty() {
            return None;
        }
        let usable = |e: &Arc<C>| e.is_available() && avoid.is_none_or(|a| !Arc::ptr_eq(a, e));
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
fn scan_from<C>(eps: &[Arc<C>], start: usize, usable: impl Fn(&Arc<C>) -> bool) -> Option<&Arc<C>> {
    let n = eps.len();
    (0..n).map(|i| &eps[(start + i) % n]).find(|e| usable(e))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;

    /// An endpoint as a policy sees it, with every reading set by the test.
    struct Fake {
        port: u16,
        available: AtomicBool,
        in_flight: AtomicU32,
        cost: f64,
    }

    impl Candidate for Fake {
        fn is_available(&self) -> bool {
            self.available.load(Ordering::Relaxed)
        }

        fn in_flight(&self) -> u32 {
            self.in_flight.load(Ordering::Relaxed)
        }

        fn ewma_cost(&self) -> f64 {
            self.cost
        }

        fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], self.port))
        }
    }

    fn fake(port: u16, available: bool, in_flight: u32, cost: f64) -> Arc<Fake> {
        Arc::new(Fake {
            port,
            available: AtomicBool::new(available),
            in_flight: AtomicU32::new(in_flight),
            cost,
        })
    }

    fn ports(picked: impl IntoIterator<Item = Arc<Fake>>) -> Vec<u16> {
        picked.into_iter().map(|f| f.port).collect()
    }

    fn pick_many(policy: &Policy, set: &EndpointSet<Fake>, hash: Option<u64>) -> Vec<u16> {
        ports((0..200).map(|_| policy.pick(set, hash, None).expect("a pick").clone()))
    }

    const ALL: [PolicyKind; 5] = [
        PolicyKind::RoundRobin,
        PolicyKind::LeastRequest,
        PolicyKind::PeakEwma,
        PolicyKind::Random,
        PolicyKind::RingHash,
    ];

    #[test]
    fn no_policy_picks_from_an_empty_set_or_an_unavailable_endpoint() {
        for kind in ALL {
            let empty = EndpointSet::<Fake>::new(Vec::new(), kind);
            assert!(Policy::new(kind).pick(&empty, Some(7), None).is_none());
            let set = EndpointSet::new(
                vec![
                    fake(1, false, 0, 1.0),
                    fake(2, true, 0, 1.0),
                    fake(3, false, 0, 1.0),
                ],
                kind,
            );
            let picked = pick_many(&Policy::new(kind), &set, Some(7));
            assert!(picked.iter().all(|p| *p == 2), "{kind:?}: {picked:?}");
            let none = EndpointSet::new(vec![fake(1, false, 0, 1.0)], kind);
            assert!(Policy::new(kind).pick(&none, Some(7), None).is_none());
        }
    }

    #[test]
    fn round_robin_takes_turns() {
        let set = EndpointSet::new(
            vec![
                fake(1, true, 0, 1.0),
                fake(2, true, 0, 1.0),
                fake(3, true, 0, 1.0),
            ],
            PolicyKind::RoundRobin,
        );
        let policy = Policy::new(PolicyKind::RoundRobin);
        let picked = ports((0..6).map(|_| policy.pick(&set, None, None).expect("a pick").clone()));
        assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_request_and_peak_ewma_take_the_cheaper_of_two() {
        // With two endpoints both are always drawn, so the cheaper one wins.
        let busy_fast = || vec![fake(1, true, 5, 1.0), fake(2, true, 0, 9.0)];
        let lr = EndpointSet::new(busy_fast(), PolicyKind::LeastRequest);
        let picked = pick_many(&Policy::new(PolicyKind::LeastRequest), &lr, None);
        assert!(picked.iter().all(|p| *p == 2), "{picked:?}");
        let ewma = EndpointSet::new(busy_fast(), PolicyKind::PeakEwma);
        let picked = pick_many(&Policy::new(PolicyKind::PeakEwma), &ewma, None);
        assert!(picked.iter().all(|p| *p == 1), "{picked:?}");
    }

    #[test]
    fn random_reaches_every_available_endpoint() {
        let set = EndpointSet::new(
            vec![
                fake(1, true, 0, 1.0),
                fake(2, true, 0, 1.0),
                fake(3, true, 0, 1.0),
            ],
            PolicyKind::Random,
        );
        let mut picked = pick_many(&Policy::new(PolicyKind::Random), &set, None);
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked, [1, 2, 3]);
    }

    #[test]
    fn ring_hash_keeps_a_key_on_its_endpoint_and_moves_it_only_when_unavailable() {
        let eps: Vec<_> = (1..=4).map(|p| fake(p, true, 0, 1.0)).collect();
        let set = EndpointSet::new(eps.clone(), PolicyKind::RingHash);
        let policy = Policy::new(PolicyKind::RingHash);
        for key in [1u64, 99, 12345, u64::MAX / 3] {
            let picked = pick_many(&policy, &set, Some(key));
            let home = picked[0];
            assert!(picked.iter().all(|p| *p == home), "key {key}: {picked:?}");
            let home_ep = eps.iter().find(|e| e.port == home).expect("home");
            home_ep.available.store(false, Ordering::Relaxed);
            let moved = pick_many(&policy, &set, Some(key));
            assert!(
                moved.iter().all(|p| *p == moved[0] && *p != home),
                "{moved:?}"
            );
            home_ep.available.store(true, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_retry_avoids_its_endpoint_unless_it_is_the_only_one() {
        for kind in ALL {
            let eps = vec![fake(1, true, 0, 1.0), fake(2, true, 0, 1.0)];
            let set = EndpointSet::new(eps.clone(), kind);
            let policy = Policy::new(kind);
            for _ in 0..50 {
                let picked = policy.pick(&set, Some(7), Some(&eps[0])).expect("a pick");
                assert_eq!(picked.port, 2, "{kind:?}");
            }
            eps[1].available.store(false, Ordering::Relaxed);
            let picked = policy.pick(&set, Some(7), Some(&eps[0])).expect("a pick");
            assert_eq!(picked.port, 1, "{kind:?}: the avoided one beats failing");
        }
    }
}
