//! A greeter gRPC service that says which backend answered, and a load client
//! that counts where its calls landed.
//!
//! The server is a real tonic service with `grpc.health.v1`, failure injection
//! (a status to answer, a delay, a connection closed mid-call, GOAWAY through a
//! maximum connection age or a graceful shutdown) and metadata echo. Tests drive
//! it in-process through [`spawn_server`]; the `greeter-server` and
//! `greeter-client` binaries serve the demo and the benchmark.

pub mod client;
pub mod codes;
pub mod server;
pub mod stream_bench;
pub mod timeline;

/// Types and stubs generated from `proto/greeter.proto`.
pub mod pb {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("greeter.v1");
}

pub use client::{LoadOptions, LoadReport, Mode, connect, run_load};
pub use server::{
    BackendError, BackendOptions, CallCounts, Faults, RunningBackend, serve_listener, spawn_server,
};

/// Request metadata a caller sets to inject a fault into one call.
pub mod fault_headers {
    /// gRPC status code (number) the backend answers with.
    pub const FAIL_CODE: &str = "x-greeter-fail-code";
    /// Message for the status of [`FAIL_CODE`].
    pub const FAIL_MESSAGE: &str = "x-greeter-fail-message";
    /// Milliseconds the backend waits before its first reply.
    pub const DELAY_MS: &str = "x-greeter-delay-ms";
    /// Milliseconds between stream replies.
    pub const INTERVAL_MS: &str = "x-greeter-interval-ms";
    /// The backend closes the TCP connection after this many replies of the call
    /// (0: before answering at all).
    pub const CLOSE_AFTER: &str = "x-greeter-close-after";
}

/// Prefix of the response trailers that echo request metadata.
pub const ECHO_TRAILER_PREFIX: &str = "trailer-";
