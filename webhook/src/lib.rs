//! The mutating admission webhook that injects `grpc-balancer-proxy` into pods
//! annotated `grpcbalancer.io/sidecar.inject: "true"`.
//!
//! - [`mutate()`]: the pure injection (Pod → JSON Patch);
//! - [`run`]: the HTTPS server, its certificate, the cache of proxy configs and,
//!   in local mode, the registration of the MutatingWebhookConfiguration.
//!
//! Modules are crate-private unless something outside uses them: the
//! operator, which serves this webhook (`certs`, `cert_files`,
//! `cert_secret`, `server`, `tls`, `http`, `review`, `proxy_configs`,
//! `sidecar`), the tests and the fuzz targets (`annotations`, `review`).

pub mod annotations;
mod args;
pub(crate) mod balancings;
pub mod cert_files;
pub mod cert_secret;
pub mod certs;
pub mod http;
pub(crate) mod metrics;
mod mutate;
mod overrides;
pub mod proxy_configs;
pub(crate) mod quantity;
pub(crate) mod registration;
pub mod review;
mod run;
pub mod server;
pub(crate) mod serving;
pub(crate) mod settings;
pub mod sidecar;
#[cfg(feature = "test-util")]
pub mod test_util;
pub mod tls;

pub use args::{
    Args, CertSource, DEFAULT_PROXY_IMAGE, FailurePolicy, SidecarModeArg, StandaloneArgs,
};
pub use balancings::{HostAliases, LocalBalancing};
pub use metrics::{Outcome, WebhookMetrics};
pub use mutate::{
    InjectError, InjectionContext, already_injected, injected_version, mutate, wants_injection,
};
pub use serving::Serving;
pub use settings::{LogLevel, ProxyResources, ProxySettings, SidecarMode};

pub use run::{run, run_on, sidecar_mode};
