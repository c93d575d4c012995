//! Prometheus metrics of the admission webhook. The webhook runs inside the
//! operator's process, so these are registered in the operator's registry
//! (under `grpc_balancer_operator_webhook_…`) and served on its `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What became of one request to `/mutate`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed with the sidecar patch.
    Injected,
    /// Allowed unchanged: not annotated, already injected, or not a create.
    Skipped,
    /// Denied, with the reason in the answer (a bad per-pod override, say).
    Denied,
    /// Not a usable AdmissionReview v1: HTTP 400.
    Malformed,
    /// A body over the size limit: HTTP 413.
    TooLarge,
}

impl Outcome {
    /// Every outcome, in declaration order.
    pub const ALL: &'static [Outcome] = &[
        Outcome::Injected,
        Outcome::Skipped,
        Outcome::Denied,
        Outcome::Malformed,
        Outcome::TooLarge,
    ];

    /// The label value, in the snake case Prometheus label values use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Injected => "injected",
            Outcome::Skipped => "skipped",
            Outcome::Denied => "denied",
            Outcome::Malformed => "malformed",
            Outcome::TooLarge => "too_large",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

/// Every metric of the webhook; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct WebhookMetrics {
    reviews: Family<OutcomeLabels, Counter>,
    duration: Histogram,
    tls_handshake_failures: Counter,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        WebhookMetrics {
            reviews: Family::default(),
            // 50 µs … ~0.8 s: a review takes well under a millisecond; the
            // apiserver gives up at the webhook's timeoutSeconds.
            duration: Histogram::new(exponential_buckets(0.000_05, 2.0, 15)),
            tls_handshake_failures: Counter::default(),
        }
    }
}

impl WebhookMetrics {
    /// Adds the metrics to `registry` under the `webhook` prefix.
    pub fn register(&self, registry: &mut Registry) {
        // Every outcome exists from the start, at 0 (see the operator's
        // metrics for why).
        for &outcome in Outcome::ALL {
            let _ = self.reviews.get_or_create(&OutcomeLabels { outcome });
        }
        let sub = registry.sub_registry_with_prefix("webhook");
        sub.register(
            "admission_reviews",
            "Requests to /mutate, by outcome (injected, skipped, denied, malformed, too_large)",
            self.reviews.clone(),
        );
        sub.register(
            "admission_review_duration_seconds",
            "Time to read a review's body, decide and encode the answer (TLS and HTTP framing excluded)",
            self.duration.clone(),
        );
        sub.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out (a caBundle that does not match shows here)",
            self.tls_handshake_failures.clone(),
        );
    }

    pub fn observe(&self, outcome: Outcome, took: std::time::Duration) {
        self.reviews.get_or_create(&OutcomeLabels { outcome }).inc();
        self.duration.observe(took.as_secs_f64());
    }

    pub fn tls_handshake_failed(&self) {
        self.tls_handshake_failures.inc();
    }

    /// Reviews answered with `outcome` so far.
    pub fn reviews(&self, outcome: Outcome) -> u64 {
        self.reviews.get_or_create(&OutcomeLabels { outcome }).get()
    }

    /// Failed TLS handshakes so far.
    pub fn tls_handshake_failures(&self) -> u64 {
        self.tls_handshake_failures.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_names_and_labels() {
        let metrics = WebhookMetrics::default();
        let mut registry = Registry::with_prefix("grpc_balancer_operator");
        metrics.register(&mut registry);
        metrics.observe(Outcome::TooLarge, std::time::Duration::from_micros(80));
        metrics.tls_handshake_failed();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "grpc_balancer_operator_webhook_admission_reviews_total{outcome=\"too_large\"} 1",
            "grpc_balancer_operator_webhook_admission_review_duration_seconds_count 1",
            "grpc_balancer_operator_webhook_tls_handshake_failures_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
