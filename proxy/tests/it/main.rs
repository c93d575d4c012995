//! The proxy's integration tests, one module per area, linked as one binary.
//!
//! Most tests start the real proxy in-process against real greeter backends
//! (see [`support`]); a few spawn the built binary to see what only a
//! process shows (signals, exit codes, the command line).

mod dns;
mod h2_frames;
mod hostile_backend;
mod support;

mod admin_access;
mod cancellation;
mod classic;
mod data_path;
mod discovery;
mod h2_attacks;
mod hooks;
mod interop;
mod ipv6;
mod keepalive;
mod lifecycle;
mod listeners;
mod memcopy;
mod metrics_docs;
mod policies;
mod push;
mod queue;
mod resilience;
mod retries;
mod runtime_tasks;
mod service_names;
mod sigterm;
mod subsets;
