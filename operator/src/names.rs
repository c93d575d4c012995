//! Names and labels of the objects the operator writes.

use std::collections::BTreeMap;

use grpc_balancer_crds::annotations::{
    BALANCING_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SUBSET_LABEL,
};

/// The one server-side apply field manager of the operator.
pub const FIELD_MANAGER: &str = "grpc-balancer-operator";

/// Name the operator reports events as.
pub const CONTROLLER_NAME: &str = "grpc-balancer-operator";

/// Proxy-config subset name used when a balancing has no subsets.
pub const DEFAULT_SUBSET: &str = "default";

/// Name of the Service port; EndpointSlices carry the resolved number under it.
pub const SERVICE_PORT_NAME: &str = "grpc";

/// The headless Service of one subset: `grpcb-<balancing>[-<subset>]`. The
/// prefix keeps it apart from the users' own Services (a `greeter`
/// balancing next to a `greeter` Service is the common case) and makes it a
/// valid DNS-1035 label; the CRD bounds both names so it fits 63 characters.
pub fn service_name(balancing: &str, subset: Option<&str>) -> String {
    match subset {
        Some(subset) => format!("grpcb-{balancing}-{subset}"),
        None => format!("grpcb-{balancing}"),
    }
}

/// Labels of a headless Service (copied by the EndpointSlice controller onto
/// its EndpointSlices, which is how slices map back to their balancing).
pub fn service_labels(balancing: &str, subset: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned()),
        (BALANCING_LABEL.to_owned(), balancing.to_owned()),
        (SUBSET_LABEL.to_owned(), subset.to_owned()),
    ])
}

/// Label selector of everything the operator manages.
pub fn managed_by_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}")
}
