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
