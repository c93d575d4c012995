//! The record of one call on one endpoint: in-flight count, latency sample,
//! status counter, duration and outlier detection, settled exactly once.

use std::net::SocketAddr;
use std::sync::Arc;

use super::Endpoint;
use crate::grpc_status::Code;
use crate::transport::body::CallObserver;
use crate::util::now_nanos;

/// Bookkeeping of one call on one endpoint; settles metrics, the latency
/// estimate and outlier detection exactly once, when dropped.
pub struct CallRecord {
    endpoint: Arc<Endpoint>,
    /// When the call reached the proxy (for the duration histogram).
    accepted_at: u64,
    /// When the request went to the endpoint (for the latency estimate).
    dispatched_at: u64,
    rtt_sampled: bool,
    status: Option<Code>,
    /// The endpoint or its connection failed the call (counts for ejection).
    upstream_failed: bool,
    /// The request never reached the endpoint: only the in-flight count.
    unsent: bool,
}

impl CallRecord {
    /// Starts accounting; the endpoint's in-flight count rises until drop.
    pub fn start(endpoint: Arc<Endpoint>, accepted_at: u64) -> Self {
        endpoint.call_started();
        CallRecord {
            endpoint,
            accepted_at,
            dispatched_at: now_nanos(),
            rtt_sampled: false,
            status: None,
            upstream_failed: false,
            unsent: false,
        }
    }

    /// First response DATA frame (or a trailers-only end): the latency sample
    /// of peak-EWMA, so long streams do not look like permanent load.
    pub fn first_response(&mut self) {
        if !self.rtt_sampled {
            self.rtt_sampled = true;
            self.endpoint
                .observe_rtt(now_nanos().saturating_sub(self.dispatched_at));
        }
    }

    pub fn set_status(&mut self, status: Code) {
        self.status = Some(status);
    }

    /// Ends the record of an attempt that never reached the endpoint.
    pub fn not_sent(mut self) {
        self.unsent = true;
    }

    pub fn upstream_failed(&mut self, status: Code) {
        self.upstream_failed = true;
        self.status = Some(status);
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        let ep = &self.endpoint;
        ep.call_ended();
        if self.unsent {
            return;
        }
        // No status and no end: the caller went away (reset or deadline).
        let status = self.status.unwrap_or(Code::CANCELLED);
        ep.counters.inc(status);
        ep.subset
            .duration
            .observe_nanos(now_nanos().saturating_sub(self.accepted_at));
        if self.upstream_failed || status == Code::UNAVAILABLE {
            ep.record_failure();
        } else if status != Code::CANCELLED {
            ep.record_success();
        }
    }
}

impl CallObserver for CallRecord {
    fn first_response(&mut self) {
        CallRecord::first_response(self);
    }

    fn status(&self) -> Option<Code> {
        self.status
    }

    fn set_status(&mut self, status: Code) {
        CallRecord::set_status(self, status);
    }

    fn upstream_failed(&mut self, status: Code) {
        CallRecord::upstream_failed(self, status);
    }

    fn peer(&self) -> SocketAddr {
        self.endpoint.addr
    }
}
