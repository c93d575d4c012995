//! Installing a CustomResourceDefinition the way a user would, and waiting
//! until the apiserver serves it.

use std::time::Duration;

use anyhow::Context;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};

use crate::poll::try_poll_until;

/// Server-side applies `crd` with `field_manager` and waits (up to
/// `timeout`) for its `Established` condition. Returns the CRD's name.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    field_manager: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let name = crd.metadata.name.clone().context("the CRD has no name")?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(field_manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    try_poll_until(timeout, || async {
        let established = api
            .get(&name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            Ok(())
        } else {
            Err(anyhow::anyhow!("CRD {name} is not Established yet"))
        }
    })
    .await?;
    Ok(name)
}
