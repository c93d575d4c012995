//! Keeps the operator's top-level modules in one order: a module may use only
//! modules declared before it in [`LAYERS`], so an import cycle (or a module
//! reaching up) fails this test instead of rotting unseen. Every source file
//! must also open with a `//!` comment saying its job. The reading is
//! `grpc_balancer_layering::check`'s; the order is this file's.

/// Top-level modules, lowest first: leaves (names, metrics, errors, the
/// back-off), kube-runtime helpers, the Lease, settings, decoding and the
/// pure rendering; then the shared context, the two loops that write
/// (controller and ConfigMap renderer), and what starts them.
const LAYERS: &[&str] = &[
    "telemetry",
    "names",
    "metrics",
    "error",
    "backoff",
    "kube_util",
    "leader",
    "settings",
    "decode",
    "render",
    "context",
    "controller",
    "config_map",
    "discovery",
    "http",
    "runtime",
    "with_webhook",
];

#[test]
fn modules_use_only_earlier_layers_and_say_their_job() {
    grpc_balancer_layering::assert_layers(env!("CARGO_MANIFEST_DIR"), LAYERS);
}
