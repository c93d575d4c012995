//! Round robin: a shared cursor, skipping endpoints that are not available.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick<'a, C>(
        &self,
        eps: &'a [Arc<C>],
        usable: impl Fn(&Arc<C>) -> bool,
    ) -> Option<&'a Arc<C>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        super::scan_from(eps, start, usable)
    }
}
