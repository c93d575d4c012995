//! Keeps the proxy's top-level modules in one order: a module may use only
//! modules declared before it in [`LAYERS`], so an import cycle (or a module
//! reaching up) fails this test instead of rotting unseen. Every source file
//! must also open with a `//!` comment saying its job. The reading is
//! `grpc_balancer_layering::check`'s; the order is this file's.

/// Top-level modules, lowest first. Leaves (helpers, status codes,
/// metrics, discovery sources) come first; then the data path from the
/// wire up: transport, endpoint, resilience, policy, balancer, call; then
/// the admin server, the app that wires everything, and the command line.
const LAYERS: &[&str] = &[
    "util",
    "net",
    "telemetry",
    "grpc_status",
    "metrics",
    "discovery",
    "config_watch",
    "lifecycle_hooks",
    "error",
    "transport",
    "endpoint",
    "resilience",
    "policy",
    "balancer",
    "call",
    "admin",
    "app",
    "cli",
];

#[test]
fn modules_use_only_earlier_layers_and_say_their_job() {
    grpc_balancer_layering::assert_layers(env!("CARGO_MANIFEST_DIR"), LAYERS);
}
