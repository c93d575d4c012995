//! Schemas of the config types the CRD reuses ([`Duration`], [`PolicyKind`]):
//! they are serde-only (the proxy links no schemars), so their `JsonSchema` lives here,
//! behind the `kube` feature.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::config::{Duration, PolicyKind};

/// Go-style durations, which is also what CEL's `duration()` accepts, so
/// rules can compare them.
pub(crate) const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$";

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
        })
    }
}

impl JsonSchema for PolicyKind {
    fn schema_name() -> Cow<'static, str> {
        "PolicyKind".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.as_str()).collect();
        json_schema!({ "type": "string", "enum": names })
    }
}
