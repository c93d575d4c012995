//! Power of two choices: two distinct random endpoints, the cheaper wins.
//! With `in_flight` as the cost this is least_request; with the peak-EWMA
//! cost it is Linkerd's and Finagle's latency-aware balancer.

use std::sync::Arc;

use super::Candidate;
use crate::util::random_below;

pub fn pick<C: Candidate>(
    eps: &[Arc<C>],
    usable: impl Fn(&Arc<C>) -> bool,
    cost: impl Fn(&C) -> f64,
) -> Option<&Arc<C>> {
    let n = eps.len();
    if n == 1 {
        return eps.first().filter(|e| usable(e));
    }
    let a = random_below(n);
    let mut b = random_below(n - 1);
    if b >= a {
        b += 1;
    }
    let (ea, eb) = (&eps[a], &eps[b]);
    match (usable(ea), usable(eb)) {
        (true, true) => Some(if cost(eb) < cost(ea) { eb } else { ea }),
        (true, false) => Some(ea),
        (false, true) => Some(eb),
        // Both unusable (ejected, connecting): take any usable one.
        (false, false) => super::scan_from(eps, random_below(n), usable),
    }
}
