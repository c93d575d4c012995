//! Names shared by the operator, the webhook and the chart: pod annotations,
//! labels and the injected container. Plain constants, no dependencies, so
//! every crate (including the kube-free proxy) can use them.

/// Pod annotation that asks the webhook for the sidecar: value `"true"`.
pub const INJECT: &str = "grpcbalancer.io/sidecar.inject";
/// Pod annotation the webhook sets on every pod it injected; the value is
/// the proxy version. The operator's metadata-only pod watch cannot see
/// containers, so this is how it tells injected pods from the others.
pub const INJECTED: &str = "grpcbalancer.io/injected";
/// Pod annotation the webhook sets on every pod it injected: the names of
/// the `GrpcBalancing`s whose `GRPC_BALANCER_<NAME>_ADDR` env vars the pod's
/// containers got, comma-separated. A balancing missing from it was not
/// rendered when the pod was created; the operator lists such pods in the
/// balancing's status (`podsWithoutBalancing`) so they can be restarted.
pub const BALANCINGS: &str = "grpcbalancer.io/balancings";
/// Pod annotation: `"false"` keeps the webhook from mapping the names of
/// the Services that balancings name (`spec.service`) to the proxy in the
/// pod's `/etc/hosts`; the pod then dials those Services as before,
/// unbalanced, and reaches the balancings through their env vars only.
pub const SERVICE_ALIASES: &str = "grpcbalancer.io/service.aliases";
/// Name of the injected proxy container.
pub const PROXY_CONTAINER_NAME: &str = "grpc-balancer-proxy";

/// Label on every object the operator creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "grpc-balancer";
/// Label on the headless Services (and, copied by the EndpointSlice
/// controller, on their EndpointSlices) naming the `GrpcBalancing` they serve.
pub const BALANCING_LABEL: &str = "grpcbalancer.io/balancing";
/// Label on the headless Services naming the subset they select.
pub const SUBSET_LABEL: &str = "grpcbalancer.io/subset";
