//! Pod annotations the webhook reads and writes. All live under the project's
//! `grpcbalancer.io/` prefix, except the Prometheus scrape hints, which follow the
//! convention scrapers already look for.

/// `"true"` asks for the proxy; any other value (or none) leaves the pod alone.
pub const INJECT: &str = grpc_balancer_crds::annotations::INJECT;
/// The value of [`INJECT`] that asks for injection.
pub const INJECT_ENABLED: &str = "true";

/// Set on every pod the webhook mutated; the value is the injected proxy's
/// image tag (or digest). The operator's status lists pods that carry
/// [`INJECT`] but not this annotation: they run without the proxy.
pub const INJECTED: &str = grpc_balancer_crds::annotations::INJECTED;
/// Set on injection: the balancings whose env vars the pod got.
pub const BALANCINGS: &str = grpc_balancer_crds::annotations::BALANCINGS;

/// `"false"` opts the pod out of the host aliases of `spec.service`.
pub const SERVICE_ALIASES: &str = grpc_balancer_crds::annotations::SERVICE_ALIASES;
/// The value of [`SERVICE_ALIASES`] that opts out.
pub const SERVICE_ALIASES_DISABLED: &str = "false";

/// Per-pod overrides, each bounded by the webhook's settings.
pub const PROXY_CPU_REQUEST: &str = "grpcbalancer.io/proxy-cpu-request";
pub const PROXY_CPU_LIMIT: &str = "grpcbalancer.io/proxy-cpu-limit";
pub const PROXY_MEMORY_REQUEST: &str = "grpcbalancer.io/proxy-memory-request";
pub const PROXY_MEMORY_LIMIT: &str = "grpcbalancer.io/proxy-memory-limit";
/// One of `trace`, `debug`, `info`, `warn`, `error`.
pub const LOG_LEVEL: &str = "grpcbalancer.io/log-level";
/// How the proxy follows endpoints and config: `push` (the operator's
/// discovery stream, with the ConfigMap and DNS as fallback; the default when
/// the operator serves discovery) or `dns` (the ConfigMap and DNS alone).
pub const DISCOVERY: &str = "grpcbalancer.io/discovery";
/// Honoured only when the settings allow image overrides.
pub const PROXY_IMAGE: &str = "grpcbalancer.io/proxy-image";

/// Prometheus scrape hints, set only when the pod has none of them: a pod that
/// already sets any of them is scraped for its own metrics, and pointing one of
/// them at the proxy would silently break that.
pub const PROMETHEUS_SCRAPE: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH: &str = "prometheus.io/path";
