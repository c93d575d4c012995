//! The MutatingWebhookConfiguration: created whole in local mode (`url`
//! clientConfig), only its `caBundle` kept current in-cluster (the chart
//! creates it with a `service` clientConfig).

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::args::FailurePolicy;

/// Name of the webhook inside the configuration.
pub const WEBHOOK_NAME: &str = "inject.grpcbalancer.io";
/// Field manager of the server-side apply in local mode.
pub const FIELD_MANAGER: &str = "grpc-balancer-webhook";
/// The chart's list of namespaces never sent to the webhook (the chart adds
/// its release namespace). One file for both, so they cannot drift.
const EXCLUDED_NAMESPACES_FILE: &str =
    include_str!("../../charts/grpc-balancer/files/excluded-namespaces.txt");

/// Namespaces never sent to the webhook: the cluster's own pods must start
/// even when the webhook cannot.
pub fn excluded_namespaces() -> Vec<&'static str> {
    EXCLUDED_NAMESPACES_FILE
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// What local mode registers.
#[derive(Debug, Clone)]
pub struct LocalRegistration {
    pub configuration_name: String,
    pub url: String,
    pub failure_policy: FailurePolicy,
    pub timeout_seconds: i32,
    /// Only namespaces with this label, when set.
    pub namespace_label: Option<(String, String)>,
}

impl LocalRegistration {
    pub fn configuration(&self, ca_bundle: &str) -> MutatingWebhookConfiguration {
        let mut mwc = MutatingWebhookConfiguration::default();
        mwc.metadata.name = Some(self.configuration_name.clone());
        mwc.metadata.labels = Some(
            [(
                grpc_balancer_crds::annotations::MANAGED_BY_LABEL.to_owned(),
                grpc_balancer_crds::annotations::MANAGED_BY_VALUE.to_owned(),
            )]
            .into(),
        );
        mwc.webhooks = Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                url: Some(self.url.clone()),
                ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
                service: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            failure_policy: Some(self.failure_policy.as_str().to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(
                        excluded_namespaces()
                            .into_iter()
                            .map(str::to_owned)
                            .collect(),
                    ),
                }]),
                match_labels: self
                    .namespace_label
                    .clone()
                    .map(|(key, value)| [(key, value)].into()),
            }),
            // A later webhook may add containers; being called again lets the
            // proxy's env reach them, and the already-injected check keeps it
            // from being added twice.
            reinvocation_policy: Some("IfNeeded".to_owned()),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(self.timeout_seconds),
            match_conditions: None,
            object_selector: None,
        }]);
        mwc
    }

    /// Creates or updates the configuration (server-side apply).
    pub async fn apply(
        &self,
        api: &Api<MutatingWebhookConfiguration>,
        ca_bundle: &str,
    ) -> Result<(), kube::Error> {
        let mut mwc = self.configuration(ca_bundle);
        mwc.metadata.managed_fields = None;
        let body = serde_json::to_value(&mwc).map_err(kube::Error::SerdeError)?;
        let mut body = body;
        body["apiVersion"] = json!("admissionregistration.k8s.io/v1");
        body["kind"] = json!("MutatingWebhookConfiguration");
        api.patch(
            &self.configuration_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
        Ok(())
    }
}

/// Sets `caBundle` on every webhook of the configuration `name` that does
/// not have it yet. Returns whether anything changed; a missing configuration
/// is not an error (the chart may not have created it yet) but is reported.
pub async fn ensure_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_bundle: &str,
) -> Result<CaBundleOutcome, kube::Error> {
    let Some(mwc) = api.get_opt(name).await? else {
        return Ok(CaBundleOutcome::NoConfiguration);
    };
    let wanted = ca_bundle.as_bytes();
    let stale: Vec<&str> = mwc
        .webhooks
        .iter()
        .flatten()
        .filter(|w| w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(wanted))
        .map(|w| w.name.as_str())
        .collect();
    if stale.is_empty() {
        return Ok(CaBundleOutcome::Unchanged);
    }
    // `webhooks` merges by `name` in a strategic merge patch, so only the
    // caBundle of each listed webhook changes.
    let encoded =
        serde_json::to_value(ByteString(wanted.to_vec())).map_err(kube::Error::SerdeError)?;
    let webhooks: Vec<_> = stale
        .iter()
        .map(|name| json!({ "name": name, "clientConfig": { "caBundle": encoded } }))
        .collect();
    let patch = json!({ "webhooks": webhooks });
    api.patch(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?;
    Ok(CaBundleOutcome::Updated(stale.len()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaBundleOutcome {
    NoConfiguration,
    Unchanged,
    Updated(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_namespaces_are_excluded() {
        assert_eq!(
            excluded_namespaces(),
            ["kube-system", "kube-public", "kube-node-lease"]
        );
        let local = LocalRegistration {
            configuration_name: "x".into(),
            url: "https://127.0.0.1:9443/mutate".into(),
            failure_policy: FailurePolicy::Ignore,
            timeout_seconds: 5,
            namespace_label: None,
        };
        let mwc = local.configuration("");
        let selector = mwc
            .webhooks
            .as_ref()
            .and_then(|w| w[0].namespace_selector.clone());
        let values = selector
            .and_then(|s| s.match_expressions)
            .and_then(|e| e[0].values.clone());
        assert_eq!(
            values,
            Some(
                excluded_namespaces()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            )
        );
    }
}
