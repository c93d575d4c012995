//! Per-pod `grpcbalancer.io/` annotations that adjust the proxy, each checked
//! against the bounds of the settings. A value out of bounds refuses the pod
//! with a message naming the annotation, rather than quietly running a proxy
//! the pod's owner did not ask for.

use std::collections::BTreeMap;

use crate::InjectError;
use crate::annotations;
use crate::quantity::Quantity;
use crate::settings::{LogLevel, ProxyResources, ProxySettings};

/// The proxy's image, resources and log level for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveProxy<'a> {
    pub image: &'a str,
    pub resources: ProxyResources,
    pub log_level: LogLevel,
    /// `false`: the pod asked for the ConfigMap and DNS alone, without the
    /// operator's push discovery.
    pub push_discovery: bool,
}

pub fn effective_proxy<'a>(
    settings: &'a ProxySettings,
    pod_annotations: &'a BTreeMap<String, String>,
) -> Result<EffectiveProxy<'a>, InjectError> {
    let image = match pod_annotations.get(annotations::PROXY_IMAGE) {
        None => settings.image.as_str(),
        Some(_) if !settings.allow_image_override => {
            return Err(InjectError::ImageOverrideNotAllowed);
        }
        Some(image) if image.trim().is_empty() || image.chars().any(char::is_whitespace) => {
            return Err(invalid(
                annotations::PROXY_IMAGE,
                image,
                "not an image name",
            ));
        }
        Some(image) => image.as_str(),
    };

    let defaults = &settings.resources;
    let cpu_request = bounded(
        pod_annotations,
        annotations::PROXY_CPU_REQUEST,
        &settings.max_cpu,
        &defaults.cpu_request,
    )?;
    let cpu_limit = bounded(
        pod_annotations,
        annotations::PROXY_CPU_LIMIT,
        &settings.max_cpu,
        &defaults.cpu_limit,
    )?;
    let memory_request = bounded(
        pod_annotations,
        annotations::PROXY_MEMORY_REQUEST,
        &settings.max_memory,
        &defaults.memory_request,
    )?;
    let memory_limit = bounded(
        pod_annotations,
        annotations::PROXY_MEMORY_LIMIT,
        &settings.max_memory,
        &defaults.memory_limit,
    )?;
    request_within_limit(&cpu_request, &cpu_limit, "CPU")?;
    request_within_limit(&memory_request, &memory_limit, "memory")?;

    let log_level = match pod_annotations.get(annotations::LOG_LEVEL) {
        None => settings.log_level,
        Some(level) => level
            .parse()
            .map_err(|why: String| invalid(annotations::LOG_LEVEL, level, &why))?,
    };

    let push_discovery = match pod_annotations
        .get(annotations::DISCOVERY)
        .map(String::as_str)
    {
        None | Some("push") => true,
        Some("dns") => false,
        Some(other) => {
            return Err(invalid(
                annotations::DISCOVERY,
                other,
                "expected push or dns",
            ));
        }
    };

    Ok(EffectiveProxy {
        image,
        resources: ProxyResources {
            cpu_request,
            cpu_limit,
            memory_request,
            memory_limit,
        },
        log_level,
        push_discovery,
    })
}

fn bounded(
    pod_annotations: &BTreeMap<String, String>,
    key: &'static str,
    max: &Quantity,
    default: &Option<Quantity>,
) -> Result<Option<Quantity>, InjectError> {
    let Some(text) = pod_annotations.get(key) else {
        return Ok(default.clone());
    };
    let quantity: Quantity = text
        .parse()
        .map_err(|e: crate::quantity::QuantityError| invalid(key, text, &e.to_string()))?;
    if quantity.value() > max.value() {
        return Err(invalid(
            key,
            text,
            &format!("above the maximum of {max} the webhook allows"),
        ));
    }
    Ok(Some(quantity))
}

fn request_within_limit(
    request: &Option<Quantity>,
    limit: &Option<Quantity>,
    resource: &'static str,
) -> Result<(), InjectError> {
    match (request, limit) {
        (Some(request), Some(limit)) if request.value() > limit.value() => {
            Err(InjectError::RequestAboveLimit {
                resource,
                request: request.to_string(),
                limit: limit.to_string(),
            })
        }
        _ => Ok(()),
    }
}

fn invalid(annotation: &'static str, value: &str, why: &str) -> InjectError {
    InjectError::InvalidAnnotation {
        annotation,
        value: value.to_owned(),
        why: why.to_owned(),
    }
}
