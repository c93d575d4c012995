//! The figures of each phase, printed and written as JSON for the test that
//! checks them (scripts/test-demo).

use std::collections::BTreeMap;

use grpc_balancer_greeter::LoadReport;
use serde::Serialize;

/// One phase's calls, per backend and per version.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phase {
    pub calls: u64,
    pub ok: u64,
    pub failed: u64,
    pub by_backend: BTreeMap<String, u64>,
    pub by_version: BTreeMap<String, u64>,
    /// Failed calls by gRPC status name.
    pub failures: BTreeMap<String, u64>,
    /// Streams answered by more than one backend (must be 0).
    pub split_streams: u64,
    pub elapsed_ms: u64,
}

impl Phase {
    /// Adds a load run's figures; `version_of` maps a backend name to its version.
    pub fn add(&mut self, report: &LoadReport, version_of: impl Fn(&str) -> String) {
        self.calls += report.calls;
        self.ok += report.ok;
        self.failed += report.failed;
        self.split_streams += report.split_streams;
        self.elapsed_ms += report.elapsed_ms;
        for (backend, calls) in &report.by_backend {
            *self.by_backend.entry(backend.clone()).or_default() += calls;
            *self.by_version.entry(version_of(backend)).or_default() += calls;
        }
        for (code, calls) in &report.failures {
            *self.failures.entry(code.clone()).or_default() += calls;
        }
    }

    pub fn from_report(report: &LoadReport, version_of: impl Fn(&str) -> String) -> Phase {
        let mut phase = Phase::default();
        phase.add(report, version_of);
        phase
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Phases in the order they ran: direct, proxy, stream, scale_out, scale_in.
    pub phases: BTreeMap<String, Phase>,
    /// The weights the `GrpcBalancing` asked for, by version.
    pub weights: BTreeMap<String, u32>,
    /// The backend added in the scale-out phase, and how long after its pod
    /// became Ready the proxy sent it a first call.
    pub added_backend: Option<String>,
    pub added_backend_first_call_ms: Option<u64>,
    /// The backend removed in the scale-in phase.
    pub removed_backend: Option<String>,
    /// The sidecar the webhook injected into the client pod.
    pub injected_sidecar: Option<serde_json::Value>,
    pub total_elapsed_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(by_backend: &[(&str, u64)], failed: u64) -> LoadReport {
        let ok: u64 = by_backend.iter().map(|(_, n)| n).sum();
        LoadReport {
            calls: ok + failed,
            ok,
            failed,
            by_backend: by_backend
                .iter()
                .map(|(b, n)| (b.to_string(), *n))
                .collect(),
            failures: if failed > 0 {
                BTreeMap::from([("UNAVAILABLE".to_owned(), failed)])
            } else {
                BTreeMap::new()
            },
            elapsed_ms: 10,
            ..LoadReport::default()
        }
    }

    fn version_of(backend: &str) -> String {
        if backend.contains("-v2-") { "v2" } else { "v1" }.to_owned()
    }

    #[test]
    fn phases_add_up_by_backend_and_version() {
        let mut phase =
            Phase::from_report(&report(&[("g-v1-a", 30), ("g-v2-a", 10)], 0), version_of);
        phase.add(&report(&[("g-v1-a", 5), ("g-v1-b", 15)], 2), version_of);
        assert_eq!(phase.calls, 62);
        assert_eq!(phase.ok, 60);
        assert_eq!(phase.failed, 2);
        assert_eq!(phase.by_backend["g-v1-a"], 35);
        assert_eq!(phase.by_version["v1"], 50);
        assert_eq!(phase.by_version["v2"], 10);
        assert_eq!(phase.failures["UNAVAILABLE"], 2);
        assert_eq!(phase.elapsed_ms, 20);
    }

    #[test]
    fn summary_serializes_what_the_test_reads() {
        let mut summary = Summary::default();
        summary.phases.insert(
            "proxy".into(),
            Phase::from_report(&report(&[("g-v1-a", 3)], 0), version_of),
        );
        let json = serde_json::to_value(&summary).expect("serializes");
        assert_eq!(json["phases"]["proxy"]["by_version"]["v1"], 3);
        assert_eq!(json["phases"]["proxy"]["split_streams"], 0);
        assert!(json["added_backend"].is_null());
    }
}
