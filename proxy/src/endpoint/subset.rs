//! What the endpoints of one subset share: names for logs and metrics, the
//! outlier settings and the ejection budget they draw on, and the wake-ups
//! to discovery (a connection failed) and to waiting calls (one is ready).
//! The balancer creates it per subset; endpoints update it on every outcome,
//! which is why it sits here and not with the balancer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};

use tokio::sync::Notify;

use super::OutlierSettings;
use crate::metrics::{LatencyHistogram, Metrics, SubsetLabels};

/// State shared by the endpoints of one subset.
pub struct SubsetShared {
    pub balancing: Arc<str>,
    pub name: Arc<str>,
    pub outlier: OutlierSettings,
    /// Endpoints currently ejected, bounded by `max_ejection_percent`.
    pub ejected: AtomicU32,
    /// Endpoints currently known by discovery.
    pub size: AtomicU32,
    /// Set once discovery answered at least once (until then calls may wait).
    pub discovered: AtomicBool,
    /// Asks discovery to resolve again now (a connection failed).
    pub refresh_now: Arc<Notify>,
    /// Woken whenever an endpoint of the balancing becomes ready.
    pub ready: Arc<Notify>,
    pub duration: Arc<LatencyHistogram>,
    pub metrics: Metrics,
}

impl SubsetShared {
    pub fn new(
        balancing: &str,
        name: &str,
        outlier: OutlierSettings,
        ready: Arc<Notify>,
        metrics: Metrics,
    ) -> Self {
        let labels = SubsetLabels {
            balancing: balancing.to_owned(),
            subset: name.to_owned(),
        };
        let duration = metrics.call_duration.get_or_create_owned(&labels).0;
        // Exported at 0 before the first ejection: a series born at 1 would
        // hide that ejection from increase() and rate().
        let _ = metrics.ejections.get_or_create(&labels);
        SubsetShared {
            balancing: balancing.into(),
            name: name.into(),
            outlier,
            ejected: AtomicU32::new(0),
            size: AtomicU32::new(0),
            discovered: AtomicBool::new(false),
            refresh_now: Arc::new(Notify::new()),
            ready,
            duration,
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ejection_counter_exists_from_the_subsets_start() {
        let (metrics, registry) = Metrics::new();
        let _shared = SubsetShared::new(
            "b",
            "s",
            OutlierSettings::from(&grpc_balancer_crds::config::OutlierDetection::default()),
            Arc::new(Notify::new()),
            metrics,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        // At 0 before any ejection: increase() then counts the first one.
        assert!(
            text.contains("grpc_balancer_ejections_total{balancing=\"b\",subset=\"s\"} 0"),
            "{text}"
        );
    }
}
