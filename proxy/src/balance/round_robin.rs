//! Round robin: a shared cursor, skipping endpoints that are not available.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::endpoint::Endpoint;

#[derive(Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn pick<'a>(
        &self,
        eps: &'a [Arc<Endpoint>],
        usable: impl Fn(&Arc<Endpoint>) -> bool,
    ) -> Option<&'a Arc<Endpoint>> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % eps.len();
        super::scan_from(eps, start, usable)
    }
}
