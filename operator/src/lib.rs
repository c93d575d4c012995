//! The grpc-balancer operator: reconciles `GrpcBalancing` resources into
//! headless Services, the namespace's proxy ConfigMap and status.
//!
//! [`run`] is the whole operator minus the webhook: leader election, the
//! controllers (on the leader only), metrics and health probes. The binary
//! and the integration tests both drive it.
//!
//! The modules form layers, each using only those before it (a test in
//! `layering.rs` holds them to it):
//!
//! - leaves: `telemetry`, `names`, `metrics`, `error`, `backoff`;
//! - `kube_util`: kube-runtime helpers that know nothing of balancings;
//! - `leader` (the Lease), `settings`, `decode` (balancings one at a time),
//!   `render` (pure: specs and stores in, desired objects out);
//! - `context`: the stores and the queries on them;
//! - `controller` (the reconcile of one balancing) and `config_map` (the
//!   renderer of one namespace's ConfigMap), `discovery` (the push discovery
//!   server every replica runs, with watches of its own);
//! - `http` (metrics and probes), `runtime` (starts and wires it all),
//!   `with_webhook` (the operator and the webhook in one process).
//!
//! Modules are crate-private unless something outside uses them: the binary
//! ([`with_webhook`], [`telemetry`], [`OperatorArgs`]), the tests ([`run`]
//! with its [`Settings`], [`api_resource`], `render::fixtures` with the
//! `test-util` feature) and the demo's dashboard ([`metrics`], its names and
//! labels). `render` is public as the pure core: specs in, objects out.

pub(crate) mod backoff;
pub(crate) mod config_map;
pub(crate) mod context;
pub(crate) mod controller;
pub(crate) mod decode;
pub mod discovery;
pub(crate) mod error;
pub(crate) mod http;
pub(crate) mod kube_util;
pub(crate) mod leader;
pub mod metrics;
pub(crate) mod names;
pub mod render;
pub(crate) mod runtime;
pub(crate) mod settings;
pub mod telemetry;
pub mod with_webhook;

#[cfg(test)]
mod layering;

pub use decode::api_resource;
pub use error::{Error, Result};
pub use leader::LeaderSettings;
pub use runtime::run;
pub use settings::{DiscoverySettings, FeedSettings, OperatorArgs, Settings};

use crate::metrics::{ApiRequestCounter, CountApiRequests};

/// A client whose requests are counted by `counter`.
pub fn client_with_counter(
    config: kube::Config,
    counter: &ApiRequestCounter,
) -> Result<kube::Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&CountApiRequests(counter.clone()))
        .build())
}
